//! HTTP handlers: the provider API (`POST /v1/messages`) and the control API.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use uuid::Uuid;

use crate::behaviour::{self, Draws, InvalidNumber, Outcome, Request};
use crate::config::BehaviourConfig;
use crate::rate_limit::SlidingLog;
use crate::stats::{Arrival, Clock, Stats};

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// Shared state of the server.
pub struct AppState {
    clock: Clock,
    inner: Mutex<Inner>,
    shutdown: watch::Sender<bool>,
}

struct Inner {
    config: BehaviourConfig,
    limiter: SlidingLog,
    stats: Stats,
}

impl AppState {
    pub fn new(config: BehaviourConfig) -> Arc<Self> {
        let clock = Clock::new();
        let stats = Stats::new(clock.now_ms());
        Arc::new(Self {
            clock,
            inner: Mutex::new(Inner {
                config,
                limiter: SlidingLog::new(),
                stats,
            }),
            shutdown: watch::Sender::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Cuts every pending latency and timeout hold short so in-flight requests answer now.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    async fn pause(&self, delay: Duration) {
        if delay.is_zero() {
            return;
        }
        let mut stop = self.shutdown.subscribe();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|stopping| *stopping) => {}
        }
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/messages", post(send_message))
        .route("/control/stats", get(stats))
        .route("/control/requests", get(key_requests))
        .route("/control/config", get(get_config).put(put_config))
        .route("/control/reset", post(reset))
        .route("/healthz", get(healthz))
        .with_state(state)
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, JSON)], body).into_response()
}

fn error_body(code: &str, message: &str) -> String {
    json!({"error": {"code": code, "message": message}}).to_string()
}

#[derive(Deserialize)]
struct MessageRequest {
    to: String,
    #[allow(dead_code)] // required by the API, otherwise unused
    body: String,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    metadata: Option<Metadata>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    tenant_id: Option<String>,
    #[serde(default)]
    campaign_id: Option<String>,
}

fn new_message_id() -> Uuid {
    uuid::Builder::from_random_bytes(rand::rng().random()).into_uuid()
}

/// `POST /v1/messages`
async fn send_message(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrived_ms = app.clock.now_ms();
    let key = match headers.get(IDEMPOTENCY_KEY).map(HeaderValue::to_str) {
        None => Ok(None),
        Some(Ok(k)) if k.trim().is_empty() => Ok(None),
        Some(Ok(k)) => Ok(Some(k.trim().to_owned())),
        Some(Err(_)) => Err("the Idempotency-Key header must be visible ASCII".to_owned()),
    };
    let parsed = key.and_then(|key| {
        serde_json::from_slice::<MessageRequest>(&body)
            .map(|msg| (key, msg))
            .map_err(|e| format!("invalid message request: {e}"))
    });
    let draws = Draws::sample(&mut rand::rng());

    let (decision, id) = {
        let mut guard = app.lock();
        let inner = &mut *guard;
        let (key, msg) = match &parsed {
            Ok((key, msg)) => (key.as_deref(), Some(msg)),
            Err(_) => (None, None),
        };
        let request = Request {
            to: msg.map(|m| m.to.as_str()),
            key: key.map(|k| inner.stats.key_history(k)),
            arrived_ms,
        };
        let decision = behaviour::decide(&inner.config, &request, &mut inner.limiter, &draws);
        let meta = msg.and_then(|m| m.metadata.as_ref());
        let arrival = Arrival {
            arrived_ms,
            tenant_id: meta.and_then(|m| m.tenant_id.as_deref()),
            campaign_id: meta.and_then(|m| m.campaign_id.as_deref()),
        };
        let id = inner.stats.record(
            &arrival,
            key.map(str::to_owned),
            decision.outcome,
            new_message_id,
        );
        (decision, id)
    };
    tracing::debug!(
        to = parsed.as_ref().ok().map(|(_, m)| m.to.as_str()),
        channel = parsed.as_ref().ok().and_then(|(_, m)| m.channel.as_deref()),
        status = decision.outcome.status(),
        delay_ms = decision.delay.as_millis() as u64,
        "message request"
    );

    app.pause(decision.delay).await;

    let status = StatusCode::from_u16(decision.outcome.status())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match decision.outcome {
        Outcome::Accepted | Outcome::Duplicate => {
            let id = id.unwrap_or_else(new_message_id);
            let body = format!(r#"{{"id":"sim_{}","status":"accepted"}}"#, id.simple());
            let mut response = json_response(status, body);
            if decision.outcome == Outcome::Duplicate {
                response
                    .headers_mut()
                    .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            }
            response
        }
        Outcome::BadRequest => {
            let message = parsed.err().unwrap_or_default();
            json_response(status, error_body("bad_request", &message))
        }
        Outcome::InvalidNumber(why) => {
            let to = parsed.map(|(_, m)| m.to).unwrap_or_default();
            let message = match why {
                InvalidNumber::NotE164 => format!("{to:?} is not an E.164 phone number"),
                InvalidNumber::Rejected => format!("{to:?} is not a reachable number"),
            };
            json_response(status, error_body("invalid_number", &message))
        }
        Outcome::FailFirst { attempt, of, .. } => {
            let message = format!("simulated failure {attempt} of {of} for this idempotency key");
            let mut response = json_response(status, error_body("simulated_failure", &message));
            if matches!(status.as_u16(), 429 | 503) {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            response
        }
        Outcome::RateLimited { retry_after_secs } => {
            let message = format!("rate limit exceeded; retry after {retry_after_secs} s");
            let mut response = json_response(status, error_body("rate_limited", &message));
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            response
        }
        Outcome::ServerError => json_response(
            status,
            error_body("internal_error", "simulated provider error"),
        ),
        Outcome::Timeout => {
            json_response(status, error_body("timeout", "simulated upstream timeout"))
        }
    }
}

/// `GET /control/stats`
async fn stats(State(app): State<Arc<AppState>>) -> Response {
    let body = {
        let inner = app.lock();
        serde_json::to_string(&inner.stats.report())
    };
    match body {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(e) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            error_body("internal_error", &e.to_string()),
        ),
    }
}

#[derive(Deserialize)]
struct KeyQuery {
    key: Option<String>,
}

/// `GET /control/requests?key=K`
async fn key_requests(State(app): State<Arc<AppState>>, Query(query): Query<KeyQuery>) -> Response {
    let Some(key) = query.key else {
        return json_response(
            StatusCode::BAD_REQUEST,
            error_body("bad_request", "the key query parameter is required"),
        );
    };
    let body = {
        let inner = app.lock();
        serde_json::to_string(inner.stats.key_events(key.trim()))
    };
    json_response(StatusCode::OK, body.unwrap_or_else(|_| "[]".to_owned()))
}

fn config_json(config: &BehaviourConfig) -> Response {
    match serde_json::to_string(config) {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(e) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            error_body("internal_error", &e.to_string()),
        ),
    }
}

/// `GET /control/config`
async fn get_config(State(app): State<Arc<AppState>>) -> Response {
    let config = app.lock().config.clone();
    config_json(&config)
}

fn field_error(field: &str, message: &str) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        json!({"error": {"field": field, "message": message}}).to_string(),
    )
}

/// `PUT /control/config` — a partial update: absent fields keep their value.
async fn put_config(State(app): State<Arc<AppState>>, body: Bytes) -> Response {
    let patch = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(patch)) => patch,
        Ok(_) => return field_error("body", "expected a JSON object"),
        Err(e) => return field_error("body", &format!("invalid JSON: {e}")),
    };
    let updated = {
        let mut inner = app.lock();
        match inner.config.patched(&patch) {
            Ok(next) => {
                if next.rate_limit.is_none() {
                    inner.limiter.clear();
                }
                inner.config = next.clone();
                Ok(next)
            }
            Err(e) => Err(e),
        }
    };
    match updated {
        Ok(config) => {
            let shown = serde_json::to_string(&config).unwrap_or_default();
            tracing::info!(config = %shown, "behaviour config updated");
            config_json(&config)
        }
        Err(e) => field_error(&e.field, &e.error.to_string()),
    }
}

/// `POST /control/reset` — clears statistics, key histories and the rate-limit window.
async fn reset(State(app): State<Arc<AppState>>) -> Response {
    let (started_ms, old) = {
        let mut inner = app.lock();
        let now = app.clock.now_ms();
        let old = std::mem::replace(&mut inner.stats, Stats::new(now));
        inner.limiter.clear();
        (now, old)
    };
    // Free the old histories outside the lock.
    drop(old);
    tracing::info!(started_ms, "statistics reset");
    json_response(
        StatusCode::OK,
        json!({"status": "reset", "started_ms": started_ms}).to_string(),
    )
}

/// `GET /healthz`
async fn healthz() -> &'static str {
    "ok"
}
