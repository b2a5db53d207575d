//! HTTP handlers: the provider APIs (generic, Twilio, WhatsApp; see [`crate::apis`]) and
//! the control API.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use uuid::Uuid;

use crate::apis::{self, Api, Listed, Parsed};
use crate::behaviour::{self, Draws, Outcome, Request};
use crate::config::BehaviourConfig;
use crate::rate_limit::SlidingLog;
use crate::receipts::{self, Courier, ReceiptResult};
use crate::server::Connection;
use crate::stats::{Arrival, Clock, LookupAnswer, Stats};

const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// Shared state of the server.
pub struct AppState {
    clock: Clock,
    inner: Mutex<Inner>,
    shutdown: watch::Sender<bool>,
    courier: Courier,
}

struct Inner {
    config: BehaviourConfig,
    limiter: SlidingLog,
    stats: Stats,
    /// Twilio messages and calls taken, by recipient, newest first: what the list
    /// endpoints show.
    ledger: Ledger,
}

/// How many messages the list endpoints remember per recipient, and recipients in all.
const LISTED_PER_NUMBER: usize = 20;
const LISTED_NUMBERS: usize = 1_000_000;

#[derive(Default)]
struct Ledger {
    by_number: HashMap<String, VecDeque<Listed>>,
}

impl Ledger {
    fn record(&mut self, listed: Listed) {
        if self.by_number.len() >= LISTED_NUMBERS && !self.by_number.contains_key(&listed.to) {
            return;
        }
        let entries = self.by_number.entry(listed.to.clone()).or_default();
        entries.push_front(listed);
        entries.truncate(LISTED_PER_NUMBER);
    }
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
                ledger: Ledger::default(),
            }),
            shutdown: watch::Sender::new(false),
            courier: Courier::default(),
        })
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    pub fn call_started(&self) {
        self.lock().stats.call_started();
    }

    pub fn call_ended(&self) {
        self.lock().stats.call_ended();
    }

    pub fn receipt_posted(&self, result: ReceiptResult) {
        self.lock().stats.receipt(result);
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
            post(twilio_message).get(twilio_messages_list),
        )
        .route(
            "/2010-04-01/Accounts/{account_sid}/Calls.json",
            post(twilio_call).get(twilio_calls_list),
        )
        .route(
            "/{version}/{phone_number_id}/messages",
            post(whatsapp_message),
        )
        .route("/control/stats", get(stats))
        .route("/control/requests", get(key_requests))
        .route("/control/accepted", get(accepted))
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
    connection: Option<Extension<Connection>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrived_ms = app.clock.now_ms();
    let parsed = apis::parse_generic(&headers, &body);
    serve(app, arrived_ms, &uri, &headers, parsed, connection).await
}

/// `POST /2010-04-01/Accounts/{sid}/Messages.json`
async fn twilio_message(
    State(app): State<Arc<AppState>>,
    connection: Option<Extension<Connection>>,
    Path(account_sid): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrived_ms = app.clock.now_ms();
    let parsed = apis::parse_twilio(false, &account_sid, &headers, &body);
    serve(app, arrived_ms, &uri, &headers, parsed, connection).await
}

/// `POST /2010-04-01/Accounts/{sid}/Calls.json`
async fn twilio_call(
    State(app): State<Arc<AppState>>,
    connection: Option<Extension<Connection>>,
    Path(account_sid): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrived_ms = app.clock.now_ms();
    let parsed = apis::parse_twilio(true, &account_sid, &headers, &body);
    serve(app, arrived_ms, &uri, &headers, parsed, connection).await
}

/// `POST /{version}/{phone_number_id}/messages`
async fn whatsapp_message(
    State(app): State<Arc<AppState>>,
    connection: Option<Extension<Connection>>,
    Path((version, phone_number_id)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrived_ms = app.clock.now_ms();
    let parsed = apis::parse_whatsapp(&version, &phone_number_id, &headers, &body);
    serve(app, arrived_ms, &uri, &headers, parsed, connection).await
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
    connection: Option<Extension<Connection>>,
) -> Response {
    // A provider that has moved: every request is sent elsewhere, and nothing is taken.
    let moved = app.lock().config.redirect_to.clone();
    if let Some(to) = moved {
        let location = format!("{}{}", to.trim_end_matches('/'), uri.path());
        return (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, location)],
            "moved",
        )
            .into_response();
    }
    let draws = Draws::sample(&mut rand::rng());
    let detail = parsed
        .key
        .as_ref()
        .map(|_| apis::detail(parsed.api, "POST", uri.path(), headers, &parsed.fields));
    let (decision, id, config) = {
        let mut guard = app.lock();
        let inner = &mut *guard;
        let key = parsed.key.as_deref();
        // A revoked credential is refused like a missing one (Twilio 20003, Meta 190).
        let revoked = inner
            .config
            .revoked_credential
            .as_ref()
            .is_some_and(|revoked| parsed.credential.as_ref() == Some(revoked));
        let request = Request {
            to: parsed.to.as_deref(),
            key: key.map(|k| inner.stats.key_history(k)),
            arrived_ms,
            authorized: parsed.authorized && !revoked,
            keeps_opt_outs: parsed.api == crate::apis::Api::TwilioMessages,
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
            if decision.failed_after_send {
                500
            } else {
                apis::status(parsed.api, decision.outcome).as_u16()
            },
            new_message_id,
        );
        if let (Some(key), Some(detail)) = (key, detail) {
            inner.stats.attach_detail(key, detail);
        }
        inner.stats.answering();
        if decision.answer_lost {
            inner.stats.answer_lost();
        }
        (decision, id, inner.config.clone())
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

    // A message is sent unless the request failed, or repeats a key the provider honours.
    let replayed = decision.outcome == Outcome::Duplicate && config.honour_idempotency_keys;
    let sends = matches!(decision.outcome, Outcome::Accepted | Outcome::Duplicate) && !replayed;
    let id = match id {
        Some(first) if replayed => first,
        _ => new_message_id(),
    };
    let early = sends
        .then(|| send_receipts(&app, &parsed, &config, id))
        .flatten();

    app.pause(decision.delay).await;
    if let Some(first_receipt) = early {
        let _ = first_receipt.await;
    }
    if decision.answer_lost
        && let Some(Extension(connection)) = connection
    {
        connection.drop_without_answer();
        return std::future::pending().await;
    }

    if decision.failed_after_send {
        // Taken and sent (its receipts come), answered as a failure all the same.
        let (status, extra, body) = apis::respond_failed_after_send(&parsed, id);
        let mut response = json_response(status, body);
        response.headers_mut().extend(extra);
        return response;
    }
    if config.see_other && sends {
        let location = format!("{}/{id}", uri.path().trim_end_matches(".json"));
        return (StatusCode::SEE_OTHER, [(header::LOCATION, location)], "").into_response();
    }
    let (status, extra, body) = apis::respond(&parsed, decision.outcome, id, app.clock.now_ms());
    let mut response = json_response(status, body);
    response.headers_mut().extend(extra);
    if replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

/// Plans and starts the receipts of a message just taken (and lists a Twilio one). Returns,
/// for a send whose first receipt is to come before its answer, when that receipt is out.
fn send_receipts(
    app: &Arc<AppState>,
    parsed: &Parsed,
    config: &BehaviourConfig,
    id: uuid::Uuid,
) -> Option<tokio::sync::oneshot::Receiver<()>> {
    let sent = apis::sent(parsed, config, id);
    if matches!(sent.api, Api::TwilioMessages | Api::TwilioCalls) {
        let body = parsed
            .fields
            .get("Body")
            .and_then(Value::as_str)
            .map(str::to_owned);
        app.lock()
            .ledger
            .record(Listed::of(&sent, body, app.now_ms()));
    }
    let mut rng = rand::rng();
    let (fails, read, early) = (rng.random(), rng.random(), rng.random::<f64>());
    let mut each = || receipts::receipt_draws(&mut rand::rng());
    let plan = receipts::plan(
        &sent,
        config,
        receipts::Draws {
            fails,
            read,
            each: &mut each,
        },
    );
    let early =
        (early < config.receipt_early_rate && sent.destination.is_some() && !plan.is_empty())
            .then(tokio::sync::oneshot::channel);
    let (tell, told) = early.map_or((None, None), |(tx, rx)| (Some(tx), Some(rx)));
    app.courier.deliver(app.clone(), sent, plan, tell);
    told
}

/// `GET /2010-04-01/Accounts/{sid}/Messages.json`
async fn twilio_messages_list(
    State(app): State<Arc<AppState>>,
    Path(account_sid): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    twilio_list(&app, false, &account_sid, &headers, query.as_deref())
}

/// `GET /2010-04-01/Accounts/{sid}/Calls.json`
async fn twilio_calls_list(
    State(app): State<Arc<AppState>>,
    Path(account_sid): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    twilio_list(&app, true, &account_sid, &headers, query.as_deref())
}

fn twilio_list(
    app: &AppState,
    calls: bool,
    account_sid: &str,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Response {
    // A provider that is down answers nothing, its lists included. Twilio's limits are the
    // account's, whatever the request: a list counts against the rate limit as a send does.
    let (down, throttled) = {
        let mut inner = app.lock();
        let now_ms = app.now_ms();
        let down = inner.config.outage;
        let denied = (!down)
            .then(|| {
                inner.config.rate_limit.and_then(|rl| {
                    inner
                        .limiter
                        .try_acquire(now_ms, rl.window_ms, rl.limit)
                        .err()
                })
            })
            .flatten();
        inner.stats.lookup(match (down, &denied) {
            (true, _) => LookupAnswer::Unavailable,
            (false, Some(_)) => LookupAnswer::Throttled,
            (false, None) => LookupAnswer::Listed,
        });
        (down, denied)
    };
    if down {
        let (status, body) = apis::twilio_list_unavailable();
        return json_response(status, body);
    }
    if let Some(denied) = throttled {
        let (status, extra, body) = apis::twilio_list_throttled(denied.retry_after_secs());
        let mut response = json_response(status, body);
        response.headers_mut().extend(extra);
        return response;
    }
    let query: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    let to = query
        .iter()
        .find(|(k, _)| k == "To")
        .map(|(_, v)| v.clone());
    let listed: Vec<Listed> = {
        let inner = app.lock();
        to.and_then(|to| inner.ledger.by_number.get(&to).cloned())
            .unwrap_or_default()
            .into_iter()
            .filter(|item| item.sid.starts_with(if calls { "CA" } else { "SM" }))
            .collect()
    };
    let (status, body) = apis::twilio_list(calls, account_sid, headers, &query, listed.into_iter());
    json_response(status, body)
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

/// `GET /control/accepted`: `{"<key>": <messages sent for it>}`, for every key sent once
/// or more.
async fn accepted(State(app): State<Arc<AppState>>) -> Response {
    let body = {
        let inner = app.lock();
        serde_json::to_string(&inner.stats.accepted_counts())
    };
    json_response(StatusCode::OK, body.unwrap_or_else(|_| "{}".to_owned()))
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
        inner.ledger = Ledger::default();
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
