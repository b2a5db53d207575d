//! Herald's scheduler: every tick, one fair batch per active campaign into its provider's
//! lane (dispatch queue), and more between ticks for lanes whose workers empty them.
//!
//! - [`leader`]: only one scheduler acts at a time (PostgreSQL advisory lock).
//! - [`lanes`]: each provider's lane, budgeted apart; [`backpressure`]: how much to publish
//!   so a lane stays about one tick deep.
//! - [`fairness`]: how a tick's budget is split across tenants and campaigns, and the order;
//!   [`turns`]: with thousands of campaigns, small shares taken in turns at full batches;
//!   [`routing`]: which lane (primary or overflow) a campaign's work is claimed into;
//!   [`commitments`]: which of the two goes first, by committed monthly volumes.
//! - [`budget`]: how much each lane may take this pass; the claim itself is the store's
//!   (`herald_store::recipients::claim`); [`carry`]: what a top-up between ticks plans from
//!   (the last measure, less what was claimed since).
//! - [`publish`]: publishing with confirms.
//! - [`tick`]: one tick, end to end: it makes due campaigns running and [`sweep`]s (lost
//!   claims back to `pending`, waiting recipients of ended campaigns ended) before it
//!   dispatches.
//! - [`housekeeping`]: beside the ticks, the leader recovers recipients whose lease ran out,
//!   completes finished campaigns, folds the counters' ledger ([`counters`]), measures the
//!   [`backlog`] (the work left per provider and tenant, the autoscaling metric) and keeps
//!   receipts.
//! - wake-ups (`herald_shared::wake`, heard by `herald_shared::listen`): transactional
//!   messages dispatched at once, between ticks.

pub mod backlog;
pub mod backpressure;
pub mod budget;
pub mod carry;
pub mod commitments;
pub mod config;
pub mod counters;
pub mod fairness;
pub mod housekeeping;
pub mod lanes;
pub mod leader;
pub mod publish;
pub mod routing;
pub mod sweep;
pub mod tenant_lines;
pub mod tick;
pub mod turns;

use backpressure::Limits;
use config::SchedulerConfig;
use herald_shared::ops::{self, health::Role, metrics as metrics_names};
use lanes::Lanes;
use leader::Leadership;
use publish::Publisher;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tick::{Pass, Ticker};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// Where metrics and health are served unless `HERALD_OPS_LISTEN` says otherwise.
const DEFAULT_OPS_LISTEN: std::net::SocketAddr = herald_shared::ops::loopback(9410);
/// Wake-ups are served at most this often, and never closer than twice the last wake's own
/// duration: a burst of messages costs a few passes, not one each, and wakes take at most a
/// third of the scheduler's time however many campaigns each one reads.
const MIN_WAKE_GAP: Duration = Duration::from_millis(50);
/// The least time between two wake-up passes after one that took `cost`: twice that (see
/// [`MIN_WAKE_GAP`]), but never more than half a tick. The wait holds ticks up too, and a
/// wake-up pass slowed to its bound (25 s, a database that hung) made the next wait 50 s,
/// with no tick, top-up or leadership check on any lane meanwhile.
fn wake_gap(cost: Duration, tick: Duration) -> Duration {
    MIN_WAKE_GAP.max(cost.saturating_mul(2)).min(tick / 2)
}

/// How long the broker may take to answer the readiness check.
const BROKER_CHECK: Duration = Duration::from_secs(2);
/// After this many failed broker checks in a row (one a tick) a leader steps down, and a
/// standby stops contending: a scheduler that cannot publish would otherwise hold the lock,
/// and every tick fail, while a standby that can waits for ever...
const STEP_DOWN_AFTER_BROKER_CHECKS: u32 = 3;
/// ...for this many checks, then contends again for as many as it took to step down, and so
/// on until a check passes: when no scheduler reaches the broker (it is down), one still
/// leads a part of the time, and the housekeeping that needs only the database (leases,
/// completions, the counters' folds, expiry of messages) goes on, if by fits.
const STAND_ASIDE_BROKER_CHECKS: u32 = 10;

/// Whether a scheduler whose broker checks failed `failures` times in a row stands aside.
fn stands_aside(failures: u32) -> bool {
    failures >= STEP_DOWN_AFTER_BROKER_CHECKS
        && (failures - STEP_DOWN_AFTER_BROKER_CHECKS)
            % (STAND_ASIDE_BROKER_CHECKS + STEP_DOWN_AFTER_BROKER_CHECKS)
            < STAND_ASIDE_BROKER_CHECKS
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] herald_shared::db::DbError),
    #[error(transparent)]
    Publish(#[from] publish::PublishError),
    #[error(transparent)]
    Ops(#[from] herald_shared::ops::OpsError),
}

/// Runs until `shutdown` is cancelled; a tick in progress is finished first.
pub async fn run(config: SchedulerConfig, shutdown: CancellationToken) -> Result<(), StartError> {
    // `leadership`: not ready until it knows whether it leads or stands by.
    let health = ops::start(
        &config.ops,
        DEFAULT_OPS_LISTEN,
        &["database", "broker", "leadership"],
    )
    .await?;
    if let Some(warning) = config.warning() {
        tracing::warn!("{warning}");
    }
    let deadline = config.connections.db_deadline();
    herald_shared::db::set_deadline(deadline);
    let tls = config.connections.tls();
    let database_url = config.connections.database_url.expose();
    // The pool's, the leadership lock's and the wake-up listener's connections alike.
    let options = herald_shared::db::bounded_sessions(
        herald_shared::db::options(database_url, &tls)?,
        deadline,
    );
    let pool =
        herald_shared::db::connect_with(options.clone(), config.connections.db_pool_size).await?;
    ops::watch_database(&health, pool.clone());
    if !ops::database_first_passes(&health, &shutdown).await {
        return Ok(());
    }
    let publisher = Publisher::new(
        config.broker.amqp_url.expose(),
        &tls,
        Duration::from_millis(config.confirm_timeout_ms),
    )?;
    let lanes = Lanes::new(Limits {
        tick: config.tick(),
        depth_ticks: config.queue_depth_ticks,
        min_budget: config.min_budget,
        max_budget: config.max_budget,
    });
    let mut ticker = Ticker::new(
        pool.clone(),
        publisher,
        lanes,
        config.max_budget,
        Duration::from_millis(config.requeue_after_ms),
        config.min_batch,
    );
    let mut leadership = Leadership::new(options.clone());
    // Whether this scheduler leads, as its last leadership check said: the housekeeping
    // acts only then.
    let leading = leadership.shared();
    let (due_campaigns, _) = tokio::sync::watch::channel(Vec::new());
    let keeping = housekeeping::ReceiptKeeping {
        retention: Duration::from_secs(u64::from(config.receipt_retention_days) * 86_400),
        orphan_after: Duration::from_millis(config.receipt_orphan_after_ms),
    };
    let spawn_housekeeping = || {
        tokio::spawn(housekeeping::run(
            pool.clone(),
            leading.clone(),
            due_campaigns.subscribe(),
            config.tick(),
            keeping,
            shutdown.clone(),
        ))
    };
    let mut housekeeping = spawn_housekeeping();
    // Long enough for every statement of a pass and for the broker's confirms of what it
    // published, each within its own deadline.
    let pass_within = deadline + Duration::from_millis(config.confirm_timeout_ms);
    tracing::info!(
        tick_ms = config.tick_ms,
        "scheduler started; contending for leadership"
    );

    let mut interval = tokio::time::interval(config.tick());
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Each names a provider whose lane has new work waiting (transactional messages, or a
    // campaign started or resumed now), or one of whose campaigns was just paused or
    // cancelled, or whose message streams new credentials resumed.
    let mut wakes = herald_shared::listen::listen(options, &herald_shared::wake::LISTEN);
    let (mut last_wake, mut wake_cost) = (Instant::now(), Duration::ZERO);
    // Failed broker checks in a row (see `STEP_DOWN_AFTER_BROKER_CHECKS`).
    let mut broker_failures = 0_u32;
    // The starvation poll's clock (see `Ticker::starving`): kept across passes and wake-ups.
    let usual_poll = backpressure::starvation_poll(config.tick(), false);
    let (mut last_poll, mut last_usual_poll) = (Instant::now(), Instant::now());
    let mut polling = false;
    loop {
        let poll = ticker.starvation_poll(config.tick());
        if poll.is_some() && !polling {
            // The first look comes one period after a lane turns hungry (a pass that just
            // published into it), not at once.
            (last_poll, last_usual_poll) = (Instant::now(), Instant::now());
        }
        polling = poll.is_some();
        // A pass in progress when SIGTERM came is finished; none starts after it.
        if shutdown.is_cancelled() {
            break;
        }
        // In this order among ready branches: a tick long due, then a starvation poll that
        // came round (at most one per poll period), then wake-ups, which may come as often
        // as a tenant sends messages and must not keep the other lanes waiting.
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            _ = interval.tick() => {}
            () = tokio::time::sleep_until((last_poll + poll.unwrap_or_default()).into()), if poll.is_some() => {
                let usual = last_usual_poll.elapsed() >= usual_poll;
                if usual {
                    last_usual_poll = Instant::now();
                }
                // Bounded like the readiness check: a broker that stopped answering without
                // closing the connection must not hold up ticks, wake-ups and SIGTERM.
                if tokio::time::timeout(BROKER_CHECK, ticker.starving(usual))
                    .await
                    .unwrap_or(false)
                {
                    let leads = lead(&mut leadership, &mut ticker, broker_failures).await;
                    if leads
                        && !shutdown.is_cancelled()
                        && let Err(error) = ticker.bounded(pass_within, Pass::TopUp).await
                    {
                        tracing::warn!(%error, "top-up failed");
                    }
                }
                // The next look a whole period after this one ended: a top-up that took
                // longer than the period would otherwise find the next look due at once,
                // every time, and wake-ups would wait for the tick.
                last_poll = Instant::now();
                continue;
            }
            Some(provider) = wakes.recv() => {
                let gap = wake_gap(wake_cost, config.tick());
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(gap.saturating_sub(last_wake.elapsed())) => {}
                }
                let mut woken = std::collections::BTreeSet::from([provider]);
                while let Ok(more) = wakes.try_recv() {
                    woken.insert(more);
                }
                let started = Instant::now();
                let leads = lead(&mut leadership, &mut ticker, broker_failures).await;
                if leads
                    && !shutdown.is_cancelled()
                    && let Err(error) = ticker.bounded(pass_within, Pass::Wake(&woken)).await
                {
                    tracing::warn!(%error, "wake-up dispatch failed; the next tick retries");
                }
                last_wake = Instant::now();
                wake_cost = last_wake - started;
                continue;
            }
        }
        // Leader or standby, a scheduler that cannot reach the broker is not ready: a
        // standby could not take over.
        let broker = tokio::time::timeout(BROKER_CHECK, ticker.check_broker()).await;
        broker_failures = if matches!(broker, Ok(Ok(()))) {
            0
        } else {
            broker_failures.saturating_add(1)
        };
        health.report(
            "broker",
            match broker {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err(format!("no answer within {BROKER_CHECK:?}")),
            },
        );
        let leads = lead(&mut leadership, &mut ticker, broker_failures).await;
        health.set_role(if leads { Role::Leader } else { Role::Standby });
        health.report("leadership", Ok(()));
        metrics::gauge!(metrics_names::LEADER).set(if leads { 1.0 } else { 0.0 });
        // The broker check and leadership take up to seconds: a SIGTERM meanwhile starts
        // no tick.
        if !leads || shutdown.is_cancelled() {
            continue;
        }
        let started = Instant::now();
        match ticker.bounded(pass_within, Pass::Tick).await {
            Ok(report) => {
                due_campaigns.send_replace(report.due_campaigns);
            }
            Err(error) => tracing::warn!(%error, "tick failed; retrying next tick"),
        }
        metrics::histogram!(metrics_names::TICK_DURATION).record(started.elapsed().as_secs_f64());
        // Housekeeping that ended (a panic) is started again: without it campaigns would
        // never complete and the counters never fold.
        if housekeeping.is_finished() && !shutdown.is_cancelled() {
            if let Err(error) = (&mut housekeeping).await {
                tracing::error!(%error, "housekeeping ended abnormally; starting it again");
            }
            housekeeping = spawn_housekeeping();
        }
    }
    leading.store(false, Ordering::Relaxed);
    if let Err(error) = housekeeping.await {
        tracing::warn!(%error, "housekeeping ended abnormally");
    }
    leadership.resign().await;
    pool.close().await;
    tracing::info!("scheduler stopped");
    Ok(())
}

/// Confirms or contends for leadership, and when this process leads, tells the ticker
/// which term its passes run in. Not while the broker's failed checks in a row
/// (`broker_failures`) say to stand aside ([`stands_aside`]): then a leader resigns (a
/// standby that can publish takes over) and a standby does not contend.
async fn lead(leadership: &mut Leadership, ticker: &mut Ticker, broker_failures: u32) -> bool {
    if stands_aside(broker_failures) {
        if leadership.is_leader() {
            tracing::warn!(
                broker_failures,
                "cannot reach the broker; stepping down so that a scheduler that can leads"
            );
            leadership.resign().await;
        }
        ticker.stand_down();
        return false;
    }
    let leads = leadership.refresh().await;
    if leads {
        ticker.serve_term(leadership.term());
    } else {
        ticker.stand_down();
    }
    leads
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scheduler_cut_off_from_the_broker_stands_aside_then_contends_again_by_turns() {
        let aside: Vec<bool> = (0..30).map(stands_aside).collect();
        // Two failed checks are a blip; from the third, ten checks aside, then three
        // contending, and again.
        let expected: Vec<bool> = (0..30)
            .map(|n| (3..13).contains(&n) || (16..26).contains(&n) || n >= 29)
            .collect();
        assert_eq!(aside, expected);
        assert!(!stands_aside(0));
        stands_aside(u32::MAX);
    }

    #[test]
    fn a_slow_wake_up_holds_the_next_for_at_most_half_a_tick() {
        let tick = Duration::from_secs(2);
        assert_eq!(wake_gap(Duration::ZERO, tick), MIN_WAKE_GAP);
        assert_eq!(
            wake_gap(Duration::from_millis(100), tick),
            Duration::from_millis(200)
        );
        assert_eq!(
            wake_gap(Duration::from_secs(25), tick),
            Duration::from_secs(1)
        );
        // A tick shorter than the least gap: the tick wins, wake-ups never wait past it.
        assert_eq!(
            wake_gap(Duration::ZERO, Duration::from_millis(60)),
            Duration::from_millis(30)
        );
    }
}
