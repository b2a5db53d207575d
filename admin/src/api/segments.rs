//! Segments: a named filter over a tenant's contacts (see [`herald_store::segments::filter`]), validated when
//! saved and compiled to parameterized SQL whenever it is used.

use super::JsonBody;
use crate::auth::Caller;
use crate::error::{ApiError, FieldError, from_constraint};
use crate::state::AppState;
use crate::validate;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use herald_store::segments::filter::Filter;
use herald_store::segments::{self, Deleted, Segment};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSegment {
    /// Operators only; ignored for tenant keys.
    pub tenant_id: Option<Uuid>,
    #[schema(schema_with = crate::api::openapi::rules::name)]
    pub name: String,
    /// In the filter language (API.md), e.g.
    /// `lifetime_value > 10000 and last_purchase > 365 days ago`.
    #[schema(min_length = 1)]
    pub filter: String,
}

#[utoipa::path(post, path = "/segments", tag = "segments", request_body = NewSegment,
    responses((status = 201, body = Segment), (status = 409, description = "One of the same name exists already, or the tenant keeps as many segments as it may", body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<NewSegment>,
) -> Result<(StatusCode, Json<Segment>), ApiError> {
    let tenant = caller.owning_tenant(body.tenant_id)?;
    let mut fields = Vec::new();
    if let Err(reason) = validate::name(&body.name) {
        fields.push(FieldError {
            field: "name".into(),
            reason,
        });
    }
    if let Err(error) = Filter::parse(&body.filter) {
        fields.push(FieldError {
            field: "filter".into(),
            reason: error.to_string(),
        });
    }
    if !fields.is_empty() {
        return Err(ApiError::fields("segment", fields));
    }
    let max = state.max_segments;
    let segment = segments::create(&state.pool, tenant, body.name.trim(), &body.filter, max)
        .await
        .map_err(|e| from_constraint(e, "segment"))?
        .ok_or_else(|| {
            ApiError::Conflict(format!(
                "the tenant keeps {max} segments, the most it may \
                 (HERALD_ADMIN_MAX_SEGMENTS_PER_TENANT): delete one it no longer needs first"
            ))
        })?;
    Ok((StatusCode::CREATED, Json(segment)))
}

#[utoipa::path(delete, path = "/segments/{id}", tag = "segments",
    params(("id" = Uuid, Path, description = "The segment's id")),
    responses((status = 204, description = "Deleted"), (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "A draft campaign waits to be started with it", body = crate::error::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    match segments::delete(&state.pool, caller.scope(), id).await? {
        Deleted::Gone => {
            tracing::info!(segment_id = %id, "segment deleted");
            Ok(StatusCode::NO_CONTENT)
        }
        Deleted::NotFound => Err(ApiError::NotFound("segment")),
        Deleted::InUse(drafts, more) => {
            let drafts: Vec<String> = drafts.iter().map(Uuid::to_string).collect();
            Err(ApiError::Conflict(format!(
                "draft campaigns wait to be started with this segment ({}{}): start or \
                 cancel them first",
                drafts.join(", "),
                if more { ", and more" } else { "" }
            )))
        }
    }
}

#[utoipa::path(get, path = "/segments", tag = "segments", responses((status = 200, body = Vec<Segment>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<Segment>>, ApiError> {
    Ok(Json(segments::list(&state.pool, caller.scope()).await?))
}

async fn fetch(state: &AppState, caller: Caller, id: Uuid) -> Result<Segment, ApiError> {
    segments::get(&state.pool, caller.scope(), id)
        .await?
        .ok_or(ApiError::NotFound("segment"))
}

#[utoipa::path(get, path = "/segments/{id}", tag = "segments",
    responses((status = 200, body = Segment), (status = 404, body = crate::error::ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Segment>, ApiError> {
    Ok(Json(fetch(&state, caller, id).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SegmentCount {
    pub contacts: i64,
}

#[utoipa::path(get, path = "/segments/{id}/count", tag = "segments",
    responses((status = 200, body = SegmentCount), (status = 404, body = crate::error::ErrorBody)))]
pub async fn count(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<SegmentCount>, ApiError> {
    let segment = fetch(&state, caller, id).await?;
    let filter =
        Filter::parse(&segment.filter).map_err(|e| ApiError::field("filter", e.to_string()))?;
    let contacts = segments::count(&state.pool, segment.tenant_id, &filter).await?;
    Ok(Json(SegmentCount { contacts }))
}
