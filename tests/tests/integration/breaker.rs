//! A provider that is down (answering 503) costs no recipient an attempt, breaker open or
//! not; the breaker leaves it alone and probes it every few seconds, and its recipients are
//! all sent soon after it is back.

use anyhow::Result;
use herald_tests::{TestEnv, numbers};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_down_for_20_s_costs_no_attempt() -> Result<()> {
    let env = TestEnv::new(&["--latency", "fixed:5"]).await?;
    let mut provider = env.provider();
    // Three attempts, close together: without a breaker, every recipient would fail within
    // a couple of seconds of the outage.
    provider.max_attempts = 3;
    provider.retry_base_ms = 200;
    provider.retry_max_ms = 1_000;
    let provider = env.create_provider(&provider).await?;
    let tenant = env.tenant("acme", 1).await?;
    let campaign = env
        .campaign(tenant, provider, "outage", &numbers("+1555400", 500), 1_000)
        .await?;
    env.simulator_config(serde_json::json!({"outage": true}))
        .await?;
    let _scheduler = env.scheduler(500, &[])?;
    let _worker = env.worker(&[])?;
    env.start(campaign).await?;

    tokio::time::sleep(Duration::from_secs(20)).await;
    let during = env.simulator_stats().await?["requests"]
        .as_u64()
        .unwrap_or(0);
    let states = env.states(campaign).await?;
    assert_eq!(
        states.get("failed"),
        None,
        "recipients failed during the outage: {states:?}"
    );
    assert_eq!(states.get("sent"), None);
    // The first few hundred in flight when it went down, then a probe per cool-down.
    assert!(
        during < 500,
        "the down provider got {during} requests in 20 s: the breaker did not hold them back"
    );
    let breaker_open: bool = sqlx::query_scalar(
        "SELECT open_until > now() - interval '1 minute' FROM provider_pacing WHERE provider_id = $1",
    )
    .bind(provider)
    .fetch_one(&env.pool)
    .await?;
    assert!(breaker_open, "the fleet was told the breaker opened");

    env.simulator_config(serde_json::json!({"outage": false}))
        .await?;
    let back = Instant::now();
    herald_tests::wait_until(Duration::from_secs(30), || async {
        env.states(campaign)
            .await
            .is_ok_and(|s| s.contains_key("sent"))
    })
    .await
    .map_err(|_| anyhow::anyhow!("nothing sent after the outage"))?;
    let recovery = back.elapsed();
    // A probe goes out every 5 s at most, and the scheduler releases at its next tick.
    assert!(
        recovery < Duration::from_secs(8),
        "first send {recovery:?} after the provider was back"
    );
    env.wait_completed(&[campaign], Duration::from_secs(120))
        .await?;
    let states = env.states(campaign).await?;
    assert_eq!(states.get("sent"), Some(&500), "{states:?}");
    assert_eq!(states.get("failed"), None, "{states:?}");
    let stats = env.simulator_stats().await?;
    assert_eq!(stats["accepted"], 500);
    assert_eq!(stats["duplicates"], 0);
    // Hundreds of 503s, and not one attempt charged for them: each recipient's counted
    // attempts are its one send.
    let charged: (i32, i32) = sqlx::query_as(
        "SELECT min(attempts - throttles), max(attempts - throttles) FROM recipients",
    )
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(charged, (1, 1), "attempts charged: {stats}");
    Ok(())
}
