//! Herald's worker: consumes dispatch messages and calls providers, many requests in flight.
//!
//! - [`consume`]: the supervised RabbitMQ consumer of every provider's lane (reconnects,
//!   drains on shutdown); [`fleet`]: the heartbeat that shares in-flight caps across workers.
//! - [`delivery`]: one delivery's path, decode to ack.
//! - [`attempts`]: the lease and outcome writes, batched by [`batch`].
//! - [`providers`]: provider settings, cached; [`adapters`]: each provider API's
//!   requests and answers; [`provider_call`]: the HTTP call.
//! - [`outcome`]: what an answer means (sent, retry with backoff, failed).
//! - [`pacing`]: fleet-wide rate limits, and [`on_time`]: the paced requests' own thread;
//!   [`in_flight`]: per-provider in-flight caps;
//!   [`breaker`]: circuit breakers for failing providers.

pub mod adapters;
pub mod attempts;
pub mod batch;
pub mod breaker;
pub mod config;
pub mod consume;
pub mod delivery;
pub mod fleet;
pub mod in_flight;
pub mod on_time;
pub mod outcome;
pub mod pacing;
pub mod provider_call;
pub mod providers;

use attempts::{Dispatch, Outcome};
use batch::Batcher;
use config::WorkerConfig;
use delivery::Context;
use providers::Providers;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Most recipients one begin/record statement covers.
const MAX_BATCH: usize = 500;
/// Lease and outcome statements each in flight at once: two keep a multi-core PostgreSQL
/// busy while the next batch gathers (measured: more throughput at 0 ms provider latency).
const DB_LANES: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] herald_shared::db::DbError),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the thread for paced requests: {0}")]
    PacedThread(#[from] std::io::Error),
}

/// Runs until `shutdown` is cancelled and in-flight work is drained (or the drain times out).
pub async fn run(config: WorkerConfig, shutdown: CancellationToken) -> Result<(), StartError> {
    let pool = herald_shared::db::connect(
        &config.connections.database_url,
        config.connections.db_pool_size,
    )
    .await?;
    let lease_grace = Duration::from_millis(config.lease_grace_ms);
    let record_retry = Duration::from_millis(config.record_retry_ms);

    let begin_pool = pool.clone();
    let begin = Batcher::spawn_parallel(MAX_BATCH, DB_LANES, move |dispatches: Vec<Dispatch>| {
        let pool = begin_pool.clone();
        async move {
            match attempts::begin(&pool, &dispatches, lease_grace).await {
                Ok(begun) => begun.into_iter().map(Ok).collect(),
                Err(error) => vec![Err(error.to_string()); dispatches.len()],
            }
        }
    });
    let record_pool = pool.clone();
    let record = Batcher::spawn_parallel(MAX_BATCH, DB_LANES, move |outcomes: Vec<Outcome>| {
        let pool = record_pool.clone();
        async move {
            // An outcome is only acked once committed; ride out a short database outage.
            let started = Instant::now();
            let mut pause = Duration::from_millis(100);
            loop {
                match attempts::record(&pool, &outcomes).await {
                    Ok(()) => return vec![Ok(()); outcomes.len()],
                    Err(error) if started.elapsed() + pause > record_retry => {
                        return vec![Err(error.to_string()); outcomes.len()];
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot record outcomes yet; retrying");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
    });
    let http = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(usize::from(config.prefetch))
            .tcp_nodelay(true)
            .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
    };
    let ctx = Context {
        begin,
        record,
        providers: Providers::new(pool.clone()),
        pacer: pacing::Pacer::new(pool.clone()),
        on_time: on_time::OnTime::start(http())?,
        in_flight: in_flight::InFlight::default(),
        breakers: breaker::Breakers::new(pool.clone()),
        lease_grace,
        http: http().build()?,
    };

    let tracker = TaskTracker::new();
    let settings = consume::Settings {
        amqp_url: &config.connections.amqp_url,
        pool: pool.clone(),
        id: uuid::Uuid::new_v4(),
        prefetch: config.prefetch,
        drain_timeout: config.drain_timeout(),
    };
    consume::run(ctx, settings, &tracker, &shutdown).await;
    pool.close().await;
    tracing::info!("worker stopped");
    Ok(())
}
