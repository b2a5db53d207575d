//! Fairness: shares follow weights. (A newcomer served within two ticks behind a huge
//! campaign is timed, so it runs alone: `tests/tests/exclusive/newcomer.rs`.)

use herald_tests::{Result, TestEnv, numbers};
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;

const TICK_MS: u64 = 1000;

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
