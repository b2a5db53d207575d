//! Herald's worker: consumes dispatch messages and calls providers, many requests in flight.
//!
//! - [`consume`]: the supervised RabbitMQ consumer of every provider's lane (reconnects,
//!   drains on shutdown); [`fleet`]: the heartbeat that shares in-flight caps across workers,
//!   and each lane's prefetch (in messages of several recipients) from its share.
//! - [`delivery`]: one delivery's path, decode to ack (a delivery carries a batch of
//!   recipients, each taking the path on its own).
//! - [`attempts`]: a decision turned into the store's outcome (`herald_store::recipients`
//!   holds the lease and outcome statements); [`writes`]: them batched
//!   (`herald_shared::batch`), riding out database outages.
//! - [`providers`]: provider settings, cached; [`adapters`]: each provider API's
//!   requests and answers; [`provider_call`]: the HTTP call.
//! - [`outcome`]: what an answer means (sent, retry with backoff, failed, unknown);
//!   [`reconcile`]: asking the provider about a request whose answer was lost.
//! - [`live_calls`]: the lines a call holds until its final status.
//! - [`pacing`]: fleet-wide rate limits, and [`on_time`]: the paced requests' own thread;
//!   [`in_flight`]: per-provider in-flight caps;
//!   [`breaker`]: circuit breakers for failing providers.
//! - [`webhooks`]: posting transactional messages' status events to their tenants'
//!   webhooks.

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
pub mod recheck;
pub mod reconcile;
pub mod webhooks;
pub mod writes;

use config::WorkerConfig;
use delivery::Context;
use herald_shared::ops;
use providers::Providers;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
    let pool = herald_shared::db::connect_for_short_statements(&config.connections).await?;
    ops::watch_database(&health, pool.clone());
    if !ops::database_first_passes(&health, &shutdown).await {
        return Ok(());
    }
    {
        // Not ready from the first moment of the drain: no new work is sent this way.
        let (health, shutdown) = (health.clone(), shutdown.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            health.drain();
        });
    }
    let lease_grace = Duration::from_millis(config.lease_grace_ms);

    let connect_timeout = Duration::from_millis(config.connect_timeout_ms);
    let http = || egress::client_builder(usize::from(config.prefetch), connect_timeout);
    let allowed = config.provider_allowed_networks.clone().unwrap_or_default();
    let ctx = Context {
        pool: pool.clone(),
        begin: writes::begin(pool.clone(), lease_grace),
        record: writes::record(pool.clone(), Duration::from_secs(config.max_deferral_s)),
        providers: Providers::new(
            pool.clone(),
            config.receiver_url.as_deref(),
            config.credential_keys.keyring(),
        ),
        pacer: pacing::Pacer::new(pool.clone()),
        recheck: recheck::Recheck::new(pool.clone()),
        on_time: on_time::OnTime::start(http, allowed.clone())?,
        in_flight: in_flight::InFlight::default(),
        breakers: breaker::Breakers::new(pool.clone()),
        lease_grace,
        stopping: shutdown.clone(),
        egress: egress::Egress::build(http, allowed)?,
        unwritten: std::sync::Arc::new(tokio::sync::Semaphore::new(usize::from(config.prefetch))),
    };

    let tracker = TaskTracker::new();
    tracker.spawn(webhooks::run(
        pool.clone(),
        ctx.egress.clone(),
        config.credential_keys.keyring(),
        config.drain_timeout(),
        shutdown.clone(),
    ));
    let settings = consume::Settings {
        amqp_url: config.broker.amqp_url.expose(),
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
