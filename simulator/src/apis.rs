//! The provider APIs the simulator speaks, as pure functions: what a request means
//! ([`parse_generic`], [`parse_twilio`], [`parse_whatsapp`]) and how each API words an
//! answer ([`respond`]). The behaviour (latency, errors, rate limit, duplicates) is the same
//! for every API; only the wire format differs.
//!
//! - `generic`: `POST /v1/messages`, JSON, `Idempotency-Key` header.
//! - `twilio_messages` / `twilio_calls`: `POST /2010-04-01/Accounts/{sid}/Messages.json` or
//!   `Calls.json`, form-encoded, HTTP Basic auth whose user is the path's AccountSid; the
//!   idempotency key is the `I-Twilio-Idempotency-Token` header. Error bodies are Twilio's
//!   `{"code", "message", "more_info", "status"}`.
//! - `whatsapp`: `POST /{version}/{phone_number_id}/messages`, JSON, Bearer token; the key is
//!   `biz_opaque_callback_data`. Error bodies are Graph's `{"error": {…}}`.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::behaviour::{InvalidNumber, Outcome};
use crate::config::BehaviourConfig;
use crate::receipts::{Destination, Sent};
use crate::stats::RequestDetail;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Generic,
    TwilioMessages,
    TwilioCalls,
    WhatsApp,
}

impl Api {
    pub fn name(self) -> &'static str {
        match self {
            Api::Generic => "generic",
            Api::TwilioMessages => "twilio_messages",
            Api::TwilioCalls => "twilio_calls",
            Api::WhatsApp => "whatsapp",
        }
    }
}

/// Why a request is malformed, in its API's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The API's error code (Twilio's or Graph's; 0 for the generic API).
    pub code: i64,
    pub message: String,
}

/// What the simulator understood of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub api: Api,
    /// The recipient's key (idempotency header or field), if any.
    pub key: Option<String>,
    /// The `to` number as E.164 for the decision; `None` when the request is malformed.
    pub to: Option<String>,
    /// `to` as the client wrote it (for answers).
    pub raw_to: Option<String>,
    pub authorized: bool,
    pub problem: Option<Problem>,
    pub tenant_id: Option<String>,
    pub campaign_id: Option<String>,
    /// The decoded body.
    pub fields: Value,
    /// Twilio's AccountSid from the path.
    pub account_sid: Option<String>,
    /// Twilio: the password of the request's Basic credentials (the auth token receipts are
    /// signed with).
    pub auth_token: Option<String>,
    /// WhatsApp: the phone number id of the path.
    pub phone_number_id: Option<String>,
    /// The secret the request authenticated with (Twilio's auth token, Meta's access
    /// token), to refuse a revoked one.
    pub credential: Option<String>,
}

impl Parsed {
    fn new(api: Api, fields: Value) -> Self {
        Self {
            api,
            key: None,
            to: None,
            raw_to: None,
            authorized: true,
            problem: None,
            tenant_id: None,
            campaign_id: None,
            fields,
            account_sid: None,
            auth_token: None,
            phone_number_id: None,
            credential: None,
        }
    }

    /// Marks the request malformed: the decision answers it 400.
    fn reject(&mut self, code: i64, message: impl Into<String>) {
        if self.problem.is_none() {
            self.problem = Some(Problem {
                code,
                message: message.into(),
            });
        }
        self.to = None;
    }

    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).and_then(Value::as_str)
    }
}

/// What was received, for `/control/requests`.
pub fn detail(
    api: Api,
    method: &str,
    path: &str,
    headers: &HeaderMap,
    fields: &Value,
) -> RequestDetail {
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        shown
            .entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    RequestDetail {
        api: api.name(),
        method: method.to_owned(),
        path: path.to_owned(),
        content_type: header_str(headers, header::CONTENT_TYPE.as_str()).map(str::to_owned),
        headers: shown,
        fields: fields.clone(),
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A key from a header: trimmed, empty = none, `Err` when not visible ASCII.
fn key_header(headers: &HeaderMap, name: &str) -> Result<Option<String>, ()> {
    match headers.get(name).map(HeaderValue::to_str) {
        None => Ok(None),
        Some(Ok(k)) if k.trim().is_empty() => Ok(None),
        Some(Ok(k)) => Ok(Some(k.trim().to_owned())),
        Some(Err(_)) => Err(()),
    }
}

/// Herald's keys are `herald-{campaign id, 32 hex}-{recipient id}`: for APIs without
/// metadata, the campaign's statistics come from there.
pub fn campaign_from_key(key: &str) -> Option<String> {
    let rest = key.strip_prefix("herald-")?;
    let (campaign, _) = rest.split_once('-')?;
    Uuid::try_parse(campaign).ok().map(|id| id.to_string())
}

fn is_form(headers: &HeaderMap) -> bool {
    header_str(headers, header::CONTENT_TYPE.as_str()).is_some_and(|ct| {
        ct.trim()
            .to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    })
}

fn is_json(headers: &HeaderMap) -> bool {
    header_str(headers, header::CONTENT_TYPE.as_str()).is_some_and(|ct| {
        ct.trim()
            .to_ascii_lowercase()
            .starts_with("application/json")
    })
}

/// `POST /v1/messages`: `{"to", "body", "channel"?, "metadata"?}`.
pub fn parse_generic(headers: &HeaderMap, body: &[u8]) -> Parsed {
    let fields = serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    let mut parsed = Parsed::new(Api::Generic, fields);
    let key = match key_header(headers, "idempotency-key") {
        Ok(key) => key,
        Err(()) => {
            parsed.reject(0, "the Idempotency-Key header must be visible ASCII");
            return parsed;
        }
    };
    #[derive(serde::Deserialize)]
    struct MessageRequest {
        to: String,
        #[allow(dead_code)] // required by the API, otherwise unused
        body: String,
        #[serde(default)]
        metadata: Option<Metadata>,
    }
    #[derive(serde::Deserialize)]
    struct Metadata {
        #[serde(default)]
        tenant_id: Option<String>,
        #[serde(default)]
        campaign_id: Option<String>,
    }
    match serde_json::from_slice::<MessageRequest>(body) {
        Ok(message) => {
            parsed.key = key;
            parsed.to = Some(message.to.clone());
            parsed.raw_to = Some(message.to);
            let meta = message.metadata;
            parsed.tenant_id = meta.as_ref().and_then(|m| m.tenant_id.clone());
            parsed.campaign_id = meta.and_then(|m| m.campaign_id);
        }
        Err(e) => parsed.reject(0, format!("invalid message request: {e}")),
    }
    parsed
}

/// A Twilio API key's SID: `SK` and 32 hex digits.
fn is_api_key_sid(user: &str) -> bool {
    user.len() == 34
        && user.starts_with("SK")
        && user[2..].bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `user:password` of a Basic Authorization header.
fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = header_str(headers, header::AUTHORIZATION.as_str())?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// The form's fields as JSON: name → value, or a list for repeated names.
fn form_fields(body: &[u8]) -> Value {
    let mut map = Map::new();
    for (name, value) in form_urlencoded::parse(body) {
        let value = Value::String(value.into_owned());
        match map.get_mut(name.as_ref()) {
            Some(Value::Array(values)) => values.push(value),
            Some(first) => *first = Value::Array(vec![first.take(), value]),
            None => {
                map.insert(name.into_owned(), value);
            }
        }
    }
    Value::Object(map)
}

/// `POST /2010-04-01/Accounts/{sid}/Messages.json` (or `Calls.json` when `calls`).
pub fn parse_twilio(calls: bool, account_sid: &str, headers: &HeaderMap, body: &[u8]) -> Parsed {
    // Twilio reads the body as a form; anything else is as good as an empty form.
    let fields = if is_form(headers) {
        form_fields(body)
    } else {
        Value::Object(Map::new())
    };
    let api = if calls {
        Api::TwilioCalls
    } else {
        Api::TwilioMessages
    };
    let mut parsed = Parsed::new(api, fields);
    parsed.account_sid = Some(account_sid.to_owned());
    let credentials = basic_auth(headers);
    // The account and its auth token, or one of its API keys (`SK…`) and the key's secret.
    let api_key = credentials
        .as_ref()
        .is_some_and(|(user, _)| is_api_key_sid(user));
    parsed.authorized = credentials.as_ref().is_some_and(|(user, password)| {
        (user == account_sid || is_api_key_sid(user)) && !password.is_empty()
    });
    parsed.credential = credentials.map(|(_, password)| password);
    // Twilio signs callbacks with the account's auth token, which a request made with an API
    // key does not carry: those are signed with the one configured, if any (see `sent`).
    parsed.auth_token = if api_key {
        None
    } else {
        parsed.credential.clone()
    };
    parsed.key = key_header(headers, "i-twilio-idempotency-token").unwrap_or(None);
    parsed.campaign_id = parsed.key.as_deref().and_then(campaign_from_key);
    parsed.raw_to = parsed.field("To").map(str::to_owned);
    // `whatsapp:+1555…` and the like: the number is after the channel prefix.
    parsed.to = parsed
        .raw_to
        .as_deref()
        .map(|to| to.rsplit(':').next().unwrap_or(to).to_owned());
    let has = |p: &Parsed, name: &str| p.field(name).is_some_and(|v| !v.is_empty());
    // The codes for missing parameters are the simulator's best reading of Twilio's docs.
    if calls {
        if !has(&parsed, "To") {
            parsed.reject(21201, "No 'To' number is specified");
        } else if !has(&parsed, "From") {
            parsed.reject(21213, "No 'From' number is specified");
        } else if !["Url", "Twiml", "ApplicationSid"]
            .iter()
            .any(|n| has(&parsed, n))
        {
            parsed.reject(
                21205,
                "A 'Url', 'Twiml' or 'ApplicationSid' parameter is required.",
            );
        }
    } else if !has(&parsed, "To") {
        parsed.reject(21604, "A 'To' phone number is required.");
    } else if !has(&parsed, "From") && !has(&parsed, "MessagingServiceSid") {
        parsed.reject(
            21603,
            "A 'From' or 'MessagingServiceSid' parameter is required.",
        );
    } else if !["Body", "MediaUrl", "ContentSid"]
        .iter()
        .any(|n| has(&parsed, n))
    {
        parsed.reject(21602, "Message body is required.");
    }
    parsed
}

/// `POST /{version}/{phone_number_id}/messages`.
pub fn parse_whatsapp(
    version: &str,
    phone_number_id: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Parsed {
    let json = is_json(headers);
    let fields = if json {
        serde_json::from_slice::<Value>(body).unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    let mut parsed = Parsed::new(Api::WhatsApp, fields);
    parsed.phone_number_id = Some(phone_number_id.to_owned());
    parsed.credential = header_str(headers, header::AUTHORIZATION.as_str())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty())
        .map(|(_, token)| token.trim().to_owned());
    parsed.authorized = parsed.credential.is_some();
    parsed.key = parsed
        .field("biz_opaque_callback_data")
        .filter(|k| !k.trim().is_empty())
        .map(|k| k.trim().to_owned());
    parsed.campaign_id = parsed.key.as_deref().and_then(campaign_from_key);
    parsed.raw_to = parsed.field("to").map(str::to_owned);
    parsed.to = parsed
        .raw_to
        .as_deref()
        .map(|to| format!("+{}", to.strip_prefix('+').unwrap_or(to)));

    let version_ok = version
        .strip_prefix('v')
        .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
    let str_at = |pointer: &str| parsed.fields.pointer(pointer).and_then(Value::as_str);
    let invalid = |message: &str| Some((100, message.to_owned()));
    let problem = if !version_ok || !phone_number_id.bytes().all(|b| b.is_ascii_digit()) {
        invalid("Unknown path components")
    } else if !json {
        invalid("(#100) The request body must be JSON (Content-Type: application/json)")
    } else if !parsed.fields.is_object() {
        invalid("(#100) Invalid JSON in the request body")
    } else if str_at("/messaging_product") != Some("whatsapp") {
        invalid("(#100) The parameter messaging_product is required.")
    } else if parsed.raw_to.is_none() {
        invalid("(#100) The parameter to is required.")
    } else {
        match str_at("/type").unwrap_or("text") {
            "text" if str_at("/text/body").is_none_or(str::is_empty) => {
                invalid("(#100) The parameter text['body'] is required.")
            }
            "template" if str_at("/template/name").is_none() => {
                invalid("(#100) The parameter template['name'] is required.")
            }
            "template" if str_at("/template/language/code").is_none() => {
                invalid("(#100) The parameter template['language']['code'] is required.")
            }
            "text" | "template" => None,
            _ => Some((131051, "Unsupported message type".to_owned())),
        }
    };
    if let Some((code, message)) = problem {
        parsed.reject(code, message);
    }
    parsed
}

/// The provider's id of a message or call, as its API writes ids.
pub fn message_id(api: Api, id: Uuid) -> String {
    match api {
        Api::Generic => format!("sim_{}", id.simple()),
        Api::TwilioMessages => format!("SM{}", id.simple()),
        Api::TwilioCalls => format!("CA{}", id.simple()),
        Api::WhatsApp => format!("wamid.{}", id.simple()),
    }
}

/// The message a taken request became, for its receipts: where they go comes from the
/// request (Twilio's `StatusCallback`, the generic `callback_url`) or, for WhatsApp, the
/// app's webhook in `cfg`.
pub fn sent(parsed: &Parsed, cfg: &BehaviourConfig, id: Uuid) -> Sent {
    let field = |name: &str| {
        parsed
            .field(name)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let destination = match parsed.api {
        Api::TwilioMessages | Api::TwilioCalls => field("StatusCallback")
            .zip(
                parsed
                    .auth_token
                    .clone()
                    .or_else(|| cfg.twilio_auth_token.clone()),
            )
            .map(|(url, auth_token)| Destination::Twilio { url, auth_token }),
        Api::WhatsApp => cfg
            .whatsapp_webhook_url
            .clone()
            .map(|url| Destination::WhatsApp {
                url,
                app_secret: cfg.whatsapp_app_secret.clone(),
            }),
        Api::Generic => field("callback_url").map(|url| Destination::Herald {
            url,
            secret: cfg.webhook_secret.clone(),
        }),
    };
    let call_events = match parsed.fields.get("StatusCallbackEvent") {
        Some(Value::String(one)) => one.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(many)) => many
            .iter()
            .filter_map(Value::as_str)
            .flat_map(str::split_whitespace)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    Sent {
        api: parsed.api,
        message_id: message_id(parsed.api, id),
        key: parsed.key.clone(),
        to: parsed.raw_to.clone().unwrap_or_default(),
        from: field("From").unwrap_or_else(|| "+15005550006".to_owned()),
        account_sid: parsed.account_sid.clone().unwrap_or_default(),
        phone_number_id: parsed.phone_number_id.clone().unwrap_or_default(),
        destination,
        call_events,
    }
}

/// One message or call as Twilio's list endpoints show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listed {
    pub sid: String,
    pub to: String,
    pub from: String,
    pub body: Option<String>,
    pub date_created: String,
    pub status: &'static str,
}

impl Listed {
    pub fn of(sent: &Sent, body: Option<String>, now_ms: u64) -> Self {
        Self {
            sid: sent.message_id.clone(),
            to: sent.to.clone(),
            from: sent.from.clone(),
            body,
            date_created: rfc2822(now_ms),
            status: if sent.api == Api::TwilioCalls {
                "queued"
            } else {
                "sent"
            },
        }
    }
}

/// `GET …/Messages.json` or `Calls.json`: the page of `listed` (newest first) filtered by
/// `To` and `From`, or 401 without the account's credentials.
pub fn twilio_list(
    calls: bool,
    account_sid: &str,
    headers: &HeaderMap,
    query: &[(String, String)],
    listed: impl Iterator<Item = Listed>,
) -> (StatusCode, String) {
    // As for a send: the account and its auth token, or one of its API keys and the key's
    // secret (Twilio takes either for any REST call).
    let authorized = basic_auth(headers).is_some_and(|(user, password)| {
        (user == account_sid || is_api_key_sid(&user)) && !password.is_empty()
    });
    if !authorized {
        return (
            StatusCode::UNAUTHORIZED,
            twilio_error(401, 20003, "Authenticate"),
        );
    }
    let get = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let page_size = get("PageSize")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(50)
        .clamp(1, 1000);
    let items: Vec<Listed> = listed
        .filter(|item| get("From").is_none_or(|from| item.from == from))
        .take(page_size)
        .collect();
    let resource = if calls { "Calls" } else { "Messages" };
    let uri = format!("/2010-04-01/Accounts/{account_sid}/{resource}.json");
    let list = if calls { "calls" } else { "messages" };
    (
        StatusCode::OK,
        json!({list: items, "page": 0, "page_size": page_size, "start": 0, "end": items.len(),
               "uri": uri, "first_page_uri": uri, "next_page_uri": null,
               "previous_page_uri": null})
        .to_string(),
    )
}

/// An answer: status, extra headers, JSON body.
pub type Answer = (StatusCode, Vec<(header::HeaderName, HeaderValue)>, String);

/// The answer to `outcome` in the request's API. `id` is the message id for a success;
/// `now_ms` stamps Twilio's dates.
pub fn respond(parsed: &Parsed, outcome: Outcome, id: Uuid, now_ms: u64) -> Answer {
    let status = status(parsed.api, outcome);
    let mut extra = Vec::new();
    let retry_after = match outcome {
        Outcome::RateLimited { retry_after_secs } => Some(retry_after_secs),
        Outcome::FailFirst {
            status: 429 | 503, ..
        } => Some(1),
        _ => None,
    };
    if let Some(secs) = retry_after {
        extra.push((header::RETRY_AFTER, HeaderValue::from(secs)));
    }
    let body = match parsed.api {
        Api::Generic => generic_body(parsed, outcome, id),
        Api::TwilioMessages | Api::TwilioCalls => {
            if outcome == Outcome::Unauthorized {
                extra.push((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"Twilio API\""),
                ));
            }
            twilio_body(parsed, outcome, id, now_ms)
        }
        Api::WhatsApp => whatsapp_body(parsed, outcome, id),
    };
    (status, extra, body)
}

/// The answer to a request taken (the message sent) whose provider failed all the same: a
/// 500, with Twilio's 20500, Meta's code 2 ("service temporarily unavailable", which Meta
/// also answers on a 503, when nothing was sent) or a generic error.
pub fn respond_failed_after_send(parsed: &Parsed, id: Uuid) -> Answer {
    let body = match parsed.api {
        Api::Generic => generic_body(parsed, Outcome::ServerError, id),
        Api::TwilioMessages | Api::TwilioCalls => twilio_body(parsed, Outcome::ServerError, id, 0),
        Api::WhatsApp => whatsapp_body(parsed, Outcome::Unavailable, id),
    };
    (StatusCode::INTERNAL_SERVER_ERROR, Vec::new(), body)
}

/// The HTTP status `api` answers `outcome` with: Twilio creates resources (201).
pub fn status(api: Api, outcome: Outcome) -> StatusCode {
    match (api, outcome) {
        (Api::TwilioMessages | Api::TwilioCalls, Outcome::Accepted | Outcome::Duplicate) => {
            StatusCode::CREATED
        }
        _ => StatusCode::from_u16(outcome.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

fn to_shown(parsed: &Parsed) -> &str {
    parsed.raw_to.as_deref().unwrap_or_default()
}

fn simulated_failure(outcome: Outcome) -> String {
    match outcome {
        Outcome::FailFirst { attempt, of, .. } => {
            format!("simulated failure {attempt} of {of} for this idempotency key")
        }
        _ => String::new(),
    }
}

fn generic_body(parsed: &Parsed, outcome: Outcome, id: Uuid) -> String {
    let error = |code: &str, message: &str| {
        json!({"error": {"code": code, "message": message}}).to_string()
    };
    match outcome {
        Outcome::Accepted | Outcome::Duplicate => {
            format!(
                r#"{{"id":"{}","status":"accepted"}}"#,
                message_id(Api::Generic, id)
            )
        }
        Outcome::Unauthorized => error("unauthorized", "missing credentials"),
        Outcome::BadRequest => error(
            "bad_request",
            &parsed
                .problem
                .as_ref()
                .map(|p| p.message.clone())
                .unwrap_or_default(),
        ),
        Outcome::InvalidNumber(why) => {
            let to = to_shown(parsed);
            let message = match why {
                InvalidNumber::NotE164 => format!("{to:?} is not an E.164 phone number"),
                InvalidNumber::Rejected => format!("{to:?} is not a reachable number"),
                // Only Twilio's Messages API keeps opt-outs (`Request::keeps_opt_outs`).
                InvalidNumber::OptedOut => format!("{to:?} opted out"),
            };
            error("invalid_number", &message)
        }
        Outcome::FailFirst { .. } => error("simulated_failure", &simulated_failure(outcome)),
        Outcome::RateLimited { retry_after_secs } => error(
            "rate_limited",
            &format!("rate limit exceeded; retry after {retry_after_secs} s"),
        ),
        Outcome::ServerError => error("internal_error", "simulated provider error"),
        Outcome::Unavailable => error("service_unavailable", "simulated outage"),
        Outcome::Timeout => error("timeout", "simulated upstream timeout"),
    }
}

/// Twilio's code for a simulated failure with `status`.
fn twilio_code(status: u16) -> i64 {
    match status {
        401 => 20003,
        404 => 20404,
        429 => 20429,
        503 => 20503,
        500..=599 => 20500,
        _ => 20001,
    }
}

/// RFC 2822, as Twilio writes its dates.
fn rfc2822(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(0))
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S +0000")
        .to_string()
}

/// Twilio's error body.
fn twilio_error(status: u16, code: i64, message: &str) -> String {
    json!({"code": code, "message": message,
           "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status})
    .to_string()
}

/// Twilio's answer to a list request while it is down (`outage`).
pub fn twilio_list_unavailable() -> (StatusCode, String) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        twilio_error(503, 20503, "Service Unavailable (simulated outage)"),
    )
}

/// Twilio's answer to a list request over the rate limit.
pub fn twilio_list_throttled(retry_after_secs: u64) -> Answer {
    (
        StatusCode::TOO_MANY_REQUESTS,
        vec![(header::RETRY_AFTER, HeaderValue::from(retry_after_secs))],
        twilio_error(429, 20429, "Too Many Requests"),
    )
}

fn twilio_body(parsed: &Parsed, outcome: Outcome, id: Uuid, now_ms: u64) -> String {
    let error = twilio_error;
    let to = to_shown(parsed);
    let status = outcome.status();
    match outcome {
        Outcome::Accepted | Outcome::Duplicate => twilio_resource(parsed, id, now_ms),
        Outcome::Unauthorized => error(401, 20003, "Authenticate"),
        Outcome::BadRequest => {
            let problem = parsed.problem.clone().unwrap_or(Problem {
                code: 20001,
                message: "Bad request".into(),
            });
            error(400, problem.code, &problem.message)
        }
        Outcome::InvalidNumber(InvalidNumber::NotE164) => error(
            400,
            21211,
            &format!("The 'To' number {to} is not a valid phone number."),
        ),
        Outcome::InvalidNumber(InvalidNumber::Rejected) if parsed.api == Api::TwilioMessages => {
            error(
                400,
                21614,
                &format!("'To' number {to} is not a valid mobile number"),
            )
        }
        Outcome::InvalidNumber(InvalidNumber::OptedOut) => {
            error(400, 21610, "Attempt to send to unsubscribed recipient")
        }
        Outcome::InvalidNumber(InvalidNumber::Rejected) => error(
            400,
            21211,
            &format!("The 'To' number {to} is not a valid phone number."),
        ),
        Outcome::FailFirst { .. } => {
            error(status, twilio_code(status), &simulated_failure(outcome))
        }
        Outcome::RateLimited { .. } => error(429, 20429, "Too Many Requests"),
        Outcome::ServerError => error(500, 20500, "An internal server error has occurred"),
        Outcome::Unavailable => error(503, 20503, "Service Unavailable (simulated outage)"),
        Outcome::Timeout => error(504, 20500, "Gateway timeout (simulated)"),
    }
}

/// The created Message or Call resource, with the fields Herald and Twilio's libraries read.
fn twilio_resource(parsed: &Parsed, id: Uuid, now_ms: u64) -> String {
    let account = parsed.account_sid.as_deref().unwrap_or_default();
    let date = rfc2822(now_ms);
    let from = parsed.field("From");
    if parsed.api == Api::TwilioCalls {
        let sid = message_id(Api::TwilioCalls, id);
        let uri = format!("/2010-04-01/Accounts/{account}/Calls/{sid}");
        return json!({
            "account_sid": account, "annotation": null, "answered_by": null,
            "api_version": "2010-04-01", "caller_name": null, "date_created": date,
            "date_updated": date, "direction": "outbound-api", "duration": null,
            "end_time": null, "forwarded_from": null, "from": from, "from_formatted": from,
            "group_sid": null, "parent_call_sid": null, "phone_number_sid": null,
            "price": null, "price_unit": "USD", "queue_time": "0", "sid": sid,
            "start_time": null, "status": "queued",
            "subresource_uris": {"notifications": format!("{uri}/Notifications.json"),
                                 "recordings": format!("{uri}/Recordings.json")},
            "to": parsed.raw_to, "to_formatted": parsed.raw_to, "trunk_sid": null,
            "uri": format!("{uri}.json"),
        })
        .to_string();
    }
    let sid = message_id(Api::TwilioMessages, id);
    let service = parsed.field("MessagingServiceSid");
    let uri = format!("/2010-04-01/Accounts/{account}/Messages/{sid}");
    json!({
        "account_sid": account, "api_version": "2010-04-01", "body": parsed.field("Body"),
        "date_created": date, "date_sent": null, "date_updated": date,
        "direction": "outbound-api", "error_code": null, "error_message": null,
        "from": from, "messaging_service_sid": service, "num_media": "0",
        "num_segments": "1", "price": null, "price_unit": "USD", "sid": sid,
        // With a Messaging Service a new message starts `accepted`, otherwise `queued`.
        "status": if service.is_some() { "accepted" } else { "queued" },
        "subresource_uris": {"media": format!("{uri}/Media.json")},
        "to": parsed.raw_to, "uri": format!("{uri}.json"),
    })
    .to_string()
}

/// Graph's code for a simulated failure with `status`.
fn graph_code(status: u16) -> i64 {
    match status {
        401 => 190,
        429 => 130429,
        503 => 2,
        500..=599 => 131000,
        _ => 100,
    }
}

fn whatsapp_body(parsed: &Parsed, outcome: Outcome, id: Uuid) -> String {
    let error = |code: i64, message: &str, details: &str| {
        json!({"error": {"message": message, "type": "OAuthException", "code": code,
                         "error_data": {"messaging_product": "whatsapp", "details": details},
                         "fbtrace_id": format!("A{}", &id.simple().to_string()[..22])}})
        .to_string()
    };
    match outcome {
        Outcome::Accepted | Outcome::Duplicate => {
            let to = to_shown(parsed);
            json!({"messaging_product": "whatsapp",
                   "contacts": [{"input": to, "wa_id": to.trim_start_matches('+')}],
                   "messages": [{"id": message_id(Api::WhatsApp, id)}]})
            .to_string()
        }
        Outcome::Unauthorized => error(
            190,
            "Invalid OAuth access token - Cannot parse access token",
            "missing or malformed Bearer token",
        ),
        Outcome::BadRequest => {
            let problem = parsed.problem.clone().unwrap_or(Problem {
                code: 100,
                message: "(#100) Invalid parameter".into(),
            });
            error(problem.code, &problem.message, &problem.message)
        }
        Outcome::InvalidNumber(InvalidNumber::NotE164) => error(
            100,
            "(#100) Invalid parameter",
            &format!(
                "to: {} is not a valid WhatsApp phone number",
                to_shown(parsed)
            ),
        ),
        // The real API usually reports this asynchronously (statuses[].errors); answering
        // it at once keeps the simulator stateless.
        Outcome::InvalidNumber(InvalidNumber::Rejected | InvalidNumber::OptedOut) => error(
            131026,
            "Message Undeliverable.",
            "Message could not be delivered to the recipient",
        ),
        Outcome::FailFirst { status, .. } => {
            let failure = simulated_failure(outcome);
            error(graph_code(status), &failure, &failure)
        }
        Outcome::RateLimited { .. } => error(
            130429,
            "(#130429) Rate limit hit",
            "Cloud API message throughput has been reached.",
        ),
        Outcome::ServerError => error(131000, "Something went wrong", "simulated provider error"),
        Outcome::Unavailable => error(2, "Service temporarily unavailable", "simulated outage"),
        Outcome::Timeout => error(
            2,
            "Service temporarily unavailable",
            "simulated upstream timeout",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "AC0123456789abcdef0123456789abcdef";
    const KEY: &str = "herald-00000000000000000000000000000007-42";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn basic(user: &str, password: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
    }

    #[test]
    fn twilio_messages_are_read_from_the_form() {
        let auth = basic(SID, "tok");
        let h = headers(&[
            ("authorization", &auth),
            ("content-type", "application/x-www-form-urlencoded"),
            ("i-twilio-idempotency-token", KEY),
        ]);
        let parsed = parse_twilio(
            false,
            SID,
            &h,
            b"To=%2B15551234567&From=%2B15005550006&Body=Hi+there&MediaUrl=a&MediaUrl=b",
        );
        assert!(parsed.authorized);
        assert_eq!(parsed.problem, None);
        assert_eq!(parsed.to.as_deref(), Some("+15551234567"));
        assert_eq!(parsed.key.as_deref(), Some(KEY));
        assert_eq!(
            parsed.campaign_id.as_deref(),
            Some("00000000-0000-0000-0000-000000000007")
        );
        assert_eq!(
            parsed.fields,
            json!({"To": "+15551234567", "From": "+15005550006", "Body": "Hi there",
                   "MediaUrl": ["a", "b"]})
        );
        let (status, _, body) = respond(&parsed, Outcome::Accepted, Uuid::from_u128(5), 0);
        assert_eq!(status, StatusCode::CREATED);
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["sid"], "SM00000000000000000000000000000005");
        assert_eq!(body["status"], "queued");
        assert_eq!(body["date_created"], "Thu, 01 Jan 1970 00:00:00 +0000");
    }

    #[test]
    fn twilio_lists_for_the_account_or_one_of_its_api_keys() {
        let list = |auth: &str| {
            let h = headers(&[("authorization", auth)]);
            twilio_list(false, SID, &h, &[], std::iter::empty()).0
        };
        assert_eq!(list(&basic(SID, "tok")), StatusCode::OK);
        let key = format!("SK{}", "0123456789abcdef".repeat(2));
        assert_eq!(list(&basic(&key, "secret")), StatusCode::OK);
        assert_eq!(list(&basic(&key, "")), StatusCode::UNAUTHORIZED);
        assert_eq!(list(&basic("ACother", "tok")), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn twilio_checks_auth_encoding_and_required_parameters() {
        let json_body = headers(&[
            ("authorization", &basic(SID, "tok")),
            ("content-type", "application/json"),
        ]);
        let parsed = parse_twilio(false, SID, &json_body, br#"{"To":"+15551234567"}"#);
        assert_eq!(parsed.problem.as_ref().map(|p| p.code), Some(21604));
        assert_eq!(parsed.to, None);

        let other_account = headers(&[("authorization", &basic("ACother", "tok"))]);
        assert!(!parse_twilio(false, SID, &other_account, b"").authorized);
        assert!(!parse_twilio(false, SID, &HeaderMap::new(), b"").authorized);

        let form = headers(&[
            ("authorization", &basic(SID, "tok")),
            (
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            ),
        ]);
        let no_sender = parse_twilio(false, SID, &form, b"To=%2B15551234567&Body=x");
        assert_eq!(no_sender.problem.map(|p| p.code), Some(21603));
        let no_instructions = parse_twilio(true, SID, &form, b"To=%2B1555&From=%2B1666");
        assert_eq!(no_instructions.problem.map(|p| p.code), Some(21205));

        let invalid = parse_twilio(false, SID, &form, b"To=555&From=%2B1666&Body=x");
        let (status, _, body) = respond(
            &invalid,
            Outcome::InvalidNumber(InvalidNumber::NotE164),
            Uuid::nil(),
            0,
        );
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"code": 21211, "message": "The 'To' number 555 is not a valid phone number.",
                   "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400})
        );
        let (status, extra, body) = respond(
            &invalid,
            Outcome::RateLimited {
                retry_after_secs: 2,
            },
            Uuid::nil(),
            0,
        );
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(extra[0], (header::RETRY_AFTER, HeaderValue::from(2u64)));
        assert!(body.contains("\"code\":20429"));
        let (status, extra, body) = respond(&invalid, Outcome::Unauthorized, Uuid::nil(), 0);
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(extra[0].0, header::WWW_AUTHENTICATE);
        assert!(body.contains("\"code\":20003"));
    }

    #[test]
    fn whatsapp_messages_are_json_with_a_bearer_token() {
        let h = headers(&[
            ("authorization", "Bearer EAAG"),
            ("content-type", "application/json"),
        ]);
        let body = format!(
            r#"{{"messaging_product":"whatsapp","recipient_type":"individual","to":"15551234567","type":"text","text":{{"preview_url":false,"body":"Hi"}},"biz_opaque_callback_data":"{KEY}"}}"#
        );
        let parsed = parse_whatsapp("v21.0", "1055", &h, body.as_bytes());
        assert!(parsed.authorized);
        assert_eq!(parsed.problem, None);
        assert_eq!(parsed.to.as_deref(), Some("+15551234567"));
        assert_eq!(parsed.key.as_deref(), Some(KEY));
        let (status, _, answer) = respond(&parsed, Outcome::Accepted, Uuid::from_u128(1), 0);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            serde_json::from_str::<Value>(&answer).unwrap(),
            json!({"messaging_product": "whatsapp",
                   "contacts": [{"input": "15551234567", "wa_id": "15551234567"}],
                   "messages": [{"id": "wamid.00000000000000000000000000000001"}]})
        );
        let (status, _, answer) = respond(
            &parsed,
            Outcome::RateLimited {
                retry_after_secs: 1,
            },
            Uuid::nil(),
            0,
        );
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        let answer: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["error"]["code"], 130429);
        assert_eq!(answer["error"]["type"], "OAuthException");
    }

    #[test]
    fn whatsapp_rejects_bad_requests_in_graph_terms() {
        let h = headers(&[
            ("authorization", "Bearer EAAG"),
            ("content-type", "application/json"),
        ]);
        let no_product = parse_whatsapp(
            "v21.0",
            "1055",
            &h,
            br#"{"to":"1555","type":"text","text":{"body":"x"}}"#,
        );
        assert_eq!(no_product.problem.as_ref().map(|p| p.code), Some(100));
        let template = parse_whatsapp(
            "v21.0",
            "1055",
            &h,
            br#"{"messaging_product":"whatsapp","to":"1555","type":"template","template":{"name":"x"}}"#,
        );
        assert!(template.problem.unwrap().message.contains("language"));
        let form = headers(&[
            ("authorization", "Bearer EAAG"),
            ("content-type", "application/x-www-form-urlencoded"),
        ]);
        assert!(
            parse_whatsapp("v21.0", "1055", &form, b"to=1")
                .problem
                .is_some()
        );
        let anonymous = parse_whatsapp("v21.0", "1055", &HeaderMap::new(), b"{}");
        assert!(!anonymous.authorized);
        let (status, _, body) = respond(&anonymous, Outcome::Unauthorized, Uuid::nil(), 0);
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body.contains("\"code\":190"));
    }

    #[test]
    fn generic_requests_read_as_before() {
        let h = headers(&[("idempotency-key", " k1 ")]);
        let parsed = parse_generic(
            &h,
            br#"{"to":"+15551234567","body":"x","metadata":{"tenant_id":"t","campaign_id":"c"}}"#,
        );
        assert_eq!(parsed.key.as_deref(), Some("k1"));
        assert_eq!(parsed.tenant_id.as_deref(), Some("t"));
        assert_eq!(parsed.campaign_id.as_deref(), Some("c"));
        let bad = parse_generic(&h, br#"{"to":1}"#);
        assert_eq!(bad.to, None);
        assert!(
            bad.problem
                .unwrap()
                .message
                .starts_with("invalid message request")
        );
    }

    #[test]
    fn details_show_headers_and_fields() {
        let h = headers(&[
            ("content-type", "application/json"),
            ("x-a", "1"),
            ("x-a", "2"),
        ]);
        let d = detail(
            Api::WhatsApp,
            "POST",
            "/v21.0/1/messages",
            &h,
            &json!({"to": "1"}),
        );
        assert_eq!(d.content_type.as_deref(), Some("application/json"));
        assert_eq!(d.headers["x-a"], "1, 2");
        assert_eq!(d.api, "whatsapp");
    }
}
