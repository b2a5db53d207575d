//! Herald's admin server: the JSON API, its OpenAPI document and the web page, over the same
//! PostgreSQL the scheduler and the workers use.
//!
//! - [`api`]: the `/api/v1` resources, one module each.
//! - [`auth`]: API keys and the caller's tenant scope.
//! - [`error`]: every failure as a JSON error naming the field or row.
//! - [`upload`] and [`staging`]: streamed, all-or-nothing audience uploads;
//!   [`upload_slots`]: how many run at once; [`limits`]: what input may hold.
//! - [`validate`]: single-value checks (E.164, names, times); [`endpoints`]: where tenants'
//!   providers may point.
//! - [`request_deadline`]: every request but an upload answered in bounded time.
//! - [`idempotency`]: a create sent again with its key answers what the first one made.
//! - [`web`]: the page.

pub mod api;
pub mod auth;
pub mod config;
pub mod endpoints;
pub mod error;
pub mod idempotency;
pub mod limits;
pub mod phone;
pub mod request_deadline;
pub mod reseal;
pub mod security_headers;
pub mod staging;
pub mod state;
pub mod tenant_turns;
pub mod upload;
pub mod upload_slots;
pub mod validate;
pub mod web;

use axum::Router;
use axum::routing::get;
use config::AdminConfig;
use herald_shared::ops;
use state::AppState;
use tokio_util::sync::CancellationToken;

/// Where metrics and health are served unless `HERALD_OPS_LISTEN` says otherwise.
const DEFAULT_OPS_LISTEN: std::net::SocketAddr = herald_shared::ops::loopback(9413);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Db(#[from] herald_shared::db::DbError),
    #[error(transparent)]
    Ops(#[from] ops::OpsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// The whole application, given its state.
pub fn app(state: AppState) -> Router {
    let bounded = axum::middleware::from_fn_with_state(state.clone(), request_deadline::bound);
    // Inside the deadline: waiting for a turn counts against it.
    let turns = axum::middleware::from_fn_with_state(state.clone(), tenant_turns::take_turn);
    let router = Router::new()
        .nest(
            api::BASE,
            api::router().route_layer(turns).route_layer(bounded),
        )
        .merge(web::router())
        .route("/healthz", get(|| async { "ok" }));
    security_headers::apply(router).with_state(state)
}

/// Serves until `shutdown`, then finishes the requests in progress.
pub async fn serve(config: AdminConfig, shutdown: CancellationToken) -> Result<(), ServeError> {
    let health = ops::start(&config.ops, DEFAULT_OPS_LISTEN, &["database"]).await?;
    // A statement, or a transaction left idle (an upload whose client went quiet), never
    // holds a connection for long: the pool is shared by every tenant's requests.
    let idle_in_transaction = config.upload_idle_timeout_ms + 20_000;
    // PostgreSQL ends, on its side, the sessions of an admin cut off from it (an upload's
    // transaction and its locks among them) within about a database deadline and 15 s; on
    // this side, a request waits at most its deadline (`request_deadline`).
    let options = herald_shared::db::within_tcp_bounds(
        herald_shared::db::options(
            config.connections.database_url.expose(),
            &config.connections.tls(),
        )?,
        config.connections.db_deadline(),
    )
    .options([
        (
            "statement_timeout",
            format!("{}ms", config.statement_timeout_ms),
        ),
        (
            "idle_in_transaction_session_timeout",
            format!("{idle_in_transaction}ms"),
        ),
    ]);
    let pool = herald_shared::db::connect_with(options, config.connections.db_pool_size).await?;
    ops::watch_database(&health, pool.clone());
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen,
            source,
        })?;
    tracing::info!(listen = %config.listen, "admin server listening");
    let state = AppState {
        pool,
        uploads: upload_slots::UploadSlots::new(
            config.max_uploads(),
            config.max_uploads_per_tenant as usize,
        ),
        turns: tenant_turns::TenantTurns::new(config.max_requests_per_tenant()),
        upload_idle: std::time::Duration::from_millis(config.upload_idle_timeout_ms),
        upload_within: std::time::Duration::from_millis(config.upload_timeout_ms),
        request_deadline: std::time::Duration::from_millis(config.request_timeout_ms),
        keyring: config.credential_keys.keyring(),
        max_active_campaigns: i64::from(config.max_active_campaigns_per_tenant),
        max_segments: i64::from(config.max_segments_per_tenant),
        max_providers: i64::from(config.max_providers_per_tenant),
        endpoints: endpoints::EndpointPolicy {
            allowed: config.provider_allowed_networks.clone().unwrap_or_default(),
        },
    };
    let app = app(state).layer(axum::middleware::from_fn(ops::http_metrics));
    let head_timeout = std::time::Duration::from_millis(config.head_timeout_ms);
    herald_shared::serve::serve(listener, app, head_timeout, shutdown).await;
    tracing::info!("admin server stopped");
    Ok(())
}
