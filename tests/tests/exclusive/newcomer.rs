//! A newcomer is served within two ticks behind a 100,000-recipient campaign. Timed against
//! the tick (the bound is two ticks: up to one until the next tick, up to one behind the
//! lane's depth), so it runs where nothing else competes for the machine.

use herald_tests::{Result, TestEnv, numbers};
use std::time::Duration;

const TICK_MS: u64 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_is_sent_within_two_ticks_behind_a_100k_campaign() -> Result<()> {
    let _alone = crate::ALONE.lock().await;
    // Workers are the bottleneck: 40 in flight at 400 ms each is ~100 msg/s.
    let env = TestEnv::new(&["--latency", "fixed:400"]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let (a, b) = (env.tenant("big", 1).await?, env.tenant("small", 1).await?);
    let big = env
        .campaign(a, provider, "big", &numbers("+1555500", 100_000), 5_000)
        .await?;
    let small = env
        .campaign(b, provider, "small", &numbers("+1555600", 10), 100)
        .await?;
    let _scheduler = env.scheduler(TICK_MS, &[])?;
    let _worker = env.worker(&[("HERALD_WORKER_PREFETCH", "40")])?;
    env.start(big).await?;

    // Let the big campaign saturate the worker for a few ticks (longer on a loaded machine).
    tokio::time::sleep(Duration::from_millis(6 * TICK_MS)).await;
    let running = herald_tests::wait_until(Duration::from_secs(20), || async {
        env.simulator_stats()
            .await
            .is_ok_and(|s| s["requests"].as_i64().unwrap_or(0) > 200)
    })
    .await;
    assert!(running.is_ok(), "the big campaign is not running");

    let started_ms = env.now_ms().await?;
    env.start(small).await?;
    let key = small.to_string();
    let first = herald_tests::wait_until(Duration::from_millis(10 * TICK_MS), || {
        let env = &env;
        let key = key.clone();
        async move {
            env.simulator_stats()
                .await
                .is_ok_and(|s| s["per_campaign"].get(&key).is_some())
        }
    })
    .await;
    assert!(first.is_ok(), "the newcomer was never served");
    let stats = env.simulator_stats().await?;
    let first_ms = stats["per_campaign"][&key]["first_request_ms"]
        .as_i64()
        .unwrap_or(i64::MAX);
    let waited = first_ms - started_ms;
    let backlog: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM recipients WHERE campaign_id = $1 AND state = 'pending'",
    )
    .bind(big)
    .fetch_one(&env.pool)
    .await?;
    assert!(
        backlog > 90_000,
        "the big campaign still had its backlog ({backlog})"
    );
    eprintln!("NEWCOMER first send {waited} ms after its start (tick {TICK_MS} ms)");
    assert!(
        waited <= 2 * TICK_MS as i64,
        "newcomer's first send came {waited} ms after its start (tick {TICK_MS} ms)"
    );
    Ok(())
}
