//! The worker's two batched database writes: the lease taken before a request
//! ([`lease::begin`]) and the outcome after it ([`record::record`]), each gathered from
//! many deliveries into one statement, and each riding out a database outage.
//!
//! Both wait out an outage, however long: a lease holds its delivery meanwhile (a delivery
//! handed back while the database is away would only come back at once, again and again,
//! until the queue's delivery limit dead-letters it; past the broker's consumer timeout, 30
//! minutes by default, the broker takes it back itself, closing its channel, and the worker
//! reconnects), and an outcome keeps what this worker learnt from the provider, which the
//! sweeper could only guess. A write that fails for any other reason is tried again one by
//! one, so that one bad row holds up nothing else.

use crate::attempts::{Begun, Dispatch, Outcome};
use herald_shared::batch::Batcher;
use herald_store::recipients::{lease, record};
use sqlx::PgPool;
use std::future::Future;
use std::time::{Duration, Instant};

/// Most recipients one begin/record statement covers.
const MAX_BATCH: usize = 500;
/// Lease and outcome statements each in flight at once: two keep a multi-core PostgreSQL
/// busy while the next batch gathers (measured: more throughput at 0 ms provider latency).
const DB_LANES: usize = 2;
/// How long an outcome statement waits for a fuller batch. Outcomes arrive as requests are
/// answered, a few at a time behind a slow or jittery provider; by then the delivery is
/// acked and its room under the cap released, so waiting holds nothing scarce, and fewer,
/// larger statements cost PostgreSQL less per recipient (BENCHMARKS.md). Leases do not
/// wait: a lease is on the way to the request and to the delivery's ack.
const OUTCOME_LINGER: Duration = Duration::from_millis(20);

/// Leases for dispatches: `None` for one that must not be sent (stale, finished, or its
/// lease could not be written).
pub fn begin(pool: PgPool, lease_grace: Duration) -> Batcher<Dispatch, Option<Begun>> {
    Batcher::spawn_parallel(MAX_BATCH, DB_LANES, move |dispatches: Vec<Dispatch>| {
        let pool = pool.clone();
        async move {
            let started = Instant::now();
            match until_written("begin attempts", || {
                lease::begin(&pool, &dispatches, lease_grace)
            })
            .await
            {
                Ok(begun) => {
                    written("lease", started, dispatches.len());
                    begun
                }
                // One by one, so that one bad row holds up nothing else; one that fails
                // alone is acked unsent: the recipient stays claimed and the sweeper
                // dispatches it again (a stale claim: a new message, a new attempt).
                Err(()) => {
                    let mut begun = Vec::with_capacity(dispatches.len());
                    for dispatch in &dispatches {
                        let one = std::slice::from_ref(dispatch);
                        let leased = until_written("begin an attempt", || {
                            lease::begin(&pool, one, lease_grace)
                        })
                        .await;
                        begun.push(leased.ok().and_then(|mut one| one.pop().flatten()));
                    }
                    begun
                }
            }
        }
    })
}

/// Outcomes of requests made; resolves once each is written (or given up on, logged), with
/// whether the write ended the recipient `failed`, put off past `max_deferral` (see
/// [`record::record`]).
pub fn record(pool: PgPool, max_deferral: Duration) -> Batcher<Outcome, bool> {
    Batcher::spawn_lingering(
        MAX_BATCH,
        DB_LANES,
        OUTCOME_LINGER,
        move |outcomes: Vec<Outcome>| {
            let pool = pool.clone();
            async move {
                let started = Instant::now();
                if let Ok(gave_up) = until_written("record outcomes", || {
                    record::record(&pool, &outcomes, max_deferral)
                })
                .await
                {
                    written("outcome", started, outcomes.len());
                    return outcomes
                        .iter()
                        .map(|o| gave_up.contains(&o.dispatch.recipient_id))
                        .collect();
                }
                let mut given_up = Vec::with_capacity(outcomes.len());
                for outcome in &outcomes {
                    let one = std::slice::from_ref(outcome);
                    let written = until_written("record an outcome", || {
                        record::record(&pool, one, max_deferral)
                    })
                    .await;
                    given_up.push(written.as_ref().is_ok_and(|ids| !ids.is_empty()));
                    if written.is_err() {
                        // Never sent again for this: the recipient stays `sending`, and once
                        // its lease runs out the sweeper judges it like a lost answer.
                        tracing::error!(
                            recipient_id = outcome.dispatch.recipient_id,
                            state = %outcome.state,
                            error = outcome.error.as_deref().unwrap_or(""),
                            "this outcome cannot be written; leaving the recipient to the sweeper"
                        );
                    }
                }
                given_up
            }
        },
    )
}

/// Records a batched write that committed: how long it took from its first try (an
/// outage's wait included) and how many recipients it covered.
fn written(write: &'static str, started: Instant, recipients: usize) {
    use herald_shared::ops::metrics::{WORKER_WRITE_BATCH, WORKER_WRITE_DURATION};
    metrics::histogram!(WORKER_WRITE_DURATION, "write" => write)
        .record(started.elapsed().as_secs_f64());
    metrics::histogram!(WORKER_WRITE_BATCH, "write" => write).record(recipients as f64);
}

/// Runs a write until it commits, pausing (100 ms, doubling to 5 s) after each failure that
/// may pass ([`herald_shared::db::is_transient`]), a try with no answer within the
/// database deadline among them (a connection that leads nowhere); `Err` at once for any
/// other.
async fn until_written<T, F, Fut>(what: &str, mut write: F) -> Result<T, ()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let mut pause = Duration::from_millis(100);
    let mut failing_since: Option<Instant> = None;
    loop {
        match herald_shared::db::within(write()).await {
            Ok(done) => {
                if let Some(since) = failing_since {
                    tracing::info!(what, after = ?since.elapsed(), "database writes resumed");
                }
                return Ok(done);
            }
            Err(error) if !herald_shared::db::is_transient(&error) => {
                tracing::error!(what, %error, "write failed, and would again");
                return Err(());
            }
            Err(error) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                tracing::warn!(what, %error, failing_for = ?since.elapsed(), "cannot write yet; holding the deliveries and retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}
