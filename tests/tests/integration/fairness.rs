//! Fairness: a newcomer is served within two ticks behind a huge campaign; shares follow weights.

use herald_tests::{Result, TestEnv, numbers};
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;

const TICK_MS: u64 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_is_sent_within_two_ticks_behind_a_100k_campaign() -> Result<()> {
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
    assert!(
        waited <= 2 * TICK_MS as i64,
        "newcomer's first send came {waited} ms after its start (tick {TICK_MS} ms)"
    );
    Ok(())
}

/// Requests per tenant seen by the simulator.
fn per_tenant(stats: &Value, tenant: Uuid) -> i64 {
    stats["per_tenant"][tenant.to_string()]["requests"]
        .as_i64()
        .unwrap_or(0)
}

async fn shares(weights: (i32, i32)) -> Result<f64> {
    let env = TestEnv::new(&["--latency", "fixed:200"]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let (a, b) = (
        env.tenant("a", weights.0).await?,
        env.tenant("b", weights.1).await?,
    );
    // Tenant a splits its work over three campaigns; it still gets one tenant's share.
    let mut campaigns = Vec::new();
    for i in 0..3 {
        campaigns.push(
            env.campaign(
                a,
                provider,
                &format!("a{i}"),
                &numbers(&format!("+155570{i}"), 3_000),
                2_000,
            )
            .await?,
        );
    }
    campaigns.push(
        env.campaign(b, provider, "b", &numbers("+1555800", 9_000), 2_000)
            .await?,
    );
    let _scheduler = env.scheduler(TICK_MS, &[])?;
    let _worker = env.worker(&[("HERALD_WORKER_PREFETCH", "60")])?;
    for &campaign in &campaigns {
        env.start(campaign).await?;
    }
    // Skip the ramp-up, then measure a window in which both tenants have plenty of work.
    tokio::time::sleep(Duration::from_millis(4 * TICK_MS)).await;
    let before = env.simulator_stats().await?;
    tokio::time::sleep(Duration::from_millis(8 * TICK_MS)).await;
    let after = env.simulator_stats().await?;
    let share_a = per_tenant(&after, a) - per_tenant(&before, a);
    let share_b = per_tenant(&after, b) - per_tenant(&before, b);
    assert!(
        share_a > 300 && share_b > 300,
        "both tenants progressed ({share_a}, {share_b})"
    );
    let pending: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT c.tenant_id) FROM recipients r JOIN campaigns c ON c.id = r.campaign_id WHERE r.state = 'pending'",
    )
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(
        pending, 2,
        "both tenants still had work at the end of the window"
    );
    Ok(share_b as f64 / share_a as f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_weights_get_equal_shares() -> Result<()> {
    let ratio = shares((1, 1)).await?;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "share ratio {ratio:.3} (expected 1 ± 10%)"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_two_gets_twice_the_share() -> Result<()> {
    let ratio = shares((1, 2)).await?;
    assert!(
        (1.8..=2.2).contains(&ratio),
        "share ratio {ratio:.3} (expected 2 ± 10%)"
    );
    Ok(())
}
