//! Cost-aware overflow: the primary provider carries what its rate limit allows, the
//! overflow only the rest.

use anyhow::Result;
use herald_shared::domain::Channel;
use herald_store::catalog::{self, NewCampaign, NewRecipient};
use herald_store::progress;
use herald_tests::{TestEnv, numbers};
use std::time::Duration;

const RECIPIENTS: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_runs_at_its_limit_and_the_overflow_takes_the_rest() -> Result<()> {
    let _alone = crate::ALONE.lock().await;
    let mut env = TestEnv::new(&["--latency", "fixed:5"]).await?;
    // The overflow has no rate limit; 100 ms a request under a cap of 100 in flight makes
    // about 1,000/s, so the 10,000 take long enough to watch the primary.
    let overflow_url = env.extra_simulator(&["--latency", "fixed:100"]).await?;
    let mut primary = env.provider();
    primary.cost_per_message = Some(0.01);
    let primary = env.create_provider(&primary).await?;
    sqlx::query("UPDATE providers SET rate_limit = 20, rate_window_ms = 1000 WHERE id = $1")
        .bind(primary)
        .execute(&env.pool)
        .await?;
    let mut overflow = herald_store::catalog::NewProvider::http(
        "overflow",
        &format!("{overflow_url}/v1/messages"),
    );
    overflow.max_in_flight = 100;
    overflow.cost_per_message = Some(0.05);
    let overflow = env.create_provider(&overflow).await?;
    let tenant = env.tenant("acme", 1).await?;
    let recipients: Vec<NewRecipient> = numbers("+1555600", RECIPIENTS)
        .into_iter()
        .map(|address| NewRecipient {
            address,
            variables: Default::default(),
        })
        .collect();
    let campaign = catalog::create_campaign(
        &env.pool,
        &NewCampaign {
            tenant_id: tenant,
            provider_id: primary,
            overflow_provider_id: Some(overflow),
            name: "overflowing".into(),
            channel: Channel::Sms,
            template: "Hello".into(),
            batch_size: 1_000,
        },
        &recipients,
    )
    .await?;
    let _scheduler = env.scheduler(1_000, &[])?;
    let _worker = env.worker(&[])?;
    env.start(campaign).await?;
    env.wait_completed(&[campaign], Duration::from_secs(120))
        .await?;

    let states = env.states(campaign).await?;
    assert_eq!(states.get("sent"), Some(&(RECIPIENTS as i64)), "{states:?}");
    let primary_stats = env.simulator_stats().await?;
    let overflow_stats = env.simulator_stats_at(&overflow_url).await?;
    let (on_primary, on_overflow) = (
        primary_stats["accepted"].as_u64().unwrap_or(0),
        overflow_stats["accepted"].as_u64().unwrap_or(0),
    );
    assert_eq!(on_primary + on_overflow, RECIPIENTS as u64);
    assert_eq!(primary_stats["duplicates"], 0);
    assert_eq!(overflow_stats["duplicates"], 0);
    let busiest = crate::busiest_within(&primary_stats, 20);
    // The primary kept busy all along: over the whole seconds of the run (the first and the
    // last are partial). Herald paces at 19.3/s, so a second sees 19 or 20 requests; the
    // mean is a benchmark figure (bench/rate_limits.sh, BENCHMARKS.md), the floors here
    // catch a primary left idle. The first whole second may still be starting up (the first
    // leases, on a cold database, beside the overflow's first hundreds).
    //
    // A slot a worker or the scheduler misses while the machine is busy is not made up
    // later (that would break the provider's window), so on a loaded machine one second
    // may come out short: seen at 10 and 13 in CI, where PostgreSQL, RabbitMQ, two
    // simulators, the scheduler and the worker share two cores. A stall is an event, not a
    // pattern: no second may fall below a quarter of the limit, and no two in a row below
    // 15. A primary idle for most of a second, or short second after second, fails.
    // The simulator lists only seconds that saw a request: a second the primary sat idle
    // is filled in as 0.
    let seen: Vec<(u64, u64)> = primary_stats["per_second"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| Some((s["second"].as_u64()?, s["accepted"].as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    let per_second: Vec<u64> = match (seen.first(), seen.last()) {
        (Some(&(first, _)), Some(&(last, _))) => (first..=last)
            .map(|second| seen.iter().find(|s| s.0 == second).map_or(0, |s| s.1))
            .collect(),
        _ => Vec::new(),
    };
    eprintln!("primary per second: {per_second:?}; {on_overflow} on the overflow");
    let whole = &per_second[1..per_second.len().saturating_sub(1).max(1)];
    let mean = whole.iter().sum::<u64>() as f64 / whole.len() as f64;
    let steady = whole.get(1..).unwrap_or_default();
    let least = steady.iter().copied().min().unwrap_or(0);
    let short_in_a_row = steady.windows(2).any(|pair| pair.iter().all(|&n| n < 15));
    eprintln!(
        "overflow: primary {on_primary}, overflow {on_overflow}, busiest 1-s window {busiest}, primary {mean:.2}/s over whole seconds, least {least}"
    );
    assert!(
        whole.len() >= 10 && mean >= 0.9 * 20.0 && least >= 5 && !short_in_a_row,
        "the primary carried {mean:.2}/s (least {least}, two short seconds in a row: {short_in_a_row}) in {} whole seconds beside {on_overflow} on the overflow: {per_second:?}",
        whole.len()
    );
    assert!(on_overflow > 0, "nothing overflowed");

    let sends = progress::provider_sends(&env.pool, &[campaign]).await?;
    let of = |provider| sends.iter().find(|s| s.provider_id == provider);
    assert_eq!(of(primary).map(|s| s.sent), Some(on_primary as i64));
    assert_eq!(of(overflow).map(|s| s.sent), Some(on_overflow as i64));
    let cost = of(overflow).and_then(|s| s.cost).unwrap_or_default();
    assert!(
        (cost - on_overflow as f64 * 0.05).abs() < 1e-6,
        "cost {cost}"
    );
    Ok(())
}
