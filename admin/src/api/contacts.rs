//! A tenant's contacts (the address book segments select from): streamed upsert and listing.

use super::QueryParams;
use super::page::{self, Page};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::staging;
use crate::state::AppState;
use crate::upload::Format;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use herald_store as store;
use herald_store::contacts::Contact;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
// Read by `QueryParams`, which utoipa cannot place as it places axum's `Query`.
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// The tenant (operator keys only).
    pub tenant_id: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ContactUploadResult {
    pub received: u64,
    pub inserted: u64,
    pub updated: u64,
}

#[utoipa::path(post, path = "/contacts", tag = "contacts", params(UploadQuery),
    request_body(description = "CSV with an `address` (or `phone`) column, other columns becoming attributes (a number a JSON number unless JSON would write it otherwise, as 007 or 19.90); NDJSON or a JSON array of {address, attributes}. Rows are checked one by one: an invalid row is named in the 422's `rows` and nothing is imported.",
        content((String = "text/csv"), (String = "application/x-ndjson"),
                (Vec<crate::upload::JsonRow> = "application/json"))),
    responses((status = 200, body = ContactUploadResult), (status = 408, body = crate::error::ErrorBody),
              (status = 413, body = crate::error::ErrorBody), (status = 415, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody)))]
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ContactUploadResult>, ApiError> {
    let format = Format::of_request(&headers)?;
    let tenant = caller.owning_tenant(query.tenant_id)?;
    let _slot = state.uploads.take(caller.scope().tenant())?;
    let mut tx = state.pool.begin().await?;
    let region = super::tenants::phone_region(&mut tx, tenant).await?;
    let received = staging::stage(
        &mut tx,
        body,
        format,
        staging::Timing::of(&state),
        region,
        true,
        |_| None,
    )
    .await?;
    // As many as a CSV's columns may hold beside the address, and, merged, as long as one
    // row can make a new contact (the header's names and the row's values), whatever the
    // uploads merged.
    let most = i64::try_from(crate::limits::MAX_COLUMNS - 1).unwrap_or(i64::MAX);
    let bytes = i64::try_from(2 * crate::limits::MAX_ROW_BYTES).unwrap_or(i64::MAX);
    let upserted = store::contacts::upsert_staged(&mut tx, tenant, most, bytes).await?;
    if let Some(address) = upserted.overfull {
        return Err(ApiError::field(
            "attributes",
            format!(
                "contact {address} would hold more than {most} attributes, or more than \
                 {bytes} bytes of them (an upload's merge into those it has); nothing was \
                 imported"
            ),
        ));
    }
    let (new, updated) = (upserted.inserted, upserted.updated);
    tx.commit().await?;
    tracing::info!(tenant_id = %tenant, received, inserted = new, "contacts uploaded");
    Ok(Json(ContactUploadResult {
        received,
        inserted: new,
        updated,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
// Read by `QueryParams`, which utoipa cannot place as it places axum's `Query`.
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this tenant's contacts (a tenant key sees only its own anyway).
    pub tenant_id: Option<Uuid>,
    /// Only the contact with this address: as stored, or a phone number as people write it
    /// (`+33 6 12 34 56 78` finds `+33612345678`; without its country code, read in the
    /// default region of the tenants listed, as their uploads are).
    pub address: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// At most this many (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/contacts", tag = "contacts", params(ListQuery),
    responses((status = 200, body = Page<Contact>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<Page<Contact>>, ApiError> {
    let limit = page::limit(query.limit)?;
    let after: Option<i64> = page::decode(query.cursor.as_deref())?;
    let address = super::tenants::address_forms(
        &state.pool,
        caller.scope(),
        query.tenant_id,
        None,
        query.address.as_deref(),
    )
    .await?;
    let rows = store::contacts::list(
        &state.pool,
        caller.scope(),
        query.tenant_id,
        &address,
        after,
        page::fetch_limit(limit),
    )
    .await?;
    Ok(Json(Page::of(rows, limit, |c: &Contact| c.id)))
}

#[utoipa::path(delete, path = "/contacts/{id}", tag = "contacts",
    params(("id" = i64, Path, description = "The contact's id")),
    responses((status = 204, description = "Deleted: no segment picks it any more"),
              (status = 404, body = crate::error::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    if !store::contacts::delete(&state.pool, caller.scope(), id).await? {
        return Err(ApiError::NotFound("contact"));
    }
    tracing::info!(contact_id = id, "contact deleted");
    Ok(StatusCode::NO_CONTENT)
}
