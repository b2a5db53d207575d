//! A tenant's status webhook: the URL Herald posts its transactional messages' changes to
//! (`herald_shared::status_event`), signed with a secret shown once. A tenant key sets its
//! own tenant's; an operator key any tenant's. The first `PUT` issues the secret; later ones
//! move the URL and keep it, unless asked for a new one, when the secret replaced still
//! signs beside it for a grace period (so the endpoint can change over without refusing a
//! post). Events still waiting go to the URL last set.

use super::page::{self, Page};
use super::{JsonBody, QueryParams};
use crate::auth::Caller;
use crate::endpoints::Refusal;
use crate::error::ApiError;
use crate::state::AppState;
use crate::validate;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Datelike, Utc};
use herald_store::webhooks::{self, COUNTED};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// Longest webhook URL taken.
const MAX_URL: usize = 2000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// Where events are posted: https, a public address (or one of the operator's allowed
    /// networks, where http is taken too), no user or password in it.
    #[schema(max_length = 2000)]
    pub url: String,
    /// Issue a new secret (the first `PUT` always does).
    #[serde(default)]
    pub rotate_secret: bool,
    /// Only with `rotate_secret`: how long the secret replaced still signs beside the new
    /// one (each post then carries two `v1=`), 0 (at once: a leaked secret) to 604800 (a
    /// week); default a day. A rotation within the last one's grace keeps the secret that
    /// one replaced signing instead.
    #[schema(minimum = 0, maximum = 604800, default = 86400)]
    pub grace_seconds: Option<i64>,
}

/// A tenant's webhook (`url` null: none set, its messages' events are not posted).
#[derive(Debug, Serialize, ToSchema)]
pub struct Webhook {
    pub tenant_id: Uuid,
    pub url: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    /// Until when the secret the last rotation replaced still signs beside the new one.
    pub previous_secret_until: Option<DateTime<Utc>>,
    /// Events not yet delivered (counted up to 100,000).
    pub waiting: i64,
    /// When the oldest of those counted happened (or was recovered): how far behind the
    /// endpoint is.
    pub oldest_waiting_at: Option<DateTime<Utc>>,
    /// Why the latest failed post of a waiting event failed (its answer's status and start,
    /// or no answer), and when.
    pub last_failure: Option<String>,
    pub last_failed_at: Option<DateTime<Utc>>,
    /// Events given up (not delivered a day after they happened, or after their recovery),
    /// counted up to 100,000, and when the latest was.
    pub abandoned: i64,
    pub last_abandoned_at: Option<DateTime<Utc>>,
    /// Since when the endpoint has answered only 5xx, 408 or 429, or not at all; `null`
    /// while it answers as a working one does. Its events then wait, and one post at a time
    /// goes to it, at `resume_at`, until any other answer. A `PUT` (of the same URL too) has
    /// it tried at once.
    pub failing_since: Option<DateTime<Utc>>,
    /// While the endpoint fails: when it is posted to next (after as long again as it has
    /// been failing, 1 s to 5 min).
    pub resume_at: Option<DateTime<Utc>>,
    /// Since when the webhook is disabled, because its endpoint answered `410 Gone` (gone for
    /// good): nothing is posted to it, and no event is written for it, until it is set again
    /// (`PUT`, the same URL too); events already waiting then go. `null` while enabled.
    pub disabled_at: Option<DateTime<Utc>>,
    /// The answer that disabled it (its status and start).
    pub disabled_reason: Option<String>,
}

impl From<webhooks::Webhook> for Webhook {
    fn from(row: webhooks::Webhook) -> Self {
        Self {
            tenant_id: row.tenant_id,
            url: Some(row.url),
            created_at: Some(row.created_at),
            updated_at: Some(row.updated_at),
            previous_secret_until: row.previous_secret_until,
            waiting: row.waiting.min(COUNTED),
            oldest_waiting_at: row.oldest_waiting_at,
            last_failure: row.last_failure,
            last_failed_at: row.last_failed_at,
            abandoned: row.abandoned.min(COUNTED),
            last_abandoned_at: row.last_abandoned_at,
            failing_since: row.failing_since,
            resume_at: row.resume_at,
            disabled_at: row.disabled_at,
            disabled_reason: row.disabled_reason,
        }
    }
}

/// A webhook just set, with its new signing secret if one was issued: shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookSet {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// The key of each event's `Herald-Signature` (`t=<unix seconds>,v1=<hex HMAC-SHA256 of
    /// "<t>.<body>">`), if this request issued one; store it now, it cannot be shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[utoipa::path(put, path = "/tenants/{id}/webhook", tag = "tenants",
    request_body = NewWebhook,
    params(("id" = Uuid, Path, description = "The tenant's id")),
    responses((status = 200, body = WebhookSet, description = "Set (with the new secret, if one was issued)"),
              (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody, description = "The webhook was removed while this request set it"),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn set(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    JsonBody(body): JsonBody<NewWebhook>,
) -> Result<Json<WebhookSet>, ApiError> {
    super::tenants::visible(&state.pool, caller, id).await?;
    // Checked before the URL, whose check may wait on the name servers.
    let max_grace = super::keys::MAX_GRACE_SECONDS;
    let grace_seconds = match body.grace_seconds {
        Some(_) if !body.rotate_secret => {
            return Err(ApiError::field(
                "grace_seconds",
                "only with rotate_secret: a secret kept replaces none",
            ));
        }
        Some(grace) if !(0..=max_grace).contains(&grace) => {
            return Err(ApiError::field(
                "grace_seconds",
                format!("must be between 0 and {max_grace}"),
            ));
        }
        given => given.unwrap_or(super::providers::DEFAULT_CREDENTIALS_GRACE_SECONDS),
    };
    let url = body.url.trim();
    if url.is_empty() {
        return Err(ApiError::field("url", "must not be empty"));
    }
    if url.len() > MAX_URL {
        return Err(ApiError::field(
            "url",
            format!("must be at most {MAX_URL} characters"),
        ));
    }
    // Whoever sets it, the URL is the tenant's: workers post to it as to a tenant's provider.
    if let Err(refusal) = state.endpoints.check(url).await {
        return Err(match refusal {
            Refusal::Invalid(reason) => ApiError::field("url", reason),
            Refusal::Unresolved(reason) => ApiError::Unavailable(format!(
                "cannot check `url` now: {reason}; try again shortly"
            )),
        });
    }
    // Stored as parsed (control characters escaped, the host in its canonical form).
    let url = url::Url::parse(url)
        .map_err(|error| ApiError::field("url", format!("not a URL: {error}")))?
        .to_string();
    if url.len() > MAX_URL {
        return Err(ApiError::field(
            "url",
            format!("must be at most {MAX_URL} characters"),
        ));
    }
    let secret = format!("whsec_{}", hex::encode(rand::random::<[u8; 32]>()));
    let mut stored = Map::new();
    stored.insert("secret".into(), Value::String(secret.clone()));
    let sealed = state.keyring.seal(id, &stored);
    if body.rotate_secret {
        let grace = std::time::Duration::from_secs(grace_seconds.unsigned_abs());
        let row = webhooks::set_with_secret(&state.pool, id, &url, &sealed, grace).await?;
        tracing::info!(tenant_id = %id, grace_seconds, "status webhook set, with a new secret");
        return Ok(Json(WebhookSet {
            webhook: row.into(),
            secret: Some(secret),
        }));
    }
    // The first secret only where there was no webhook: of two first requests at once, one
    // makes it and the other moves its URL, so no secret handed out is replaced unsaid.
    if let Some(row) = webhooks::create(&state.pool, id, &url, &sealed).await? {
        tracing::info!(tenant_id = %id, "status webhook set");
        return Ok(Json(WebhookSet {
            webhook: row.into(),
            secret: Some(secret),
        }));
    }
    let row = webhooks::set_url(&state.pool, id, &url)
        .await?
        .ok_or_else(|| ApiError::Conflict("the webhook was removed meanwhile; try again".into()))?;
    tracing::info!(tenant_id = %id, "status webhook moved");
    Ok(Json(WebhookSet {
        webhook: row.into(),
        secret: None,
    }))
}

#[utoipa::path(get, path = "/tenants/{id}/webhook", tag = "tenants",
    params(("id" = Uuid, Path, description = "The tenant's id")),
    responses((status = 200, body = Webhook, description = "The tenant's webhook; `url` null if it has none"),
              (status = 404, body = crate::error::ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Webhook>, ApiError> {
    super::tenants::visible(&state.pool, caller, id).await?;
    Ok(Json(webhooks::get(&state.pool, id).await?.map_or(
        Webhook {
            tenant_id: id,
            url: None,
            created_at: None,
            updated_at: None,
            previous_secret_until: None,
            waiting: 0,
            oldest_waiting_at: None,
            last_failure: None,
            last_failed_at: None,
            abandoned: 0,
            last_abandoned_at: None,
            failing_since: None,
            resume_at: None,
            disabled_at: None,
            disabled_reason: None,
        },
        Webhook::from,
    )))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Recover {
    /// Events given up that happened at this time or later are posted again (not in the
    /// future; events are kept as long as receipts).
    pub since: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Recovered {
    /// Events given up that wait to be posted again now (at most 50,000 a request, oldest
    /// first).
    pub recovered: u64,
    /// More events given up since then are left: ask again.
    pub more: bool,
}

#[utoipa::path(post, path = "/tenants/{id}/webhook/recover", tag = "tenants",
    request_body = Recover,
    params(("id" = Uuid, Path, description = "The tenant's id")),
    responses((status = 200, body = Recovered, description = "The events given up since then wait to be posted again, for another day"),
              (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody, description = "The tenant has no webhook"),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn recover(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    JsonBody(body): JsonBody<Recover>,
) -> Result<Json<Recovered>, ApiError> {
    super::tenants::visible(&state.pool, caller, id).await?;
    crate::validate::timestamp(body.since).map_err(|reason| ApiError::field("since", reason))?;
    if body.since > Utc::now() {
        return Err(ApiError::field("since", "must not be in the future"));
    }
    let recovered = webhooks::recover(&state.pool, id, body.since)
        .await?
        .ok_or_else(|| {
            ApiError::Conflict("the tenant has no webhook: set one first (PUT …/webhook)".into())
        })?;
    tracing::info!(tenant_id = %id, recovered, "status events given up, posted again");
    Ok(Json(Recovered {
        recovered,
        more: recovered >= webhooks::RECOVER_BATCH.unsigned_abs(),
    }))
}

/// A test event queued.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestQueued {
    /// The event's id, as its post will carry it.
    pub id: Uuid,
    /// `webhook.test`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub occurred_at: DateTime<Utc>,
}

/// At most one test event a webhook in this long: asking cannot flood an endpoint (a third
/// party's, say) nor the outbox.
const TEST_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

#[utoipa::path(post, path = "/tenants/{id}/webhook/test", tag = "tenants",
    params(("id" = Uuid, Path, description = "The tenant's id")),
    responses((status = 202, body = TestQueued, description = "A `webhook.test` event waits to be posted after the events already due (while the endpoint is failing, after one probe of each event due before it, or at once when it answers again), signed and retried as status events are; `GET …/webhook/events?type=webhook.test` shows how its posts go"),
              (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody, description = "The tenant has no webhook, or it is disabled (its endpoint answered 410 Gone)"),
              (status = 429, body = crate::error::ErrorBody, description = "A test event was asked for less than 10 s ago; `Retry-After` says when to ask again")))]
pub async fn test(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<(StatusCode, Json<TestQueued>), ApiError> {
    super::tenants::visible(&state.pool, caller, id).await?;
    let (event, occurred_at) = match webhooks::send_test(&state.pool, id, TEST_EVERY).await? {
        webhooks::TestAsked::Queued(event, at) => (event, at),
        webhooks::TestAsked::TooSoon(left) => {
            // Whole seconds, rounded up: asked again then, it is taken.
            let wait = (left.as_secs_f64().ceil() as u32).max(1);
            return Err(ApiError::Busy {
                message: format!(
                    "one test event each {} s: ask again in {wait} s",
                    TEST_EVERY.as_secs()
                ),
                retry_after: wait,
            });
        }
        webhooks::TestAsked::NoWebhook => {
            return Err(ApiError::Conflict(
                "the tenant has no webhook: set one first (PUT …/webhook)".into(),
            ));
        }
        webhooks::TestAsked::Disabled => {
            return Err(ApiError::Conflict(
                "the webhook is disabled (its endpoint answered 410 Gone): set it again first \
                 (PUT …/webhook, the same URL too)"
                    .into(),
            ));
        }
    };
    tracing::info!(tenant_id = %id, event_id = %event, "test event queued");
    Ok((
        StatusCode::ACCEPTED,
        Json(TestQueued {
            id: event,
            kind: herald_shared::status_event::WEBHOOK_TEST,
            occurred_at,
        }),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
// Read by `QueryParams`, which utoipa cannot place as it places axum's `Query`.
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events standing here: `waiting` (not delivered yet), `delivered` or `abandoned`
    /// (given up).
    #[param(schema_with = crate::api::openapi::rules::event_delivery)]
    pub delivery: Option<String>,
    /// Only events of this type.
    #[serde(rename = "type")]
    #[param(rename = "type", schema_with = crate::api::openapi::rules::event_type)]
    pub kind: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// At most this many (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// One event of the tenant's webhook, and how its posts went.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEvent {
    /// The event's id, as its posts carry it.
    pub id: Uuid,
    /// `message.status` or `webhook.test`.
    #[serde(rename = "type")]
    pub kind: String,
    pub occurred_at: DateTime<Utc>,
    /// The message as the change left it (the post's `message`); `null` for a test event.
    pub message: Option<EventMessage>,
    /// `waiting` (not delivered yet), `delivered` or `abandoned` (given up).
    pub delivery: &'static str,
    /// Posts since it happened or was last recovered (one may be in flight).
    pub attempts: i32,
    /// While waiting: not posted before then (while the endpoint is failing, its next
    /// probe; while a post is in flight, when it may be taken again).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub abandoned_at: Option<DateTime<Utc>>,
    /// When it was last posted again on the tenant's word (`…/webhook/recover`).
    pub recovered_at: Option<DateTime<Utc>>,
    /// Why its latest failed post since it happened or was last recovered failed (the
    /// answer's status and start, or no answer), and when.
    pub last_failure: Option<String>,
    pub last_failed_at: Option<DateTime<Utc>>,
}

/// The message of a status event: what the post said of it.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventMessage {
    pub id: Uuid,
    pub state: String,
    pub delivery_status: Option<String>,
    pub last_error: Option<String>,
    pub delivery_error: Option<String>,
    pub provider_message_id: Option<String>,
}

impl From<webhooks::ListedEvent> for WebhookEvent {
    fn from(row: webhooks::ListedEvent) -> Self {
        let delivery = if row.delivered_at.is_some() {
            webhooks::Delivery::Delivered
        } else if row.abandoned_at.is_some() {
            webhooks::Delivery::Abandoned
        } else {
            webhooks::Delivery::Waiting
        };
        let message = row.message_id.map(|id| EventMessage {
            id,
            state: row.state,
            delivery_status: row.delivery_status,
            last_error: row.last_error,
            delivery_error: row.delivery_error,
            provider_message_id: row.provider_message_id,
        });
        Self {
            id: row.public_id,
            kind: row.kind,
            occurred_at: row.occurred_at,
            message,
            delivery: delivery.as_str(),
            attempts: row.attempts,
            next_attempt_at: (delivery == webhooks::Delivery::Waiting).then_some(row.next_at),
            delivered_at: row.delivered_at,
            abandoned_at: row.abandoned_at,
            recovered_at: row.recovered_at,
            last_failure: row.last_failure,
            last_failed_at: row.failed_at,
        }
    }
}

/// The types of event a webhook is posted.
pub const EVENT_TYPES: [&str; 2] = [
    herald_shared::status_event::MESSAGE_STATUS,
    herald_shared::status_event::WEBHOOK_TEST,
];

#[utoipa::path(get, path = "/tenants/{id}/webhook/events", tag = "tenants",
    params(("id" = Uuid, Path, description = "The tenant's id"), EventsQuery),
    responses((status = 200, body = Page<WebhookEvent>, description = "The tenant's webhook events, newest first (kept as long as receipts are), with how their posts went"),
              (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    QueryParams(query): QueryParams<EventsQuery>,
) -> Result<Json<Page<WebhookEvent>>, ApiError> {
    super::tenants::visible(&state.pool, caller, id).await?;
    let delivery = query
        .delivery
        .as_deref()
        .map(|d| {
            webhooks::Delivery::parse(d).ok_or_else(|| {
                ApiError::field(
                    "delivery",
                    format!(
                        "unknown delivery `{}`: waiting, delivered or abandoned",
                        validate::clip(d)
                    ),
                )
            })
        })
        .transpose()?;
    if let Some(kind) = query.kind.as_deref()
        && !EVENT_TYPES.contains(&kind)
    {
        return Err(ApiError::field(
            "type",
            format!(
                "unknown type `{}`: {}",
                validate::clip(kind),
                EVENT_TYPES.join(" or ")
            ),
        ));
    }
    let limit = page::limit(query.limit)?;
    let after: Option<webhooks::EventKey> = page::decode(query.cursor.as_deref())?;
    // A time chrono reads but PostgreSQL cannot store is refused here, naming the cursor.
    if after.is_some_and(|(at, _)| !(1..=9999).contains(&at.year())) {
        return Err(page::forged());
    }
    let rows = webhooks::list_events(
        &state.pool,
        id,
        delivery,
        query.kind.as_deref(),
        after,
        page::fetch_limit(limit),
    )
    .await?;
    Ok(Json(Page::of(
        rows.into_iter().map(WebhookEvent::from).collect(),
        limit,
        |e| (e.occurred_at, e.id),
    )))
}

#[utoipa::path(delete, path = "/tenants/{id}/webhook", tag = "tenants",
    params(("id" = Uuid, Path, description = "The tenant's id")),
    responses((status = 204, description = "Removed, with the events still waiting (or there was none)"),
              (status = 404, body = crate::error::ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    super::tenants::visible(&state.pool, caller, id).await?;
    if webhooks::remove(&state.pool, id).await? {
        tracing::info!(tenant_id = %id, "status webhook removed");
    }
    Ok(StatusCode::NO_CONTENT)
}
