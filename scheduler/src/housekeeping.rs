//! The leader's housekeeping, beside its ticks rather than inside them: recovering the
//! recipients whose lease ran out, completing finished campaigns, folding the counter
//! ledger, measuring the backlog, trimming send-rate samples, keeping receipts (and pruning
//! status events as old), expiring
//! transactional messages held a day by their provider's refusal, erasing messages that were
//! in flight when their address was erased, releasing campaigns'
//! idempotency keys past their day, forgetting recipients' STOP and START a week old, and
//! moving providers' pacing times back after the database's clock stepped back.
//!
//! None of it decides what is dispatched, and with ten thousand running campaigns a fold
//! takes most of a second and the completion check a tenth: run inside the tick, they made
//! ticks that much later, and every campaign's next batch with them. Here they run on
//! another of the pool's connections while the tick claims and publishes.
//!
//! The lease recovery finds nothing while workers live, yet costs in proportion to the send
//! rate: every lease finished since the last round leaves an index entry that its scan
//! visits once (37–89 ms at 5,000–6,000 msg/s with 10,000 campaigns: most of the tick's
//! sweeps when it ran there), and since the index is keyed by campaign first (shared with
//! progress's count, migration `20261205000001`) the scan reads the leases in flight too. Rounds follow the tick's period, so a lease that ran out is
//! taken back a round later at most, or later by as long as a slow round (a fold) takes.

use crate::backlog::Backlog;
use crate::counters;
use herald_shared::db::{within, within_for};
use herald_shared::ops::metrics as metrics_names;
use herald_store as store;
use herald_store::receipts;
use sqlx::PgPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The scheduler's housekeeping of receipts.
#[derive(Debug, Clone, Copy)]
pub struct ReceiptKeeping {
    pub retention: Duration,
    pub orphan_after: Duration,
}

/// Receipts are kept, and send-rate samples trimmed, every this many rounds (a minute with
/// the default 2 s tick): both only bound how much old data is kept.
const KEEP_EVERY_ROUNDS: u64 = 30;

/// Erasures a round looks at: each waits for a few messages in flight, and those end
/// within their providers' windows.
const ERASURES_A_ROUND: i64 = 100;

/// How long the steps that take in one statement whatever piled up (the counter ledger's
/// fold, the send-rate trim) may take: ten database deadlines. After a while with no
/// leader (transactional messages and receipts go on adding to the ledger) one may take
/// longer than a deadline, and given up at each round it would never get through.
fn long_step() -> Duration {
    herald_shared::db::deadline() * 10
}

/// Runs a round every `period` (the tick's) while `leading` says this scheduler leads,
/// until `shutdown`. `due` holds the campaigns the last tick found recipients due in.
pub async fn run(
    pool: PgPool,
    leading: Arc<AtomicBool>,
    due: watch::Receiver<Vec<Uuid>>,
    period: Duration,
    receipts: ReceiptKeeping,
    shutdown: CancellationToken,
) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut backlog = Backlog::default();
    let mut round: u64 = 0;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        if !leading.load(Ordering::Relaxed) {
            backlog.clear();
            round = 0;
            continue;
        }
        let started = Instant::now();
        let recovered = within(store::recipients::sweep::recover_expired_leases(&pool)).await;
        step_done("lease_recovery", started);
        match recovered {
            Ok(0) => {}
            Ok(recovered) => tracing::warn!(
                recovered,
                "recovered recipients whose lease ran out (their worker died or hung)"
            ),
            Err(error) => tracing::warn!(%error, "cannot recover expired leases now"),
        }
        if shutdown.is_cancelled() {
            return;
        }
        // Campaigns due at the last tick are not finished; skipping them only ever delays a
        // completion by a round.
        let due_campaigns = due.borrow().clone();
        let started = Instant::now();
        let completed = within(store::campaigns::complete_finished(&pool, &due_campaigns)).await;
        step_done("completion", started);
        match completed {
            Ok(completed) => {
                for (campaign_id, tenant_id) in completed {
                    tracing::info!(%campaign_id, %tenant_id, "campaign completed");
                }
            }
            Err(error) => tracing::warn!(%error, "cannot complete finished campaigns now"),
        }
        let started = Instant::now();
        let settled = within(store::campaigns::settle_cancelled(&pool)).await;
        step_done("settling", started);
        match settled {
            Ok(0) => {}
            Ok(settled) => tracing::debug!(settled, "cancelled campaigns settled"),
            Err(error) => tracing::warn!(%error, "cannot settle cancelled campaigns now"),
        }
        // Every round: a message in flight when its address was erased keeps it only until
        // it has ended.
        let started = Instant::now();
        let finished = within(store::erasures::finish(&pool, ERASURES_A_ROUND)).await;
        step_done("erasures", started);
        match finished {
            Ok(store::erasures::Finished { erased: 0, done: 0 }) => {}
            Ok(finished) => tracing::info!(
                erased = finished.erased,
                done = finished.done,
                "messages in flight at their address's erasure erased once ended"
            ),
            Err(error) => tracing::warn!(%error, "cannot finish erasures now"),
        }
        match within(store::pacing::rebase_after_clock_step(&pool)).await {
            Ok(0) => {}
            Ok(rebased) => tracing::warn!(
                rebased,
                "the database's clock stepped back: providers' pacing times moved back with it"
            ),
            Err(error) => tracing::warn!(%error, "cannot check the pacing rows' times now"),
        }
        // Each step may wait on an unreachable database: a shutdown does not wait for all.
        if shutdown.is_cancelled() {
            return;
        }
        // A new leader folds and keeps at once (the ledger may have grown meanwhile).
        if round.is_multiple_of(counters::FOLD_EVERY_TICKS as u64)
            && let Err(error) = within_for(long_step(), counters::fold(&pool)).await
        {
            tracing::warn!(%error, "cannot fold the counter ledger now");
        }
        if let Err(error) = within(backlog.measure(&pool)).await {
            tracing::warn!(%error, "cannot measure the backlog now");
        }
        if round.is_multiple_of(KEEP_EVERY_ROUNDS) && !shutdown.is_cancelled() {
            if let Err(error) =
                within_for(long_step(), store::campaigns::trim_send_rate(&pool)).await
            {
                tracing::warn!(%error, "cannot trim the send-rate samples now");
            }
            if let Err(error) = keep_receipts(&pool, receipts).await {
                tracing::warn!(%error, "cannot keep receipts now");
            }
            match within(store::recipients::sweep::expire_held_messages(&pool)).await {
                Ok(0) => {}
                Ok(expired) => tracing::warn!(
                    expired,
                    "transactional messages held a day in streams their providers refused: expired"
                ),
                Err(error) => tracing::warn!(%error, "cannot expire long-held messages now"),
            }
            // Kept as long as receipts are, and pruned the same way (a batch at a time for a
            // few seconds at most).
            match within_for(
                long_step(),
                store::webhooks::prune(&pool, receipts.retention),
            )
            .await
            {
                Ok(0) => {}
                Ok(pruned) => tracing::debug!(pruned, "old status events deleted"),
                Err(error) => tracing::warn!(%error, "cannot delete old status events now"),
            }
            match within(store::webhooks::drop_unowned(&pool, 10_000)).await {
                Ok(0) => {}
                Ok(dropped) => {
                    tracing::debug!(dropped, "status events of removed webhooks deleted")
                }
                Err(error) => tracing::warn!(%error, "cannot delete removed webhooks' events now"),
            }
            match within(store::suppressions::forget_consents(&pool, 10_000)).await {
                Ok(0) => {}
                Ok(forgotten) => {
                    tracing::debug!(forgotten, "recipients' old STOP and START forgotten")
                }
                Err(error) => tracing::warn!(%error, "cannot forget old STOP and START now"),
            }
            match within(store::campaigns::release_keys(&pool, 10_000)).await {
                Ok(0) => {}
                Ok(released) => tracing::debug!(released, "campaigns' idempotency keys released"),
                Err(error) => tracing::warn!(%error, "cannot release old idempotency keys now"),
            }
            match within(store::messages::retire_idle_streams(&pool)).await {
                Ok(0) => {}
                Ok(retired) => tracing::debug!(retired, "idle message streams ended"),
                Err(error) => tracing::warn!(%error, "cannot end idle message streams now"),
            }
        }
        round += 1;
    }
}

/// Records how long a housekeeping step took (failed or not: a step that waits on a
/// database outage shows here too).
fn step_done(step: &'static str, started: Instant) {
    metrics::histogram!(metrics_names::HOUSEKEEPING_DURATION, "step" => step)
        .record(started.elapsed().as_secs_f64());
}

/// Most adoption statements (of up to a thousand receipts each) a housekeeping round runs.
const ADOPT_ROUNDS: usize = 5;

/// Reports receipts that never found their recipient, and prunes old ones (either also
/// when the other failed).
async fn keep_receipts(pool: &PgPool, keeping: ReceiptKeeping) -> Result<(), sqlx::Error> {
    // Every receipt still waiting is looked at before any is called an orphan (the tick's
    // sweep only looks at the last minutes of them), as far back as receipts are kept: one
    // whose message a send recorded is never orphaned, so it waits here to be adopted,
    // however long the scheduler was away. A round adopts a few thousand; a backlog bigger
    // than that (hours of receipts raced past their sends) goes over the next rounds.
    for _ in 0..ADOPT_ROUNDS {
        match within(receipts::adopt_parked(pool, keeping.retention)).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "cannot adopt parked receipts now");
                break;
            }
        }
    }
    let orphaned = within(receipts::orphan_parked(pool, keeping.orphan_after)).await;
    if let Ok(found) = &orphaned {
        metrics::counter!(metrics_names::RECEIPTS_ORPHANED)
            .increment(u64::try_from(found.count).unwrap_or(0));
    }
    if let Ok(receipts::Orphaned {
        count,
        first: Some(first),
    }) = &orphaned
    {
        tracing::warn!(
            count,
            provider_id = %first.provider_id,
            message_id = %first.message_id,
            status = %first.status,
            "receipts for messages Herald never recorded (see GET /api/v1/receipts/orphans)"
        );
    }
    let pruned = within(receipts::prune(pool, keeping.retention)).await;
    if let Ok(pruned) = pruned
        && pruned > 0
    {
        tracing::info!(pruned, "old receipts deleted");
    }
    orphaned.and(pruned).map(|_| ())
}
