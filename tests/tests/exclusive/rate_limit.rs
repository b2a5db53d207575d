//! Fleet-wide provider rate limits: however many workers, the provider never sees more than
//! its limit in any one-second window, and the limit is used, not wasted.

use herald_tests::{Result, TestEnv, numbers};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_stay_under_fifty_per_second_and_use_the_limit() -> Result<()> {
    let _alone = crate::ALONE.lock().await;
    let env = TestEnv::new(&["--latency", "fixed:20"]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    sqlx::query("UPDATE providers SET rate_limit = 50, rate_window_ms = 1000 WHERE id = $1")
        .bind(provider)
        .execute(&env.pool)
        .await?;
    let tenant = env.tenant("acme", 1).await?;
    // About 30 s of sending at 50 per second.
    const RECIPIENTS: usize = 1_500;
    let campaign = env
        .campaign(
            tenant,
            provider,
            "limited",
            &numbers("+1555400", RECIPIENTS),
            1_000,
        )
        .await?;
    let _scheduler = env.scheduler(1000, &[])?;
    let _workers = (0..4)
        .map(|_| env.worker(&[("HERALD_WORKER_PREFETCH", "50")]))
        .collect::<Result<Vec<_>>>()?;
    env.start(campaign).await?;
    env.wait_completed(&[campaign], Duration::from_secs(90))
        .await?;

    let stats = env.simulator_stats().await?;
    let key = campaign.to_string();
    assert_eq!(stats["per_campaign"][&key]["requests"], RECIPIENTS);
    assert_eq!(stats["duplicates"], 0);
    let seconds: Vec<u64> = stats["per_second"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s["requests"].as_u64().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default();
    eprintln!("per second: {seconds:?}");
    let busiest = crate::busiest_within(&stats, 50);
    let first = stats["per_campaign"][&key]["first_request_ms"]
        .as_f64()
        .unwrap_or(0.0);
    let last = stats["per_campaign"][&key]["last_request_ms"]
        .as_f64()
        .unwrap_or(0.0);
    let rate = (RECIPIENTS as f64 - 1.0) / ((last - first) / 1000.0);
    eprintln!("rate limit 50/s, 4 workers: busiest 1-s window {busiest}, average {rate:.1}/s");
    // Herald paces at 96.5% of the limit (shared/src/rate_limit.rs). How much of it is used
    // is a benchmark figure (bench/rate_limits.sh, recorded in BENCHMARKS.md); this floor
    // catches a limiter that wastes slots without making the suite hang on how busy the CI
    // machine is.
    assert!(
        rate >= 0.9 * 50.0,
        "only {rate:.1}/s of the 50/s limit used: {seconds:?}"
    );
    Ok(())
}
