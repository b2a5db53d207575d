//! Tenants and their API keys. Creating a tenant needs an operator key; a tenant's keys are
//! made by an operator or by one of the tenant's own `full` keys (which could make one by
//! rotating itself anyway).

use super::JsonBody;
use crate::auth::{self, Caller};
use crate::error::{ApiError, FieldError, from_constraint};
use crate::phone;
use crate::state::AppState;
use crate::validate;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use herald_store::keys::Access;
use herald_store::tenants::{self, Scope, Tenant, TenantChanges, TenantSettings};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    #[schema(schema_with = crate::api::openapi::rules::name)]
    pub name: String,
    /// Share of dispatch capacity relative to other tenants (1–1000).
    #[serde(default = "one")]
    #[schema(minimum = 1, maximum = 1000, default = 1)]
    pub weight: i32,
    /// IANA time zone (one PostgreSQL knows, `Europe/Paris`) used by default for the quiet
    /// hours of this tenant's campaigns.
    #[serde(default = "utc")]
    #[schema(default = "UTC")]
    pub time_zone: String,
    /// Calls this tenant may have live at once (1–100000; omit: no cap).
    #[schema(minimum = 1, maximum = 100000)]
    pub max_live_calls: Option<i32>,
    /// Region of numbers uploaded without a country code (ISO 3166-1 alpha-2, `FR`, `US`):
    /// `06 12 34 56 78` is then read as +33612345678. Omit: numbers need their country code.
    #[schema(schema_with = crate::api::openapi::rules::optional_region)]
    pub default_region: Option<String>,
    /// Transactional messages accepted and not yet finished at once (1–10000000).
    #[serde(default = "ten_thousand")]
    #[schema(minimum = 1, maximum = 10000000, default = 10000)]
    pub max_queued_messages: i32,
    /// Transactional messages a day, in the tenant's time zone (1–100000000; omit: no cap).
    #[schema(minimum = 1, maximum = 100000000)]
    pub max_messages_per_day: Option<i32>,
}

fn ten_thousand() -> i32 {
    10_000
}

fn one() -> i32 {
    1
}

fn utc() -> String {
    "UTC".to_owned()
}

#[utoipa::path(post, path = "/tenants", tag = "tenants", request_body = NewTenant,
    responses((status = 201, body = Tenant), (status = 403, body = crate::error::ErrorBody),
              (status = 409, description = "One of the same name exists already", body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<NewTenant>,
) -> Result<(StatusCode, Json<Tenant>), ApiError> {
    caller.require_operator()?;
    let given = TenantChanges {
        name: Some(&body.name),
        weight: Some(body.weight),
        time_zone: Some(&body.time_zone),
        max_live_calls: Some(body.max_live_calls),
        default_region: Some(body.default_region.as_deref()),
        max_queued_messages: Some(body.max_queued_messages),
        max_messages_per_day: Some(body.max_messages_per_day),
    };
    let fields = problems(&state, &given).await?;
    if !fields.is_empty() {
        return Err(ApiError::fields("tenant", fields));
    }
    let settings = TenantSettings {
        name: body.name.trim(),
        weight: body.weight,
        time_zone: &body.time_zone,
        max_live_calls: body.max_live_calls,
        default_region: body.default_region.as_deref(),
        max_queued_messages: body.max_queued_messages,
        max_messages_per_day: body.max_messages_per_day,
    };
    let tenant = tenants::create(&state.pool, &settings)
        .await
        .map_err(|e| from_constraint(e, "tenant"))?;
    tracing::info!(tenant_id = %tenant.id, "tenant created");
    Ok((StatusCode::CREATED, Json(tenant)))
}

/// What is wrong with the settings `given` (those not given are not looked at).
async fn problems(
    state: &AppState,
    given: &TenantChanges<'_>,
) -> Result<Vec<FieldError>, ApiError> {
    let mut fields = Vec::new();
    let mut bad = |field: &str, reason: String| {
        fields.push(FieldError {
            field: field.into(),
            reason,
        })
    };
    let outside = |value: Option<i32>, low: i32, high: i32| {
        value
            .filter(|v| !(low..=high).contains(v))
            .map(|_| format!("must be between {low} and {high}"))
    };
    if let Some(Err(reason)) = given.name.map(validate::name) {
        bad("name", reason);
    }
    if let Some(reason) = outside(given.weight, 1, 1000) {
        bad("weight", reason);
    }
    if let Some(reason) = outside(given.max_live_calls.flatten(), 1, 100_000) {
        bad("max_live_calls", reason);
    }
    if let Some(reason) = outside(given.max_queued_messages, 1, 10_000_000) {
        bad("max_queued_messages", reason);
    }
    if let Some(reason) = outside(given.max_messages_per_day.flatten(), 1, 100_000_000) {
        bad("max_messages_per_day", reason);
    }
    if let Some(Err(reason)) = given.default_region.flatten().map(phone::region) {
        bad("default_region", reason);
    }
    if let Some(zone) = given.time_zone
        && !tenants::known_time_zone(&state.pool, zone).await?
    {
        bad(
            "time_zone",
            format!("`{}` is not an IANA time zone", validate::clip(zone)),
        );
    }
    Ok(fields)
}

/// Changes to a tenant's settings: each field given replaces it; `null` removes one a
/// tenant may be without (`max_live_calls`, `default_region`, `max_messages_per_day`).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantUpdate {
    #[serde(default, deserialize_with = "given")]
    #[schema(schema_with = crate::api::openapi::rules::name)]
    pub name: Option<String>,
    /// Share of dispatch capacity relative to other tenants (1–1000), from the next tick.
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = i32, minimum = 1, maximum = 1000)]
    pub weight: Option<i32>,
    /// IANA time zone (one PostgreSQL knows).
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = String, example = "Europe/Paris")]
    pub time_zone: Option<String>,
    /// Calls this tenant may have live at once (1–100000; `null`: no cap).
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = Option<i32>, minimum = 1, maximum = 100000)]
    pub max_live_calls: Option<Option<i32>>,
    /// Region of numbers uploaded without a country code (`null`: none).
    #[serde(default, deserialize_with = "given")]
    #[schema(schema_with = crate::api::openapi::rules::optional_region)]
    pub default_region: Option<Option<String>>,
    /// Transactional messages accepted and not yet finished at once (1–10000000).
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = i32, minimum = 1, maximum = 10000000)]
    pub max_queued_messages: Option<i32>,
    /// Transactional messages a day (1–100000000; `null`: no cap).
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = Option<i32>, minimum = 1, maximum = 100000000)]
    pub max_messages_per_day: Option<Option<i32>>,
}

/// A field given: `null` is `Some(None)` where the setting may be absent, and refused where
/// it may not; one left out stays `None`.
fn given<'de, T, D>(deserializer: D) -> Result<Option<T>, D::Error>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    T::deserialize(deserializer).map(Some)
}

#[utoipa::path(patch, path = "/tenants/{id}", tag = "tenants", request_body = TenantUpdate,
    params(("id" = Uuid, Path, description = "The tenant's id")),
    responses((status = 200, body = Tenant), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "Another tenant has the name", body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    JsonBody(body): JsonBody<TenantUpdate>,
) -> Result<Json<Tenant>, ApiError> {
    caller.require_operator()?;
    // The name is checked as given, as at creation, and stored trimmed.
    let mut changes = TenantChanges {
        name: body.name.as_deref(),
        weight: body.weight,
        time_zone: body.time_zone.as_deref(),
        max_live_calls: body.max_live_calls,
        default_region: body.default_region.as_ref().map(Option::as_deref),
        max_queued_messages: body.max_queued_messages,
        max_messages_per_day: body.max_messages_per_day,
    };
    let fields = problems(&state, &changes).await?;
    if !fields.is_empty() {
        return Err(ApiError::fields("tenant", fields));
    }
    changes.name = changes.name.map(str::trim);
    let tenant = tenants::update(&state.pool, id, &changes)
        .await
        .map_err(|e| from_constraint(e, "tenant"))?
        .ok_or(ApiError::NotFound("tenant"))?;
    tracing::info!(tenant_id = %id, ?changes, "tenant changed");
    Ok(Json(tenant))
}

#[utoipa::path(get, path = "/tenants", tag = "tenants", responses((status = 200, body = Vec<Tenant>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<Tenant>>, ApiError> {
    Ok(Json(tenants::list(&state.pool, caller.scope()).await?))
}

#[utoipa::path(get, path = "/tenants/{id}", tag = "tenants",
    responses((status = 200, body = Tenant), (status = 404, body = crate::error::ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Tenant>, ApiError> {
    tenants::get(&state.pool, caller.scope(), id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("tenant"))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    #[schema(schema_with = crate::api::openapi::rules::name)]
    pub name: String,
    /// `full` (the default): everything of the tenant; `send`: only the messages API (send,
    /// read and cancel messages), for a service that sends transactional messages.
    #[serde(default)]
    pub access: Access,
}

/// A key, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    pub id: Uuid,
    pub name: String,
    pub access: Access,
    pub key: String,
}

/// Tenant `id` as `caller` may see it, or 404: another tenant's id looks like one that does
/// not exist (for the operations on a tenant's own settings: keys, default providers, its
/// webhook).
pub(super) async fn visible(pool: &sqlx::PgPool, caller: Caller, id: Uuid) -> Result<(), ApiError> {
    if tenants::get(pool, caller.scope(), id).await?.is_some() {
        Ok(())
    } else {
        Err(ApiError::NotFound("tenant"))
    }
}

#[utoipa::path(post, path = "/tenants/{id}/keys", tag = "tenants", request_body = NewKey,
    responses((status = 201, body = CreatedKey), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    JsonBody(body): JsonBody<NewKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    validate::name(&body.name).map_err(|reason| ApiError::field("name", reason))?;
    visible(&state.pool, caller, id).await?;
    let name = body.name.trim();
    let (key_id, key) = auth::create_key(&state.pool, Some(id), body.access, name).await?;
    tracing::info!(tenant_id = %id, key_id = %key_id, access = ?body.access, "tenant key created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            id: key_id,
            name: name.to_owned(),
            access: body.access,
            key,
        }),
    ))
}

/// What a list's address filter `text` may be stored as ([`phone::filter_forms`]), a
/// number without its country code read in the regions of the tenants the list shows
/// (`scope`, narrowed to `tenant` or campaign `campaign`'s tenant), looked up only then.
pub(crate) async fn address_forms(
    pool: &sqlx::PgPool,
    scope: Scope,
    tenant: Option<Uuid>,
    campaign: Option<Uuid>,
    text: Option<&str>,
) -> Result<Vec<String>, ApiError> {
    let regions = if phone::filter_wants_regions(text) {
        tenants::regions(pool, scope, tenant, campaign)
            .await?
            .iter()
            .filter_map(|r| phone::region(r).ok())
            .collect()
    } else {
        Vec::new()
    };
    Ok(phone::filter_forms(text, &regions))
}

/// The region tenant `tenant`'s phone numbers written without a country code are read in
/// (none: such numbers are refused), read on `conn`; `422` naming `tenant_id` when there is
/// no such tenant.
pub(crate) async fn phone_region(
    conn: &mut sqlx::PgConnection,
    tenant: Uuid,
) -> Result<Option<phonenumber::country::Id>, ApiError> {
    let Some(region) = tenants::default_region(conn, tenant).await? else {
        return Err(ApiError::field("tenant_id", "no such tenant"));
    };
    Ok(region.as_deref().and_then(|r| phone::region(r).ok()))
}
