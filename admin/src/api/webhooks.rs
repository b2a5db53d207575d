//! A tenant's status webhook: the URL Herald posts its transactional messages' changes to
//! (`herald_shared::status_event`), signed with a secret shown once. A tenant key sets its
//! own tenant's; an operator key any tenant's. Each `PUT` issues a new secret: the events
//! still waiting go to the URL it names, signed with it.

use super::JsonBody;
use crate::auth::Caller;
use crate::endpoints::Refusal;
use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use herald_store::tenants;
use herald_store::webhooks::{self, WAITING_COUNTED};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
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
}

/// A tenant's webhook (`url` null: none set, its messages' events are not posted).
#[derive(Debug, Serialize, ToSchema)]
pub struct Webhook {
    pub tenant_id: Uuid,
    pub url: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    /// Events not yet delivered (counted up to 100,000).
    pub waiting: i64,
    /// When the oldest of them happened: how far behind the endpoint is.
    pub oldest_waiting_at: Option<DateTime<Utc>>,
    /// Why the latest failed post of a waiting event failed (its answer's status and start,
    /// or no answer).
    pub last_failure: Option<String>,
}

impl From<webhooks::Webhook> for Webhook {
    fn from(row: webhooks::Webhook) -> Self {
        Self {
            tenant_id: row.tenant_id,
            url: Some(row.url),
            created_at: Some(row.created_at),
            updated_at: Some(row.updated_at),
            waiting: row.waiting.min(WAITING_COUNTED),
            oldest_waiting_at: row.oldest_waiting_at,
            last_failure: row.last_failure,
        }
    }
}

/// A webhook just set, with its signing secret: shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookSet {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// The key of each event's `Herald-Signature` (`t=<unix seconds>,v1=<hex HMAC-SHA256 of
    /// "<t>.<body>">`); store it now, it cannot be shown again.
    pub secret: String,
}

/// The tenant `id` as `caller` may see it, or 404.
async fn visible_tenant(state: &AppState, caller: Caller, id: Uuid) -> Result<(), ApiError> {
    if tenants::get(&state.pool, caller.scope(), id)
        .await?
        .is_some()
    {
        Ok(())
    } else {
        Err(ApiError::NotFound("tenant"))
    }
}

#[utoipa::path(put, path = "/tenants/{id}/webhook", tag = "tenants",
    request_body = NewWebhook,
    params(("id" = Uuid, Path, description = "The tenant's id")),
    responses((status = 200, body = WebhookSet, description = "Set, with a new secret"),
              (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody),
              (status = 503, body = crate::error::ErrorBody, description = "The URL's host could not be resolved now")))]
pub async fn set(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    JsonBody(body): JsonBody<NewWebhook>,
) -> Result<Json<WebhookSet>, ApiError> {
    visible_tenant(&state, caller, id).await?;
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
    let row = webhooks::set(&state.pool, id, &url, &sealed).await?;
    tracing::info!(tenant_id = %id, "status webhook set");
    Ok(Json(WebhookSet {
        webhook: row.into(),
        secret,
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
    visible_tenant(&state, caller, id).await?;
    Ok(Json(webhooks::get(&state.pool, id).await?.map_or(
        Webhook {
            tenant_id: id,
            url: None,
            created_at: None,
            updated_at: None,
            waiting: 0,
            oldest_waiting_at: None,
            last_failure: None,
        },
        Webhook::from,
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
    visible_tenant(&state, caller, id).await?;
    if webhooks::remove(&state.pool, id).await? {
        tracing::info!(tenant_id = %id, "status webhook removed");
    }
    Ok(StatusCode::NO_CONTENT)
}
