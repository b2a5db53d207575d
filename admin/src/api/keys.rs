//! API keys after they are made: list, revoke, rotate. (Keys are made per tenant, see
//! [`super::tenants::create_key`].)
//!
//! A tenant key manages its own tenant's keys (a `send` key none: it reaches the messages API
//! only); an operator key manages every key, and is the only one that may touch operator keys. A key another caller may not manage looks like a
//! key that does not exist. Rotation makes the new key and revokes the old one in one
//! transaction; the old one may be kept working for a grace period, so that the services
//! using it can be moved to the new one without a gap.

use super::OptionalJsonBody;
use crate::auth::{self, Caller};
use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use herald_store::keys::{self, Key};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Longest grace a rotated key may keep working: a week.
pub const MAX_GRACE_SECONDS: i64 = 7 * 86_400;

/// What a rotation answers: the new key's secret, shown this once, and the old key.
#[derive(Debug, Serialize, ToSchema)]
pub struct Rotated {
    pub id: Uuid,
    pub name: String,
    /// The new secret: store it now, it cannot be shown again.
    pub key: String,
    /// The key it replaces, with the time it stops working.
    pub replaced: Key,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    /// How long the old key keeps working, 0 (the default: at once) to 604800 (a week).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 604800)]
    pub grace_seconds: i64,
}

#[utoipa::path(get, path = "/keys", tag = "keys",
    responses((status = 200, body = Vec<Key>), (status = 401, body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<Key>>, ApiError> {
    Ok(Json(keys::list(&state.pool, caller.scope()).await?))
}

#[utoipa::path(post, path = "/keys/{id}/revoke", tag = "keys",
    params(("id" = Uuid, Path, description = "The key's id")),
    responses((status = 200, body = Key), (status = 401, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Key>, ApiError> {
    let mut tx = state.pool.begin().await?;
    let key = manageable(&mut tx, caller, id).await?;
    if !key.active {
        return Err(ApiError::Conflict("the key is already revoked".into()));
    }
    let key = keys::end(&mut tx, id, 0.0).await?;
    tx.commit().await?;
    tracing::info!(key_id = %id, tenant_id = ?key.tenant_id, "API key revoked");
    Ok(Json(key))
}

#[utoipa::path(post, path = "/keys/{id}/rotate", tag = "keys", request_body(content = Option<Rotation>),
    params(("id" = Uuid, Path, description = "The key's id")),
    responses((status = 201, body = Rotated), (status = 401, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    OptionalJsonBody(rotation): OptionalJsonBody<Rotation>,
) -> Result<(StatusCode, Json<Rotated>), ApiError> {
    // No body means no grace.
    if !(0..=MAX_GRACE_SECONDS).contains(&rotation.grace_seconds) {
        return Err(ApiError::field(
            "grace_seconds",
            format!("must be between 0 and {MAX_GRACE_SECONDS}"),
        ));
    }
    let mut tx = state.pool.begin().await?;
    let old = manageable(&mut tx, caller, id).await?;
    if !old.active {
        return Err(ApiError::Conflict(
            "the key is revoked; make a new one instead".into(),
        ));
    }
    // Rotated already (it stops at the end of its grace): a second rotation, a retry whose
    // first answer was lost say, would leave two keys that never stop where one was asked.
    if let Some(stops) = old.revoked_at {
        return Err(ApiError::Conflict(format!(
            "the key was rotated already and stops at {}; rotate the key that replaced it",
            stops.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )));
    }
    let new = auth::generate(old.tenant_id);
    let new_id = keys::insert(
        &mut tx,
        old.tenant_id,
        old.access,
        &old.name,
        &new.prefix,
        &new.hash,
    )
    .await?;
    // A key already due to stop keeps its earlier end.
    let replaced = keys::end(&mut tx, id, rotation.grace_seconds as f64).await?;
    tx.commit().await?;
    tracing::info!(key_id = %id, new_key_id = %new_id, tenant_id = ?old.tenant_id,
        grace_seconds = rotation.grace_seconds, "API key rotated");
    Ok((
        StatusCode::CREATED,
        Json(Rotated {
            id: new_id,
            name: old.name,
            key: new.secret,
            replaced,
        }),
    ))
}

/// The key `id`, locked, if `caller` may manage it; otherwise as if it did not exist.
async fn manageable(
    tx: &mut sqlx::PgConnection,
    caller: Caller,
    id: Uuid,
) -> Result<Key, ApiError> {
    keys::lock(tx, caller.scope(), id)
        .await?
        .ok_or(ApiError::NotFound("key"))
}
