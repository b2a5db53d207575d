//! Provider isolation: each provider has its own lane, consumed with its own prefetch (the
//! workers' share of its fleet-wide in-flight cap), so a slow provider never holds the
//! deliveries another provider's campaign needs.

use anyhow::Result;
use herald_store::catalog::NewProvider;
use herald_tests::{TestEnv, numbers};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_provider_neither_slows_another_nor_exceeds_its_fleet_wide_cap() -> Result<()> {
    let mut env = TestEnv::new(&["--latency", "fixed:20"]).await?;
    let slow_url = env.extra_simulator(&["--latency", "fixed:2000"]).await?;
    let fast = env.create_provider(&env.provider()).await?;
    let mut slow = NewProvider::http("slow", &format!("{slow_url}/v1/messages"));
    slow.max_in_flight = 20;
    let slow = env.create_provider(&slow).await?;
    let (a, b) = (env.tenant("a", 1).await?, env.tenant("b", 1).await?);
    let slow_campaign = env
        .campaign(b, slow, "slow", &numbers("+1555100", 1_000), 1_000)
        .await?;
    let fast_campaign = env
        .campaign(a, fast, "fast", &numbers("+1555200", 3_000), 1_000)
        .await?;

    let _scheduler = env.scheduler(500, &[])?;
    // Two workers, each able to hold 300 deliveries per lane: without lanes, the slow
    // provider's messages would fill that prefetch and starve the fast campaign.
    let _workers = [env.worker(&[])?, env.worker(&[])?];
    env.start(slow_campaign).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let started = Instant::now();
    env.start(fast_campaign).await?;
    env.wait_completed(&[fast_campaign], Duration::from_secs(60))
        .await?;
    let fast_took = started.elapsed();

    // 3,000 requests of 20 ms with hundreds in flight take a few seconds; behind the slow
    // provider's 1,000 two-second requests, 20 at a time, they would take over a minute.
    assert!(
        fast_took < Duration::from_secs(20),
        "the fast campaign took {fast_took:?} beside the slow provider"
    );
    let slow_stats = env.simulator_stats_at(&slow_url).await?;
    let most = slow_stats["max_in_flight"].as_u64().unwrap_or(u64::MAX);
    assert!(
        most <= 20,
        "the slow provider had {most} requests in flight across two workers; its cap is 20"
    );
    assert!(
        most >= 10,
        "the slow provider's cap went unused: at most {most} in flight"
    );
    assert_eq!(env.states(fast_campaign).await?.get("sent"), Some(&3_000));
    assert!(
        env.campaign_status(slow_campaign).await? == "running",
        "the slow campaign is still going (it needs about 100 s)"
    );
    Ok(())
}

/// A provider whose fleet-wide cap is smaller than the fleet: the worker left no room for
/// it does not consume its lane (it held a delivery there, waiting for room that never
/// came, until the requeue of stale claims a minute later, and until the broker's consumer
/// timeout closed its channel half an hour on), so its recipients go to the worker that
/// has room, one at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cap_smaller_than_the_fleet_is_served_by_the_workers_with_room() -> Result<()> {
    let env = TestEnv::new(&["--latency", "fixed:100"]).await?;
    let mut narrow = env.provider();
    narrow.max_in_flight = 1;
    let narrow = env.create_provider(&narrow).await?;
    let tenant = env.tenant("a", 1).await?;
    let campaign = env
        .campaign(tenant, narrow, "narrow", &numbers("+1555300", 30), 100)
        .await?;
    let _scheduler = env.scheduler(500, &[])?;
    let _workers = [env.worker(&[])?, env.worker(&[])?];
    // Both workers have beaten: one holds the cap, the other none.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let started = Instant::now();
    env.start(campaign).await?;
    env.wait_completed(&[campaign], Duration::from_secs(90))
        .await?;
    let took = started.elapsed();
    // 30 requests of 100 ms one at a time take a few seconds, ticks included; a delivery
    // held by the worker without room waited for the 60 s requeue.
    assert!(
        took < Duration::from_secs(30),
        "30 recipients took {took:?}"
    );
    let stats = env.simulator_stats().await?;
    assert_eq!(stats["max_in_flight"], 1, "{stats}");
    assert_eq!(stats["requests"], 30, "{stats}");
    Ok(())
}
