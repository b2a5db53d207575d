//! The benchmark driver's measurement of RabbitMQ alone (`herald-demo broker`), which
//! `bench/run.sh` puts beside Herald's rate.

use herald_tests::{Result, TestEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_alone_carries_every_message_and_leaves_no_lane_behind() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let amqp = [("HERALD_AMQP_URL", env.amqp_url.as_str())];
    let out = env.run_binary(
        "herald-demo",
        &[
            "broker",
            "--messages",
            "3000",
            "--window",
            "100",
            "--prefetch",
            "50",
        ],
        &amqp,
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "… in 0.3 s: 9876 msg/s"
    let rate: f64 = stdout
        .lines()
        .find(|line| line.contains("RabbitMQ alone: 3000 messages of "))
        .and_then(|line| line.strip_suffix(" msg/s"))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|rate| rate.parse().ok())
        .unwrap_or_else(|| panic!("no rate in {stdout}"));
    assert!(rate > 0.0, "{stdout}");
    assert!(stdout.contains("CPU: client "), "{stdout}");
    // Its lane is deleted once measured: nothing of it is left in the vhost.
    let queues = env.queue_depths().await?;
    assert!(
        !queues.keys().any(|q| q.starts_with("herald.dispatch.")),
        "{queues:?}"
    );

    // Cut short by its time limit (far more messages than a second carries): it fails,
    // naming the limit, and still leaves no lane with its messages behind.
    let cut = env.run_binary(
        "herald-demo",
        &["broker", "--messages", "1000000", "--timeout-secs", "1"],
        &amqp,
    )?;
    let stderr = String::from_utf8_lossy(&cut.stderr);
    assert!(!cut.status.success());
    assert!(stderr.contains("within 1s"), "{stderr}");
    let queues = env.queue_depths().await?;
    assert!(
        !queues.keys().any(|q| q.starts_with("herald.dispatch.")),
        "{queues:?}"
    );

    let refused = env.run_binary("herald-demo", &["broker", "--messages", "0"], &amqp)?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("--messages"), "{stderr}");
    Ok(())
}
