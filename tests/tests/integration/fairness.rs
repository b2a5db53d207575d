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

/// Far more campaigns than a pass's budget (60 campaigns, 30 recipients a pass): instead of
/// one recipient from half of them each pass, campaigns take turns at full batches (the
/// minimum batch, 10 by default), and every one of them finishes, each recipient sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_campaigns_take_turns_at_full_batches() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let mut campaigns = Vec::new();
    for t in 0..6 {
        let tenant = env.tenant(&format!("t{t}"), 1).await?;
        for c in 0..10 {
            let addresses = numbers(&format!("+1556{t}{c}"), 20);
            campaigns.push(
                env.campaign(tenant, provider, &format!("t{t}c{c}"), &addresses, 2_000)
                    .await?,
            );
        }
    }
    let scheduler = env.scheduler(
        200,
        &[
            ("HERALD_SCHEDULER_MIN_BUDGET", "30"),
            ("HERALD_SCHEDULER_MAX_BUDGET", "30"),
        ],
    )?;
    let _worker = env.worker(&[])?;
    for &campaign in &campaigns {
        env.start(campaign).await?;
    }
    env.wait_completed(&campaigns, Duration::from_secs(90))
        .await?;
    let stats = env.simulator_stats().await?;
    assert_eq!(stats["requests"], 1_200, "{stats}");
    assert_eq!(stats["duplicates"], 0, "{stats}");
    let metrics = env.scrape(&scheduler).await?;
    let batch = |part: &str| {
        herald_tests::metric_sum(
            &metrics,
            &format!("herald_scheduler_batch_size_recipients_{part}"),
            &[],
        )
        .unwrap_or(0.0)
    };
    let (recipients, claims) = (batch("sum"), batch("count"));
    assert_eq!(recipients, 1_200.0, "every recipient claimed once");
    // Shares of half a recipient each would be claimed one recipient at a time (a mean of
    // 1). Turns claim batches of ten, but a top-up's remainder, or what standings leave of a
    // pass handed to whoever has more due, makes a smaller claim now and then.
    let mean = recipients / claims;
    assert!(
        mean >= 5.0,
        "{claims} claims of a campaign's batch, {mean:.1} recipients each"
    );
    Ok(())
}

/// Thirty tenants' campaigns failing over (their primary's breaker open) to an overflow
/// lane of ten a pass take turns there, as in a primary lane: every one of them is served
/// within the first sixty sends. Planned by whole shares, the overflow served a block of
/// ten tenants that moved one place a tick (with a thousand tenants over passes of 200, the
/// last was first served 27 minutes into the outage).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaigns_failing_over_take_turns_in_the_overflow_lane() -> Result<()> {
    const TENANTS: usize = 30;
    let env = TestEnv::new(&["--latency", "fixed:0"]).await?;
    let mut down = env.provider();
    down.name = "down".into();
    let primary = env.create_provider(&down).await?;
    let overflow = env.create_provider(&env.provider()).await?;
    let mut campaigns = Vec::new();
    for t in 0..TENANTS {
        let tenant = env.tenant(&format!("tenant-{t}"), 1).await?;
        let prefix = format!("+1555{:03}", 600 + t);
        campaigns.push(
            env.campaign(tenant, primary, "failover", &numbers(&prefix, 20), 100)
                .await?,
        );
    }
    sqlx::query("UPDATE campaigns SET overflow_provider_id = $1")
        .bind(overflow)
        .execute(&env.pool)
        .await?;
    // The fleet's breaker for the primary, open for longer than the test.
    sqlx::query("INSERT INTO provider_pacing (provider_id, open_until) VALUES ($1, now() + interval '1 hour')")
        .bind(primary)
        .execute(&env.pool)
        .await?;
    // Passes of ten, a recipient at a time, and ticks rare enough that a plan by whole
    // shares would keep its block for the whole run.
    let _scheduler = env.scheduler(
        10_000,
        &[
            ("HERALD_SCHEDULER_MIN_BUDGET", "10"),
            ("HERALD_SCHEDULER_MAX_BUDGET", "10"),
            ("HERALD_SCHEDULER_MIN_BATCH", "1"),
        ],
    )?;
    let _worker = env.worker(&[])?;
    for &campaign in &campaigns {
        env.start(campaign).await?;
    }
    let sent = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM recipients WHERE state = 'sent'")
            .fetch_one(&env.pool)
            .await
            .unwrap_or(0)
    };
    herald_tests::wait_until(Duration::from_secs(60), || async { sent().await >= 60 })
        .await
        .map_err(|_| anyhow::anyhow!("fewer than 60 sent in 60 s"))?;
    let served: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT campaign_id) FROM (
             SELECT campaign_id FROM recipients WHERE state = 'sent' ORDER BY sent_at, id LIMIT 60) first",
    )
    .fetch_one(&env.pool)
    .await?;
    assert!(
        served >= 25,
        "{served} of {TENANTS} campaigns among the first 60 sends"
    );
    Ok(())
}
