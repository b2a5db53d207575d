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
use herald_store::tenants::{self, Tenant, TenantSettings};
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
    let mut fields = Vec::new();
    if let Err(reason) = validate::name(&body.name) {
        fields.push(FieldError {
            field: "name".into(),
            reason,
        });
    }
    if !(1..=1000).contains(&body.weight) {
        fields.push(FieldError {
            field: "weight".into(),
            reason: "must be between 1 and 1000".into(),
        });
    }
    if body
        .max_live_calls
        .is_some_and(|n| !(1..=100_000).contains(&n))
    {
        fields.push(FieldError {
            field: "max_live_calls".into(),
            reason: "must be between 1 and 100000".into(),
        });
    }
    if !(1..=10_000_000).contains(&body.max_queued_messages) {
        fields.push(FieldError {
            field: "max_queued_messages".into(),
            reason: "must be between 1 and 10000000".into(),
        });
    }
    if body
        .max_messages_per_day
        .is_some_and(|n| !(1..=100_000_000).contains(&n))
    {
        fields.push(FieldError {
            field: "max_messages_per_day".into(),
            reason: "must be between 1 and 100000000".into(),
        });
    }
    if let Some(Err(reason)) = body.default_region.as_deref().map(phone::region) {
        fields.push(FieldError {
            field: "default_region".into(),
            reason,
        });
    }
    if !tenants::known_time_zone(&state.pool, &body.time_zone).await? {
        fields.push(FieldError {
            field: "time_zone".into(),
            reason: format!(
                "`{}` is not an IANA time zone",
                validate::clip(&body.time_zone)
            ),
        });
    }
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
    // Another tenant's id looks like one that does not exist.
    if tenants::get(&state.pool, caller.scope(), id)
        .await?
        .is_none()
    {
        return Err(ApiError::NotFound("tenant"));
    }
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
