//! A tenant's suppression list: the addresses its messages must not reach on a channel,
//! whichever provider would carry them (the worker's lease refuses them; a provider's
//! opt-out refusal, Twilio 21610, and a recipient's STOP to a tenant's own Twilio number
//! add to the list by themselves).

use super::page::{self, Page};
use super::{JsonBody, QueryParams};
use crate::auth::Caller;
use crate::error::{ApiError, FieldError};
use crate::phone;
use crate::state::AppState;
use crate::validate;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use herald_store as store;
use herald_store::suppressions::Suppression;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// Addresses one request may add: a list larger than this comes in several requests.
const MAX_ADDRESSES: usize = 1_000;
/// A reason's length, in characters (the column's bound).
const MAX_REASON: usize = 500;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSuppressions {
    /// Operators only; ignored for tenant keys.
    pub tenant_id: Option<Uuid>,
    #[schema(schema_with = crate::api::openapi::rules::channel)]
    pub channel: String,
    /// Phone numbers as people write them (`+33 6 12 34 56 78`; without a country code, read
    /// in the tenant's `default_region`), stored as recipients are, in E.164.
    #[schema(min_items = 1, max_items = 1000)]
    pub addresses: Vec<String>,
    /// Why (where the opt-out came from): shown with each entry.
    #[schema(max_length = 500)]
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SuppressionsAdded {
    /// Addresses in the request (one written twice counts once).
    pub received: u64,
    /// Addresses the tenant now holds that it did not: new ones, and ones a STOP or a
    /// provider's refusal listed (a START no longer takes them off). Those it held stay.
    pub added: u64,
}

#[utoipa::path(post, path = "/suppressions", tag = "suppressions", request_body = NewSuppressions,
    responses((status = 200, body = SuppressionsAdded), (status = 422, body = crate::error::ErrorBody)))]
pub async fn add(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<NewSuppressions>,
) -> Result<Json<SuppressionsAdded>, ApiError> {
    let tenant = caller.owning_tenant(body.tenant_id)?;
    let region = super::tenants::phone_region(&mut *state.pool.acquire().await?, tenant).await?;
    let mut fields = Vec::new();
    let channel = validate::channel(&body.channel)
        .map_err(|reason| {
            fields.push(FieldError {
                field: "channel".into(),
                reason,
            })
        })
        .ok();
    if body.addresses.is_empty() || body.addresses.len() > MAX_ADDRESSES {
        fields.push(FieldError {
            field: "addresses".into(),
            reason: format!("between 1 and {MAX_ADDRESSES} addresses"),
        });
    }
    let mut addresses = Vec::with_capacity(body.addresses.len());
    for (i, address) in body.addresses.iter().enumerate().take(MAX_ADDRESSES) {
        match phone::normalize(address, region) {
            Ok(address) => addresses.push(address),
            Err(reason) => fields.push(FieldError {
                field: format!("addresses[{i}]"),
                reason,
            }),
        }
    }
    let reason = body
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty());
    if let Some(reason) = reason {
        if reason.chars().count() > MAX_REASON {
            fields.push(FieldError {
                field: "reason".into(),
                reason: format!("at most {MAX_REASON} characters"),
            });
        } else if reason.contains('\0') {
            fields.push(FieldError {
                field: "reason".into(),
                reason: "must not contain a NUL character".into(),
            });
        }
    }
    let (Some(channel), true) = (channel, fields.is_empty()) else {
        return Err(ApiError::fields("suppressions", fields));
    };
    addresses.sort_unstable();
    addresses.dedup();
    let added = store::suppressions::add(&state.pool, tenant, channel, &addresses, reason).await?;
    tracing::info!(tenant_id = %tenant, %channel, added, "suppressions added");
    Ok(Json(SuppressionsAdded {
        received: addresses.len() as u64,
        added,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
// Read by `QueryParams`, which utoipa cannot place as it places axum's `Query`.
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this tenant's (a tenant key sees only its own anyway).
    pub tenant_id: Option<Uuid>,
    /// Only this channel's.
    #[param(schema_with = crate::api::openapi::rules::channel)]
    pub channel: Option<String>,
    /// Only this address: as stored, or a phone number as people write it (`+33 6 12 34
    /// 56 78` finds `+33612345678`; without its country code, read in the default region
    /// of the tenants listed, as their uploads are).
    pub address: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// At most this many (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/suppressions", tag = "suppressions", params(ListQuery),
    responses((status = 200, body = Page<Suppression>), (status = 422, body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<Page<Suppression>>, ApiError> {
    let limit = page::limit(query.limit)?;
    let after: Option<i64> = page::decode(query.cursor.as_deref())?;
    let channel = query
        .channel
        .as_deref()
        .map(validate::channel)
        .transpose()
        .map_err(|reason| ApiError::field("channel", reason))?;
    let address = super::tenants::address_forms(
        &state.pool,
        caller.scope(),
        query.tenant_id,
        None,
        query.address.as_deref(),
    )
    .await?;
    let rows = store::suppressions::list(
        &state.pool,
        caller.scope(),
        query.tenant_id,
        channel,
        &address,
        after,
        page::fetch_limit(limit),
    )
    .await?;
    Ok(Json(Page::of(rows, limit, |s: &Suppression| s.id)))
}

#[utoipa::path(delete, path = "/suppressions/{id}", tag = "suppressions",
    params(("id" = i64, Path, description = "The suppression's id")),
    responses((status = 204, description = "Removed: the next message to the address is sent"),
              (status = 404, body = crate::error::ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    if !store::suppressions::remove(&state.pool, caller.scope(), id).await? {
        return Err(ApiError::NotFound("suppression"));
    }
    tracing::info!(suppression_id = id, "suppression removed");
    Ok(StatusCode::NO_CONTENT)
}
