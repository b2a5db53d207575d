//! Herald's worker: consumes dispatch messages and calls providers, many requests in flight.
//!
//! - [`consume`]: the supervised RabbitMQ consumer of every provider's lane (reconnects,
//!   drains on shutdown); [`fleet`]: the heartbeat that shares in-flight caps across workers.
//! - [`delivery`]: one delivery's path, decode to ack.
//! - [`attempts`]: the lease and outcome writes, batched (`herald_shared::batch`).
//! - [`providers`]: provider settings, cached; [`adapters`]: each provider API's
//!   requests and answers; [`provider_call`]: the HTTP call.
//! - [`outcome`]: what an answer means (sent, retry with backoff, failed, unknown);
//!   [`reconcile`]: asking the provider about a request whose answer was lost.
//! - [`live_calls`]: the lines a call holds until its final status.
//! - [`pacing`]: fleet-wide rate limits, and [`on_time`]: the paced requests' own thread;
//!   [`in_flight`]: per-provider in-flight caps;
//!   [`breaker`]: circuit breakers for failing providers.

pub mod adapters;
pub mod attempts;
pub mod breaker;
pub mod config;
pub mod consume;
pub mod delivery;
pub mod egress;
pub mod fleet;
pub mod in_flight;
pub mod live_calls;
pub mod on_time;
pub mod outcome;
pub mod pacing;
pub mod provider_call;
pub mod providers;
pub mod reconcile;

use attempts::{Dispatch, Outcome};
use config::WorkerConfig;
use delivery::Context;
use herald_shared::batch::Batcher;
use herald_shared::ops;
use providers::Providers;
use std::future::Future;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Most recipients one begin/record statement covers.
const MAX_BATCH: usize = 500;
/// Lease and outcome statements each in flight at once: two keep a multi-core PostgreSQL
/// busy while the next batch gathers (measured: more throughput at 0 ms provider latency).
const DB_LANES: usize = 2;
/// Where metrics and health are served unless `HERALD_OPS_LISTEN` says otherwise.
const DEFAULT_OPS_LISTEN: std::net::SocketAddr = herald_shared::ops::loopback(9411);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] herald_shared::db::DbError),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Ops(#[from] ops::OpsError),
    #[error("the thread for paced requests: {0}")]
    PacedThread(#[from] std::io::Error),
}

/// Runs until `shutdown` is cancelled and in-flight work is drained (or the drain times out).
pub async fn run(config: WorkerConfig, shutdown: CancellationToken) -> Result<(), StartError> {
    let health = ops::start(&config.ops, DEFAULT_OPS_LISTEN, &["database", "broker"]).await?;
    let pool = herald_shared::db::connect(
        config.connections.database_url.expose(),
        config.connections.db_pool_size,
        &config.connections.tls(),
    )
    .await?;
    ops::watch_database(&health, pool.clone());
    {
        // Not ready from the first moment of the drain: no new work is sent this way.
        let (health, shutdown) = (health.clone(), shutdown.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            health.drain();
        });
    }
    let lease_grace = Duration::from_millis(config.lease_grace_ms);

    // Both writes wait out a database outage, however long, holding their deliveries: an
    // outcome whose request was made must never go back to the queue (it would be sent
    // again), and a delivery handed back while the database is away would only come back
    // at once, again and again, until the queue's delivery limit dead-letters it. A write
    // that fails for any other reason is tried again one by one, so that one bad row holds
    // up nothing else.
    let begin_pool = pool.clone();
    let begin = Batcher::spawn_parallel(MAX_BATCH, DB_LANES, move |dispatches: Vec<Dispatch>| {
        let pool = begin_pool.clone();
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
    });
    let record_pool = pool.clone();
    let record = Batcher::spawn_parallel(MAX_BATCH, DB_LANES, move |outcomes: Vec<Outcome>| {
        let pool = record_pool.clone();
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
    });
    let http = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(usize::from(config.prefetch))
            .tcp_nodelay(true)
            // A provider API answers where it was asked; following a redirect could take a
            // request (and its credentials) anywhere, inside the network included.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
    };
    let allowed = config.provider_allowed_networks.clone().unwrap_or_default();
    let ctx = Context {
        pool: pool.clone(),
        begin,
        record,
        providers: Providers::new(
            pool.clone(),
            config.receiver_url.as_deref(),
            config.credential_keys.keyring(),
        ),
        pacer: pacing::Pacer::new(pool.clone()),
        on_time: on_time::OnTime::start(http, allowed.clone())?,
        in_flight: in_flight::InFlight::default(),
        breakers: breaker::Breakers::new(pool.clone()),
        lease_grace,
        egress: egress::Egress::build(http, allowed)?,
    };

    let tracker = TaskTracker::new();
    let settings = consume::Settings {
        amqp_url: config.connections.amqp_url.expose(),
        pool: pool.clone(),
        id: uuid::Uuid::new_v4(),
        prefetch: config.prefetch,
        drain_timeout: config.drain_timeout(),
        tls: config.connections.tls(),
        health,
    };
    consume::run(ctx, settings, &tracker, &shutdown).await;
    pool.close().await;
    tracing::info!("worker stopped");
    Ok(())
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
