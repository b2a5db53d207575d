//! Providers. Credentials are write-only: stored, used by the workers, never returned or
//! logged (the response only says whether there are any). Kind, endpoint, settings and
//! credentials are validated by `herald_shared::provider_config`, the same parser the
//! workers use, so a provider the admin accepts is one the workers can call.

use super::{JsonBody, QueryParams};
use crate::auth::Caller;
use crate::endpoints::Refusal;
use crate::error::{ApiError, FieldError, from_constraint};
use crate::state::AppState;
use crate::validate;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use herald_shared::domain::UnknownOutcome;
use herald_shared::provider_config::{self, Kind};
use herald_store as store;
use herald_store::providers::{self, ApiShape, NewProviderRow, Provider};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

// Debug is written by hand below so that credentials never reach a log line.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProvider {
    /// Operators only; omitted = a shared provider. Ignored for tenant keys.
    pub tenant_id: Option<Uuid>,
    pub name: String,
    /// `http` (default), `twilio_sms`, `twilio_voice` or `whatsapp`.
    #[serde(default = "http")]
    pub kind: String,
    /// Required for `http` (the whole URL). For the other kinds, the API's base URL,
    /// defaulting to the real one (`https://api.twilio.com`, `https://graph.facebook.com`).
    pub endpoint: Option<String>,
    /// Non-secret, per-kind settings (see API.md).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub settings: Map<String, Value>,
    /// Secrets, per kind (see API.md); write-only.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub credentials: Map<String, Value>,
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: i32,
    /// Requests in flight to this provider at most, across the whole worker fleet (each
    /// live worker takes its share).
    #[serde(default = "defaults::max_in_flight")]
    pub max_in_flight: i32,
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: i32,
    #[serde(default = "defaults::retry_base_ms")]
    pub retry_base_ms: i32,
    #[serde(default = "defaults::retry_max_ms")]
    pub retry_max_ms: i32,
    /// Requests allowed per `rate_window_ms`, across the whole worker fleet (omit: no limit).
    pub rate_limit: Option<i32>,
    #[serde(default = "defaults::rate_window_ms")]
    pub rate_window_ms: i32,
    /// What one message costs through this provider (any currency; shown with progress).
    pub cost_per_message: Option<f64>,
    /// `await_receipt` (default), `retry` or `fail`: see [`Provider::unknown_outcome`].
    #[serde(default = "defaults::unknown_outcome")]
    pub unknown_outcome: String,
    #[serde(default = "defaults::unknown_window_ms")]
    pub unknown_window_ms: i32,
    /// Calls live at once through this provider, fleet-wide (omit: no cap).
    pub max_live_calls: Option<i32>,
    #[serde(default = "defaults::live_call_timeout_ms")]
    pub live_call_timeout_ms: i32,
    /// Messages a calendar month (UTC) agreed with this provider (omit: none).
    #[schema(minimum = 1, maximum = 2000000000)]
    pub monthly_commitment: Option<i32>,
}

/// A provider's committed volume, replacing the one it had.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCommitment {
    /// Messages a calendar month (UTC); `null` removes the commitment.
    #[schema(minimum = 1, maximum = 2000000000)]
    pub monthly_commitment: Option<i32>,
}

impl std::fmt::Debug for NewProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewProvider")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("endpoint", &self.endpoint)
            .field("settings", &self.settings)
            .field("credentials", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A provider's new credentials, replacing all of the old ones (a rotation).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCredentials {
    /// Secrets, per kind (see API.md); write-only.
    #[schema(value_type = Object)]
    pub credentials: Map<String, Value>,
    /// How long receipts signed with the credentials replaced are still taken, 0 (at once: a
    /// leaked secret) to 604800 (a week); default a day. A provider's own rotation signs
    /// with the old secret for a while after Herald has the new one (Twilio, until the
    /// secondary auth token is promoted), and a callback refused is not sent again. Only
    /// the last credentials replaced are kept.
    #[serde(default = "default_credentials_grace")]
    #[schema(minimum = 0, maximum = 604800, default = 86400)]
    pub grace_seconds: i64,
}

/// Receipts signed with replaced credentials are taken a day by default.
pub const DEFAULT_CREDENTIALS_GRACE_SECONDS: i64 = 86_400;

fn default_credentials_grace() -> i64 {
    DEFAULT_CREDENTIALS_GRACE_SECONDS
}

impl std::fmt::Debug for NewCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "NewCredentials {{ credentials: <redacted>, grace_seconds: {} }}",
            self.grace_seconds
        )
    }
}

fn http() -> String {
    "http".to_owned()
}

mod defaults {
    pub fn timeout_ms() -> i32 {
        10_000
    }
    pub fn max_in_flight() -> i32 {
        100
    }
    pub fn max_attempts() -> i32 {
        5
    }
    pub fn retry_base_ms() -> i32 {
        1_000
    }
    pub fn rate_window_ms() -> i32 {
        1_000
    }
    pub fn retry_max_ms() -> i32 {
        300_000
    }
    pub fn unknown_outcome() -> String {
        "await_receipt".to_owned()
    }
    pub fn unknown_window_ms() -> i32 {
        120_000
    }
    pub fn live_call_timeout_ms() -> i32 {
        600_000
    }
}

/// The endpoint to store: the one given, or the kind's real API (`None` when neither).
fn endpoint(body: &NewProvider) -> Option<String> {
    body.endpoint.clone().or_else(|| {
        Kind::parse(&body.kind)
            .and_then(Kind::default_endpoint)
            .map(str::to_owned)
    })
}

#[utoipa::path(put, path = "/providers/{id}/commitment", tag = "providers",
    request_body = NewCommitment,
    params(("id" = Uuid, Path, description = "The provider's id")),
    responses((status = 200, body = Provider), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn set_commitment(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    JsonBody(body): JsonBody<NewCommitment>,
) -> Result<Json<Provider>, ApiError> {
    if body
        .monthly_commitment
        .is_some_and(|n| !(1..=2_000_000_000).contains(&n))
    {
        return Err(ApiError::field(
            "monthly_commitment",
            "must be between 1 and 2000000000, or null",
        ));
    }
    let owner = providers::owner(&state.pool, caller.scope(), id)
        .await?
        .ok_or(ApiError::NotFound("provider"))?;
    if owner.is_none() {
        caller.require_operator().map_err(|_| {
            ApiError::Forbidden("a shared provider's commitment is the operator's to change")
        })?;
    }
    let provider = providers::set_commitment(&state.pool, id, body.monthly_commitment).await?;
    tracing::info!(provider_id = %id, monthly_commitment = ?body.monthly_commitment, "provider commitment set");
    Ok(Json(seen_by(caller, provider)))
}

/// Credentials that hold `sealed` at their top: stored as given (without a credentials key),
/// they would read as a sealed envelope no worker could open, and stop an operator's
/// `herald-admin credentials reseal`. (A generic provider's credentials are otherwise
/// free-form.)
fn forged_seal(credentials: &serde_json::Map<String, Value>) -> Option<FieldError> {
    credentials.contains_key("sealed").then(|| FieldError {
        field: "credentials.sealed".to_owned(),
        reason: "is reserved for credentials Herald sealed itself".to_owned(),
    })
}

fn check(body: &NewProvider) -> Vec<FieldError> {
    let mut fields = Vec::new();
    let mut bad = |field: &str, reason: String| {
        fields.push(FieldError {
            field: field.to_owned(),
            reason,
        })
    };
    if let Err(reason) = validate::name(&body.name) {
        bad("name", reason);
    }
    let endpoint = endpoint(body);
    if endpoint.is_none() && Kind::parse(&body.kind).is_some() {
        bad("endpoint", "required".into());
    }
    if let Some(problem) = forged_seal(&body.credentials) {
        bad(&problem.field, problem.reason);
    }
    let settings = Value::Object(body.settings.clone());
    let credentials = Value::Object(body.credentials.clone());
    let parsed = provider_config::parse(
        &body.kind,
        endpoint.as_deref().unwrap_or_default(),
        &settings,
        &credentials,
    );
    if let Err(problems) = parsed {
        for problem in problems.0 {
            // A missing endpoint was reported above as missing, not as malformed.
            if !(problem.field == "endpoint" && endpoint.is_none()) {
                bad(&problem.field, problem.reason);
            }
        }
    }
    let voice = match Kind::parse(&body.kind) {
        Some(Kind::TwilioSms) => Some(false),
        Some(Kind::TwilioVoice) => Some(true),
        _ => None,
    };
    if let (Some(voice), Some(Value::String(from))) = (voice, body.settings.get("from"))
        && let Err(reason) = provider_config::twilio_sender(from, voice)
    {
        bad("settings.from", reason.into());
    }
    let ranges = [
        ("timeout_ms", body.timeout_ms, 10, 300_000),
        ("max_in_flight", body.max_in_flight, 1, 100_000),
        ("max_attempts", body.max_attempts, 1, 100),
        ("retry_base_ms", body.retry_base_ms, 1, 86_400_000),
        ("retry_max_ms", body.retry_max_ms, 1, 86_400_000),
        ("rate_limit", body.rate_limit.unwrap_or(1), 1, 1_000_000),
        ("rate_window_ms", body.rate_window_ms, 1, 86_400_000),
        // A lost answer looked up or judged at once would find a message the provider
        // has not listed yet, or receipts not yet sent, and read "not sent": a second send.
        (
            "unknown_window_ms",
            body.unknown_window_ms,
            1_000,
            86_400_000,
        ),
        (
            "max_live_calls",
            body.max_live_calls.unwrap_or(1),
            1,
            100_000,
        ),
        (
            "live_call_timeout_ms",
            body.live_call_timeout_ms,
            1_000,
            86_400_000,
        ),
        (
            "monthly_commitment",
            body.monthly_commitment.unwrap_or(1),
            1,
            2_000_000_000,
        ),
    ];
    for (field, value, min, max) in ranges {
        if !(min..=max).contains(&value) {
            bad(field, format!("must be between {min} and {max}"));
        }
    }
    if body.cost_per_message.is_some_and(|cost| !fits_column(cost)) {
        bad(
            "cost_per_message",
            "must be at least 0 and below 1000000".into(),
        );
    }
    match body.unknown_outcome.parse::<UnknownOutcome>() {
        Err(_) => bad(
            "unknown_outcome",
            "must be await_receipt, retry or fail".into(),
        ),
        // Only a generic API can honour the idempotency key a retry relies on: Twilio's and
        // Meta's create a second message.
        Ok(UnknownOutcome::Retry) if Kind::parse(&body.kind).is_some_and(|k| k != Kind::Http) => {
            bad(
                "unknown_outcome",
                format!(
                    "retry is only for an http provider that honours Idempotency-Key; {} takes \
                     none, so a retry after a lost answer would send a second message: use \
                     await_receipt or fail",
                    body.kind
                ),
            )
        }
        Ok(_) => {}
    }
    fields
}

/// Whether the `numeric(12, 6)` column holds `cost`: PostgreSQL reads the bound float8 to
/// 15 significant digits, then rounds to the millionth, so from 999999.9999995 on it would
/// be a million. Every decimal of 15 digits has an f64 of its own, in order, so comparing
/// the reading with the f64 of that bound is exact.
fn fits_column(cost: f64) -> bool {
    let read: f64 = format!("{cost:.14e}").parse().unwrap_or(cost);
    (0.0..999_999.999_999_5).contains(&read)
}

#[utoipa::path(post, path = "/providers", tag = "providers", request_body = NewProvider,
    responses((status = 201, body = Provider), (status = 422, body = crate::error::ErrorBody),
              (status = 409, description = "The tenant has the most providers in use it may", body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<NewProvider>,
) -> Result<(StatusCode, Json<Provider>), ApiError> {
    let fields = check(&body);
    if !fields.is_empty() {
        return Err(ApiError::fields("provider", fields));
    }
    // A tenant's own endpoint must be a public https one (the kinds' default API URLs are
    // the real providers' and need no check).
    if let (Caller::Tenant(_), Some(given)) = (caller, &body.endpoint)
        && let Err(refusal) = state.endpoints.check(given).await
    {
        return Err(match refusal {
            Refusal::Invalid(reason) => ApiError::field("endpoint", reason),
            Refusal::Unresolved(reason) => ApiError::Unavailable(format!(
                "cannot check `endpoint` now: {reason}; try again shortly"
            )),
        });
    }
    let tenant = match caller {
        Caller::Tenant(id) => Some(id),
        Caller::Operator => body.tenant_id,
    };
    // The id is chosen here: sealed credentials are bound to it.
    let id = Uuid::new_v4();
    let credentials = state.keyring.seal(id, &body.credentials);
    let row = NewProviderRow {
        id,
        tenant_id: tenant,
        name: body.name.trim(),
        kind: &body.kind,
        endpoint: endpoint(&body),
        settings: Value::Object(body.settings),
        sealed_credentials: credentials,
        timeout_ms: body.timeout_ms,
        max_in_flight: body.max_in_flight,
        max_attempts: body.max_attempts,
        retry_base_ms: body.retry_base_ms,
        retry_max_ms: body.retry_max_ms,
        rate_limit: body.rate_limit,
        rate_window_ms: body.rate_window_ms,
        cost_per_message: body.cost_per_message,
        unknown_outcome: &body.unknown_outcome,
        unknown_window_ms: body.unknown_window_ms,
        max_live_calls: body.max_live_calls,
        live_call_timeout_ms: body.live_call_timeout_ms,
        monthly_commitment: body.monthly_commitment,
    };
    let max = state.max_providers;
    let provider = providers::create(&state.pool, &row, max)
        .await
        .map_err(|e| from_constraint(e, "provider"))?
        .ok_or_else(|| {
            ApiError::Conflict(format!(
                "the tenant has {max} providers in use, the most it may \
                 (HERALD_ADMIN_MAX_PROVIDERS_PER_TENANT): retire one it no longer needs first"
            ))
        })?;
    tracing::info!(provider_id = %provider.id, tenant_id = ?tenant, "provider created");
    Ok((StatusCode::CREATED, Json(provider)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
// Read by `QueryParams`, which utoipa cannot place as it places axum's `Query`.
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Also the retired ones (default: only those in use).
    pub retired: Option<bool>,
}

#[utoipa::path(get, path = "/providers", tag = "providers", params(ListQuery),
    responses((status = 200, body = Vec<Provider>), (status = 422, body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<Vec<Provider>>, ApiError> {
    let retired = query.retired.unwrap_or(false);
    let providers = providers::list(&state.pool, caller.scope(), retired).await?;
    Ok(Json(
        providers.into_iter().map(|p| seen_by(caller, p)).collect(),
    ))
}

/// A provider as `caller` may see it.
fn seen_by(caller: Caller, mut provider: Provider) -> Provider {
    if matches!(caller, Caller::Tenant(_)) && provider.tenant_id.is_none() {
        provider.endpoint = None;
        // Settings that name hosts (callbacks, a voice call's instructions, a generic API's
        // headers and body) say where the operator's services live as much as the endpoint.
        if let Some(settings) = provider.settings.as_object_mut() {
            for hidden in ["status_callback", "url", "headers", "body_template"] {
                settings.remove(hidden);
            }
        }
        // All tenants' sends and the operator's contract: neither is one tenant's to see.
        provider.sent_this_month = None;
        provider.monthly_commitment = None;
        provider.commitment_due_by_now = None;
        // When the operator rotated its credentials is not a tenant's to see either.
        provider.previous_credentials_until = None;
    }
    provider
}

#[utoipa::path(get, path = "/providers/{id}", tag = "providers",
    responses((status = 200, body = Provider), (status = 404, body = crate::error::ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Provider>, ApiError> {
    providers::get(&state.pool, caller.scope(), id)
        .await?
        .map(|p| Json(seen_by(caller, p)))
        .ok_or(ApiError::NotFound("provider"))
}

#[utoipa::path(delete, path = "/providers/{id}", tag = "providers",
    params(("id" = Uuid, Path, description = "The provider's id")),
    responses((status = 200, body = Provider, description = "Retired (or it was): no new campaign, message or default may name it, and lists leave it out; it is kept, with its credentials, for what it sent (receipts, lookups of lost answers, progress)"),
              (status = 403, body = crate::error::ErrorBody, description = "A shared provider, and a tenant's key"),
              (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody, description = "Still named by a tenant's default, a campaign not completed (a cancelled one until its requests in flight and lost answers settle), or transactional messages not yet final: the message says which")))]
pub async fn retire(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Provider>, ApiError> {
    match providers::retire(&state.pool, caller.scope(), id).await? {
        providers::Retired::Done(provider) => {
            tracing::info!(provider_id = %id, "provider retired");
            Ok(Json(seen_by(caller, *provider)))
        }
        providers::Retired::InUse(by) => Err(ApiError::Conflict(format!(
            "the provider is still in use by {by}: change or finish that first"
        ))),
        providers::Retired::NotFound => Err(ApiError::NotFound("provider")),
        providers::Retired::Shared => Err(ApiError::Forbidden(
            "a shared provider is the operator's to retire",
        )),
    }
}

#[utoipa::path(put, path = "/providers/{id}/credentials", tag = "providers",
    request_body = NewCredentials,
    params(("id" = Uuid, Path, description = "The provider's id")),
    responses((status = 200, body = Provider), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn rotate_credentials(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    JsonBody(body): JsonBody<NewCredentials>,
) -> Result<Json<Provider>, ApiError> {
    let mut tx = state.pool.begin().await?;
    let ApiShape {
        tenant_id: owner,
        kind,
        endpoint,
        settings,
    } = providers::lock_shape(&mut tx, caller.scope(), id)
        .await?
        .ok_or(ApiError::NotFound("provider"))?;
    if owner.is_none() {
        caller.require_operator().map_err(|_| {
            ApiError::Forbidden("a shared provider's credentials are the operator's to change")
        })?;
    }
    if let Some(problem) = forged_seal(&body.credentials) {
        return Err(ApiError::fields("credentials", vec![problem]));
    }
    let max_grace = super::keys::MAX_GRACE_SECONDS;
    let grace_seconds = i32::try_from(body.grace_seconds)
        .ok()
        .filter(|g| (0..=max_grace).contains(&i64::from(*g)))
        .ok_or_else(|| {
            ApiError::field(
                "grace_seconds",
                format!("must be between 0 and {max_grace}"),
            )
        })?;
    // The same parser the workers use, so what is stored is what they can send with.
    let given = Value::Object(body.credentials);
    if let Err(problems) = provider_config::parse(&kind, &endpoint, &settings, &given) {
        return Err(ApiError::fields(
            "credentials",
            problems
                .0
                .into_iter()
                .map(|p| FieldError {
                    field: p.field,
                    reason: p.reason,
                })
                .collect(),
        ));
    }
    // The revision tells workers their cached copy is stale (see the worker's providers).
    let sealed = state
        .keyring
        .seal(id, given.as_object().unwrap_or(&Map::new()));
    // The same credentials again, a retry whose answer was lost say, must not make them
    // "the replaced ones" too: the ones replaced before, which the provider may still be
    // signing with, would be refused. Their grace is kept, unless ended (0).
    // Credentials no key opens (a key lost: the case a rotation recovers from) are not kept:
    // nothing could check a signature with them, and a reseal would stumble on them.
    let stored = providers::lock_credentials(&mut tx, id).await?;
    let opened = stored.map(|stored| state.keyring.open(id, &stored.credentials));
    let grace = match opened {
        Some(Ok(opened)) if opened == given && grace_seconds > 0 => None,
        Some(Err(_)) => Some(0),
        _ => Some(grace_seconds),
    };
    let provider = providers::replace_credentials(&mut tx, id, &sealed, grace).await?;
    // Streams of transactional messages paused by this provider's refusal (bad credentials)
    // have no resume button of their own: new credentials resume them.
    let resumed = store::campaigns::resume_message_streams(&mut tx, id).await?;
    tx.commit().await?;
    tracing::info!(provider_id = %id, resumed_message_streams = resumed, grace_seconds, "provider credentials rotated");
    Ok(Json(seen_by(caller, provider)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(value: Value) -> NewProvider {
        serde_json::from_value(value).unwrap()
    }

    fn fields(value: Value) -> Vec<String> {
        let mut fields: Vec<String> = check(&body(value)).into_iter().map(|f| f.field).collect();
        fields.sort();
        fields
    }

    #[test]
    fn a_cost_fits_the_column_as_postgresql_reads_and_rounds_it() {
        for fits in [
            0.0,
            0.05,
            999_999.999_999,
            999_999.999_999_4,
            999_999.999_999_499,
        ] {
            assert!(fits_column(fits), "{fits}");
        }
        for refused in [
            -0.000_001,
            999_999.999_999_5,
            999_999.999_999_499_7,
            999_999.999_999_9,
            1_000_000.0,
        ] {
            assert!(!fits_column(refused), "{refused}");
        }
    }

    #[test]
    fn generic_providers_need_an_endpoint() {
        assert!(fields(json!({"name": "p", "endpoint": "https://sms.example/send"})).is_empty());
        assert_eq!(fields(json!({"name": "p"})), ["endpoint"]);
        assert_eq!(
            fields(json!({"name": "p", "endpoint": "ftp://x", "timeout_ms": 1})),
            ["endpoint", "timeout_ms"]
        );
    }

    #[test]
    fn each_kind_names_what_it_is_missing() {
        assert_eq!(
            fields(json!({"name": "p", "kind": "twilio_sms"})),
            [
                "credentials.account_sid",
                "credentials.auth_token",
                "settings.from"
            ]
        );
        assert_eq!(
            fields(
                json!({"name": "p", "kind": "whatsapp", "settings": {"template": {"name": "x"}}})
            ),
            [
                "credentials.access_token",
                "settings.phone_number_id",
                "settings.template.language"
            ]
        );
        assert_eq!(fields(json!({"name": "p", "kind": "smtp"})), ["kind"]);
        // Not even a generic provider's free-form credentials may pose as sealed ones.
        assert_eq!(
            fields(json!({"name": "p", "endpoint": "https://sms.example/send",
                          "credentials": {"sealed": "v1.deadbeef.AAAA"}})),
            ["credentials.sealed"]
        );
        // A retry after a lost answer only for an API that honours the idempotency key.
        let twilio = |unknown: &str| {
            fields(
                json!({"name": "p", "kind": "twilio_sms", "unknown_outcome": unknown,
                          "settings": {"from": "+15005550006"},
                          "credentials": {"account_sid": format!("AC{}", "0".repeat(32)), "auth_token": "t"}}),
            )
        };
        assert_eq!(twilio("retry"), ["unknown_outcome"]);
        assert!(twilio("fail").is_empty(), "{:?}", twilio("fail"));
        // A lost answer judged at once (0 ms) would read a message not listed yet as not sent.
        assert_eq!(
            fields(json!({"name": "p", "endpoint": "https://sms.example/send",
                          "unknown_window_ms": 0})),
            ["unknown_window_ms"]
        );
        assert_eq!(
            fields(json!({"name": "p", "endpoint": "https://sms.example/send",
                          "unknown_outcome": "guess", "unknown_window_ms": -1,
                          "max_live_calls": 0})),
            ["max_live_calls", "unknown_outcome", "unknown_window_ms"]
        );
        let ok = body(
            json!({"name": "p", "kind": "twilio_voice", "settings": {"from": "+15005550006"},
                             "credentials": {"account_sid": "AC0123456789abcdef0123456789abcdef",
                                             "auth_token": "s3cr3t"}}),
        );
        assert!(check(&ok).is_empty());
        assert_eq!(endpoint(&ok).as_deref(), Some("https://api.twilio.com"));
        let shown = format!("{ok:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }
}
