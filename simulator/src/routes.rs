//! HTTP handlers: the provider APIs (generic, Twilio, WhatsApp; see [`crate::apis`]) and
//! the control API.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use uuid::Uuid;

use crate::apis::{self, Parsed};
use crate::behaviour::{self, Draws, Outcome, Request};
use crate::config::BehaviourConfig;
use crate::rate_limit::SlidingLog;
use crate::stats::{Arrival, Clock, Stats};

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
        .route("/v1/messages", post(generic_message))
        .route(
            "/2010-04-01/Accounts/{account_sid}/Messages.json",
            post(twilio_message),
        )
        .route(
            "/2010-04-01/Accounts/{account_sid}/Calls.json",
            post(twilio_call),
        )
        .route(
            "/{version}/{phone_number_id}/messages",
            post(whatsapp_message),
        )
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

fn new_message_id() -> Uuid {
    uuid::Builder::from_random_bytes(rand::rng().random()).into_uuid()
}

/// `POST /v1/messages`
async fn generic_message(
    State(app): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrived_ms = app.clock.now_ms();
    let parsed = apis::parse_generic(&headers, &body);
    serve(app, arrived_ms, &uri, &headers, parsed).await
}

/// `POST /2010-04-01/Accounts/{sid}/Messages.json`
async fn twilio_message(
    State(app): State<Arc<AppState>>,
    Path(account_sid): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrived_ms = app.clock.now_ms();
    let parsed = apis::parse_twilio(false, &account_sid, &headers, &body);
    serve(app, arrived_ms, &uri, &headers, parsed).await
}

/// `POST /2010-04-01/Accounts/{sid}/Calls.json`
async fn twilio_call(
    State(app): State<Arc<AppState>>,
    Path(account_sid): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrived_ms = app.clock.now_ms();
    let parsed = apis::parse_twilio(true, &account_sid, &headers, &body);
    serve(app, arrived_ms, &uri, &headers, parsed).await
}

/// `POST /{version}/{phone_number_id}/messages`
async fn whatsapp_message(
    State(app): State<Arc<AppState>>,
    Path((version, phone_number_id)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrived_ms = app.clock.now_ms();
    let parsed = apis::parse_whatsapp(&version, &phone_number_id, &headers, &body);
    serve(app, arrived_ms, &uri, &headers, parsed).await
}

/// Marks a request answered when dropped.
struct Answering<'a>(&'a AppState);

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.0.lock().stats.answered();
    }
}

/// Decides, records and answers one message request, whatever its API.
async fn serve(
    app: Arc<AppState>,
    arrived_ms: u64,
    uri: &Uri,
    headers: &HeaderMap,
    parsed: Parsed,
) -> Response {
    let draws = Draws::sample(&mut rand::rng());
    let detail = parsed
        .key
        .as_ref()
        .map(|_| apis::detail(parsed.api, "POST", uri.path(), headers, &parsed.fields));
    let (decision, id) = {
        let mut guard = app.lock();
        let inner = &mut *guard;
        let key = parsed.key.as_deref();
        let request = Request {
            to: parsed.to.as_deref(),
            key: key.map(|k| inner.stats.key_history(k)),
            arrived_ms,
            authorized: parsed.authorized,
        };
        let decision = behaviour::decide(&inner.config, &request, &mut inner.limiter, &draws);
        let arrival = Arrival {
            arrived_ms,
            tenant_id: parsed.tenant_id.as_deref(),
            campaign_id: parsed.campaign_id.as_deref(),
        };
        let id = inner.stats.record_as(
            &arrival,
            key.map(str::to_owned),
            decision.outcome,
            apis::status(parsed.api, decision.outcome).as_u16(),
            new_message_id,
        );
        if let (Some(key), Some(detail)) = (key, detail) {
            inner.stats.attach_detail(key, detail);
        }
        inner.stats.answering();
        (decision, id)
    };
    // Counted out however the request ends, a client that gave up included.
    let _answering = Answering(&app);
    tracing::debug!(
        api = parsed.api.name(),
        to = parsed.raw_to.as_deref(),
        status = decision.outcome.status(),
        delay_ms = decision.delay.as_millis() as u64,
        "message request"
    );

    app.pause(decision.delay).await;

    let id = id.unwrap_or_else(new_message_id);
    let (status, extra, body) = apis::respond(&parsed, decision.outcome, id, app.clock.now_ms());
    let mut response = json_response(status, body);
    response.headers_mut().extend(extra);
    if decision.outcome == Outcome::Duplicate {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    response
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
        let fresh = inner.stats.restart(now);
        let old = std::mem::replace(&mut inner.stats, fresh);
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
