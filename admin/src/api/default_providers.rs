//! A tenant's default provider (and overflow) per channel: what its transactional messages
//! use when they name no `provider_id`. A tenant key sets its own tenant's; an operator key
//! any tenant's.

use super::JsonBody;
use crate::auth::Caller;
use crate::error::{ApiError, FieldError};
use crate::state::AppState;
use crate::validate;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use herald_shared::domain::Channel;
use herald_store::tenants::{self, DefaultProviderRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DefaultProvider {
    #[schema(schema_with = crate::api::openapi::rules::channel)]
    pub channel: String,
    pub provider_id: Uuid,
    pub overflow_provider_id: Option<Uuid>,
    pub updated_at: DateTime<Utc>,
}

impl From<DefaultProviderRow> for DefaultProvider {
    fn from(row: DefaultProviderRow) -> Self {
        Self {
            channel: row.channel,
            provider_id: row.provider_id,
            overflow_provider_id: row.overflow_provider_id,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDefaultProvider {
    /// A provider the tenant may use: its own or a shared one.
    pub provider_id: Uuid,
    /// Optional second provider (not `provider_id`), used only when `provider_id` has no
    /// room (or is behind on its commitment).
    pub overflow_provider_id: Option<Uuid>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ChannelPath {
    /// The tenant's id.
    pub id: Uuid,
    #[param(schema_with = crate::api::openapi::rules::channel)]
    pub channel: String,
}

fn channel(name: &str) -> Result<Channel, ApiError> {
    validate::channel(name).map_err(|reason| ApiError::field("channel", reason))
}

#[utoipa::path(get, path = "/tenants/{id}/default-providers", tag = "tenants",
    responses((status = 200, body = Vec<DefaultProvider>), (status = 404, body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Vec<DefaultProvider>>, ApiError> {
    super::tenants::visible(&state.pool, caller, id).await?;
    let rows = tenants::default_providers(&state.pool, id).await?;
    Ok(Json(rows.into_iter().map(DefaultProvider::from).collect()))
}

#[utoipa::path(put, path = "/tenants/{id}/default-providers/{channel}", tag = "tenants",
    request_body = NewDefaultProvider,
    params(ChannelPath),
    responses((status = 200, body = DefaultProvider), (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn set(
    State(state): State<AppState>,
    caller: Caller,
    Path(ChannelPath { id, channel: name }): Path<ChannelPath>,
    JsonBody(body): JsonBody<NewDefaultProvider>,
) -> Result<Json<DefaultProvider>, ApiError> {
    super::tenants::visible(&state.pool, caller, id).await?;
    let channel = channel(&name)?;
    let mut fields = Vec::new();
    let misfit = |provider| super::provider_fit::misfit(&state.pool, provider, id, Some(channel));
    if let Some(reason) = misfit(body.provider_id).await? {
        fields.push(FieldError {
            field: "provider_id".into(),
            reason,
        });
    }
    if let Some(overflow) = body.overflow_provider_id {
        if overflow == body.provider_id {
            fields.push(FieldError {
                field: "overflow_provider_id".into(),
                reason: "must differ from provider_id".into(),
            });
        } else if let Some(reason) = misfit(overflow).await? {
            fields.push(FieldError {
                field: "overflow_provider_id".into(),
                reason,
            });
        }
    }
    if !fields.is_empty() {
        return Err(ApiError::fields("default provider", fields));
    }
    let row = tenants::set_default_provider(
        &state.pool,
        id,
        channel.as_str(),
        body.provider_id,
        body.overflow_provider_id,
    )
    .await?
    .map(DefaultProvider::from)
    .ok_or_else(|| {
        ApiError::field(
            "provider_id",
            "the provider or its overflow was retired meanwhile: choose another",
        )
    })?;
    tracing::info!(tenant_id = %id, channel = %row.channel, provider_id = %row.provider_id, "default provider set");
    Ok(Json(row))
}

#[utoipa::path(delete, path = "/tenants/{id}/default-providers/{channel}", tag = "tenants",
    params(ChannelPath),
    responses((status = 204, description = "Removed (or there was none)"),
              (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(ChannelPath { id, channel: name }): Path<ChannelPath>,
) -> Result<StatusCode, ApiError> {
    super::tenants::visible(&state.pool, caller, id).await?;
    let channel = channel(&name)?;
    tenants::remove_default_provider(&state.pool, id, channel.as_str()).await?;
    Ok(StatusCode::NO_CONTENT)
}
