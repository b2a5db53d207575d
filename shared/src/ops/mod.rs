//! What operators reach on every long-running service: Prometheus metrics, liveness and
//! readiness, on a listener of its own (`HERALD_OPS_LISTEN`), apart from any public port.
//!
//! - [`metrics`]: every metric's name, help and unit; the recorder.
//! - [`health`]: the readiness decision and the state the service's tasks report into.

pub mod health;
pub mod metrics;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use health::Health;
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The ops listener's settings, shared by every long-running binary.
#[derive(Debug, Clone, clap::Args)]
pub struct OpsConfig {
    /// Address of the ops listener (GET /metrics, /livez, /readyz), or `off`. Defaults:
    /// scheduler 127.0.0.1:9410, worker 127.0.0.1:9411, receiver 127.0.0.1:9412, admin
    /// 127.0.0.1:9413 (use 0.0.0.0:PORT in a container).
    #[arg(long, env = "HERALD_OPS_LISTEN", value_parser = parse_listen)]
    pub ops_listen: Option<Listen>,

    /// Label message counters with their campaign id too: one series per campaign, so only
    /// where campaigns are few (tenant, provider and outcome are always labels).
    #[arg(long, env = "HERALD_METRICS_CAMPAIGN_LABELS", default_value_t = false, action = clap::ArgAction::Set)]
    pub metrics_campaign_labels: bool,
}

/// A service's default ops address: loopback, on its own port.
pub const fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), port)
}

/// Where the ops listener listens, if anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    At(SocketAddr),
    Off,
}

fn parse_listen(value: &str) -> Result<Listen, String> {
    if value.eq_ignore_ascii_case("off") {
        return Ok(Listen::Off);
    }
    value
        .parse()
        .map(Listen::At)
        .map_err(|_| "must be HOST:PORT (an IP address and a port) or `off`".into())
}

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("metrics: {0}")]
    Metrics(String),
    #[error("cannot listen on {addr} for metrics and health (HERALD_OPS_LISTEN): {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// How long an ops connection may take to send a request head, or stay idle: longer than
/// the usual scrape and probe intervals, so their kept-alive connections are reused.
const OPS_HEAD_TIMEOUT: Duration = Duration::from_secs(75);

/// Installs the metrics recorder and starts the ops listener (unless `off`); returns the
/// health the service's tasks report into, with `checks` failing until first reported.
pub async fn start(
    config: &OpsConfig,
    default_listen: SocketAddr,
    checks: &[&'static str],
) -> Result<Health, OpsError> {
    let handle = metrics::install(config.metrics_campaign_labels).map_err(OpsError::Metrics)?;
    let health = Health::new(checks);
    let addr = match config.ops_listen.unwrap_or(Listen::At(default_listen)) {
        Listen::At(addr) => addr,
        Listen::Off => return Ok(health),
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| OpsError::Bind { addr, source })?;
    let addr = listener.local_addr().unwrap_or(addr);
    let process = metrics_process::Collector::default();
    process.describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        // Histograms keep their samples until upkeep folds them in.
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(Scrape {
            handle,
            process: std::sync::Arc::new(process),
            health: health.clone(),
        });
    // Lives as long as the process; with the head deadline the services' own listeners have,
    // so a connection to it that says nothing is not kept for ever either.
    tokio::spawn(crate::serve::serve(
        listener,
        app,
        OPS_HEAD_TIMEOUT,
        tokio_util::sync::CancellationToken::new(),
    ));
    tracing::info!(%addr, "metrics at /metrics, health at /livez and /readyz");
    Ok(health)
}

#[derive(Clone)]
struct Scrape {
    handle: PrometheusHandle,
    process: std::sync::Arc<metrics_process::Collector>,
    health: Health,
}

async fn render(State(scrape): State<Scrape>) -> Response {
    scrape.process.collect();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        scrape.handle.render(),
    )
        .into_response()
}

async fn ready(State(scrape): State<Scrape>) -> Response {
    let readiness = scrape.health.readiness();
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(readiness)).into_response()
}

/// Keeps the `database` check current: a read of the schema's migrations every second,
/// failing after 2 s, on a connection of its own to `pool`'s database. On one of the
/// pool's, a busy service (the admin's streaming uploads hold most of its connections) read
/// as a database that is down, and every replica left its Service at once. A database
/// without this build's migrations fails the check too: a service started before the
/// migrate step (or after an upgrade that skipped it) would otherwise be ready, and fail
/// every statement that needs what they add.
pub fn watch_database(health: &Health, pool: sqlx::PgPool) {
    let health = health.clone();
    let pool = crate::db::listener_pool((*pool.connect_options()).clone());
    let needed = crate::db::MIGRATOR
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let result = tokio::time::timeout(
                Duration::from_secs(2),
                sqlx::query_scalar::<_, Option<i64>>(
                    "SELECT max(version) FROM _sqlx_migrations WHERE success",
                )
                .fetch_one(&pool),
            )
            .await;
            health.report(
                "database",
                match result {
                    Ok(Ok(applied)) => schema_state(applied, needed),
                    Ok(Err(error)) if is_undefined_table(&error) => schema_state(None, needed),
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => Err("no answer within 2 s".into()),
                },
            );
        }
    });
}

/// Waits until the `database` check ([`watch_database`]) first passes; `false` if
/// `shutdown` came first. A worker or scheduler started before the migrate step (a rollout
/// applied before its migration Job, a scale-up in that window) would otherwise work on a
/// schema behind its build: being not ready takes no work away from them (workers have no
/// Service, a scheduler leads regardless), and their failing writes would cost recipients
/// attempts. Later outages are each statement's to ride out.
pub async fn database_first_passes(
    health: &Health,
    shutdown: &tokio_util::sync::CancellationToken,
) -> bool {
    let mut said = None;
    loop {
        let Some(why) = health.failing("database") else {
            if said.is_some() {
                tracing::info!("the database is ready: starting work");
            }
            return true;
        };
        if said.as_ref() != Some(&why) {
            tracing::warn!(reason = %why, "waiting for the database before any work");
            said = Some(why);
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
            () = shutdown.cancelled() => return false,
        }
    }
}

/// Whether a schema whose latest migration is `applied` has what a build needing `needed`
/// reads and writes. A later one (an upgrade's new replicas migrated it) still has.
fn schema_state(applied: Option<i64>, needed: i64) -> Result<(), String> {
    match applied {
        Some(version) if version >= needed => Ok(()),
        Some(version) => Err(format!(
            "the database schema is at migration {version}, this build needs {needed}: \
             apply the migrations (`herald-scheduler migrate`)"
        )),
        None => Err("the database has no schema: apply the migrations \
                     (`herald-scheduler migrate`)"
            .into()),
    }
}

fn is_undefined_table(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "42P01")
}

/// An axum middleware counting requests and their duration by route (the matched path
/// pattern, so ids in paths do not multiply the series).
pub async fn http_metrics(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    ::metrics::histogram!(metrics::HTTP_REQUEST_DURATION, "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    ::metrics::counter!(metrics::HTTP_REQUESTS, "route" => route, "status" => status).increment(1);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_behind_the_build_is_not_ready() {
        assert_eq!(schema_state(Some(20), 20), Ok(()));
        assert_eq!(
            schema_state(Some(21), 20),
            Ok(()),
            "migrated by a newer build"
        );
        assert!(schema_state(Some(19), 20).is_err_and(|e| e.contains("migrate")));
        assert!(schema_state(None, 20).is_err_and(|e| e.contains("no schema")));
    }

    #[test]
    fn listen_is_an_address_or_off() {
        assert_eq!(parse_listen("off"), Ok(Listen::Off));
        assert_eq!(
            parse_listen("0.0.0.0:9400"),
            Ok(Listen::At("0.0.0.0:9400".parse().unwrap()))
        );
        assert!(parse_listen("localhost").is_err());
    }
}
