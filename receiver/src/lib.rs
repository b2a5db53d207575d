//! Herald's receipt receiver: the webhooks providers call with the fate of each message or
//! call. A process of its own, so it scales apart from the admin server (providers'
//! callbacks come at up to a few times the send rate), and stateless like the workers.
//!
//! - [`routes`]: one endpoint per API, each naming the provider whose secret signs it;
//! - [`twilio`], [`whatsapp`], [`generic`]: reading each API's receipts;
//! - [`intake`]: why a webhook is refused, and the batched store behind each `2xx`;
//! - [`fair_queue`]: receipts (and recipients' STOP and START) waiting for that store,
//!   taken in turns by owner;
//! - [`providers`]: the providers' secrets, cached;
//! - [`refusals`]: webhooks refused that their providers may have meant, recorded.
//!
//! Signatures are checked by `herald_shared::signature`; receipts are stored and applied to
//! their recipients by `herald_store::receipts`.

pub mod config;
pub mod fair_queue;
pub mod generic;
pub mod intake;
pub mod limits;
pub mod providers;
pub mod refusals;
pub mod routes;
pub mod twilio;
pub mod whatsapp;

use config::ReceiverConfig;
use herald_shared::ops;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

/// Where metrics and health are served unless `HERALD_OPS_LISTEN` says otherwise.
const DEFAULT_OPS_LISTEN: std::net::SocketAddr = herald_shared::ops::loopback(9412);

/// How long after the signal to stop a stop may wait for the receipts still to be stored
/// (see [`intake::Intake::drain`]), the last requests' answers (within their 10 s deadline)
/// included: the manifests give the receiver 30 s to stop, 5 of them before the signal
/// (preStop), and its last write of refusals takes a few more.
const DRAIN_AT_STOP: std::time::Duration = std::time::Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Db(#[from] herald_shared::db::DbError),
    #[error(transparent)]
    Ops(#[from] ops::OpsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Serves until `shutdown` is cancelled.
pub async fn serve(config: ReceiverConfig, shutdown: CancellationToken) -> Result<(), ServeError> {
    let health = ops::start(
        &config.ops,
        DEFAULT_OPS_LISTEN,
        &["database", refusals::START_RECORDED],
    )
    .await?;
    let pool = herald_shared::db::connect_for_short_statements(&config.connections).await?;
    ops::watch_database(&health, pool.clone());
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen,
            source,
        })?;
    let public_url = config.public_url();
    tracing::info!(listen = %config.listen, %public_url, "receipt receiver listening");
    let refusals = refusals::Refusals::default();
    let stop_writing = CancellationToken::new();
    tokio::spawn(refusals::note_start(
        pool.clone(),
        health.clone(),
        stop_writing.clone(),
    ));
    let writing = tokio::spawn(refusals::keep_writing(
        refusals.clone(),
        pool.clone(),
        stop_writing.clone(),
    ));
    let intake = intake::Intake::start(pool.clone());
    let providers = providers::Providers::new(pool.clone(), config.credential_keys.keyring());
    // A provider changed (a secret rotated) is forgotten at once, on a connection of its own.
    let changes = herald_shared::db::bounded_sessions(
        herald_shared::db::options(
            config.connections.database_url.expose(),
            &config.connections.tls(),
        )?,
        config.connections.db_deadline(),
    );
    let mut changes =
        herald_shared::listen::listen(changes, &herald_shared::provider_changes::LISTEN);
    tokio::spawn({
        let providers = providers.clone();
        async move {
            while let Some(id) = changes.recv().await {
                providers.forget(id);
            }
        }
    });
    let state = routes::AppState {
        providers,
        intake: intake.clone(),
        public_url: public_url.into(),
        previous_urls: config.previous_urls.clone().into(),
        health: health.clone(),
        refusals,
        pool: pool.clone(),
    };
    let app =
        routes::router(state, config.limits()).layer(axum::middleware::from_fn(ops::http_metrics));
    // From the signal on, receipts kept while the database was away are tried every
    // 250 ms, while the last requests are answered too.
    let signalled = tokio::spawn({
        let (shutdown, intake) = (shutdown.clone(), intake.clone());
        async move {
            shutdown.cancelled().await;
            intake.stopping();
            tokio::time::Instant::now()
        }
    });
    let stopping = shutdown.clone();
    herald_shared::serve::serve(listener, app, config.head_timeout(), shutdown).await;
    // Receipts kept while the database was away are stored before the pool closes, for as
    // long as the stop's grace allows.
    let signalled = if stopping.is_cancelled() {
        signalled
            .await
            .unwrap_or_else(|_| tokio::time::Instant::now())
    } else {
        signalled.abort();
        tokio::time::Instant::now()
    };
    let left = intake
        .drain(DRAIN_AT_STOP.saturating_sub(signalled.elapsed()))
        .await;
    if left > 0 {
        tracing::error!(
            left,
            "receipts or recipients' STOP and START not stored before the stop: the database stayed away"
        );
    }
    // Its last write, of what the last requests refused.
    stop_writing.cancel();
    let _ = writing.await;
    pool.close().await;
    tracing::info!("receipt receiver stopped");
    Ok(())
}
