//! The worker's two batched database writes: the lease taken before a request
//! ([`attempts::begin`]) and the outcome after it ([`attempts::record`]), each gathered from
//! many deliveries into one statement, and each riding out a database outage.
//!
//! Both wait out an outage, however long, holding their deliveries: an outcome whose request
//! was made must never go back to the queue (it would be sent again), and a delivery handed
//! back while the database is away would only come back at once, again and again, until the
//! queue's delivery limit dead-letters it. A write that fails for any other reason is tried
//! again one by one, so that one bad row holds up nothing else.

use crate::attempts::{self, Begun, Dispatch, Outcome};
use herald_shared::batch::Batcher;
use sqlx::PgPool;
use std::future::Future;
use std::time::{Duration, Instant};

/// Most recipients one begin/record statement covers.
const MAX_BATCH: usize = 500;
/// Lease and outcome statements each in flight at once: two keep a multi-core PostgreSQL
/// busy while the next batch gathers (measured: more throughput at 0 ms provider latency).
const DB_LANES: usize = 2;
/// How long a lease batch that is not full waits for more. Without it, a worker sending
/// slowly (a provider answering in 2 s) wrote a few rows a statement: PostgreSQL spent 0.35 ms
/// and RabbitMQ 0.17 ms per message (0.08 and 0.06 with the lingers; BENCHMARKS.md). Every
/// request leaves up to this much later, so it stays small.
const BEGIN_LINGER: Duration = Duration::from_millis(5);
/// How long an outcome batch that is not full waits for more. Nothing waits on an outcome
/// but its delivery's ack (and slot in the prefetch), so it can wait longer: 1% of a slot's
/// time at 2 s provider latency.
const RECORD_LINGER: Duration = Duration::from_millis(20);

/// A batcher of this module's statements, waiting up to `linger` for a fuller batch.
fn batcher<Req, Resp, F, Fut>(linger: Duration, handle: F) -> Batcher<Req, Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
    F: FnMut(Vec<Req>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Vec<Resp>> + Send,
{
    Batcher::spawn_lingering(MAX_BATCH, DB_LANES, linger, handle)
}

/// Leases for dispatches: `None` for one that must not be sent (stale, finished, or its
/// lease could not be written).
pub fn begin(pool: PgPool, lease_grace: Duration) -> Batcher<Dispatch, Option<Begun>> {
    batcher(BEGIN_LINGER, move |dispatches: Vec<Dispatch>| {
        let pool = pool.clone();
        async move {
            match until_written("begin attempts", || {
                attempts::begin(&pool, &dispatches, lease_grace)
            })
            .await
            {
                Ok(begun) => begun,
                // Acked unsent: the recipient stays queued and the sweeper dispatches it
                // again (a new dispatch, a new attempt at writing).
                Err(()) => vec![None; dispatches.len()],
            }
        }
    })
}

/// Outcomes of requests made; resolves once each is written (or given up on, logged).
pub fn record(pool: PgPool) -> Batcher<Outcome, ()> {
    batcher(RECORD_LINGER, move |outcomes: Vec<Outcome>| {
        let pool = pool.clone();
        async move {
            if until_written("record outcomes", || attempts::record(&pool, &outcomes))
                .await
                .is_ok()
            {
                return vec![(); outcomes.len()];
            }
            for outcome in &outcomes {
                let one = std::slice::from_ref(outcome);
                if until_written("record an outcome", || attempts::record(&pool, one))
                    .await
                    .is_err()
                {
                    // Never sent again for this: the recipient stays `sending`, and once
                    // its lease runs out the sweeper judges it like a lost answer.
                    tracing::error!(
                        recipient_id = outcome.dispatch.recipient_id,
                        decision = ?outcome.decision,
                        "this outcome cannot be written; leaving the recipient to the sweeper"
                    );
                }
            }
            vec![(); outcomes.len()]
        }
    })
}

/// Runs a write until it commits, pausing (100 ms, doubling to 5 s) after each failure that
/// may pass ([`herald_shared::db::is_transient`]); `Err` at once for any other.
async fn until_written<T, F, Fut>(what: &str, mut write: F) -> Result<T, ()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let mut pause = Duration::from_millis(100);
    let mut failing_since: Option<Instant> = None;
    loop {
        match write().await {
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
