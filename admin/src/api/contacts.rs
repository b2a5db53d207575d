//! A tenant's contacts (the address book segments select from): streamed upsert and listing.

use super::page::{self, Page};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::phone;
use crate::staging;
use crate::state::AppState;
use crate::upload::Format;
use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

#[derive(Debug, Deserialize, IntoParams)]
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
    request_body(description = "CSV with an `address` (or `phone`) column, other columns becoming attributes (numbers stay numbers); NDJSON or a JSON array of {address, attributes}. Rows are checked one by one: an invalid row is named in the 422's `rows` and nothing is imported.",
        content((String = "text/csv"), (String = "application/x-ndjson"),
                (Vec<crate::upload::JsonRow> = "application/json"))),
    responses((status = 200, body = ContactUploadResult), (status = 408, body = crate::error::ErrorBody),
              (status = 413, body = crate::error::ErrorBody), (status = 415, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody)))]
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ContactUploadResult>, ApiError> {
    let format = Format::of_request(&headers)?;
    let tenant = caller.owning_tenant(query.tenant_id)?;
    let _slot = state.uploads.take(caller.scope().tenant())?;
    let mut tx = state.pool.begin().await?;
    let region: Option<Option<String>> =
        sqlx::query_scalar("SELECT default_region FROM tenants WHERE id = $1")
            .bind(tenant)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(region) = region else {
        return Err(ApiError::field("tenant_id", "no such tenant"));
    };
    let region = region.as_deref().and_then(|r| phone::region(r).ok());
    let received =
        staging::stage(&mut tx, body, format, state.upload_idle, region, |_| None).await?;
    // CSV cells arrive as text; a cell that reads as a number is stored as one, so that
    // segment filters can compare it numerically. The last row of an address wins.
    let inserted: Vec<bool> = sqlx::query_scalar(
        "INSERT INTO contacts AS c (tenant_id, address, attributes)
         SELECT DISTINCT ON (address) $1, address,
                coalesce((SELECT jsonb_object_agg(key,
                              CASE WHEN $2 AND jsonb_typeof(value) = 'string'
                                        AND value #>> '{}' ~ '^-?[0-9]+(\\.[0-9]+)?$'
                                   THEN to_jsonb((value #>> '{}')::numeric) ELSE value END)
                          FROM jsonb_each(fields)), '{}'::jsonb)
         FROM upload_rows ORDER BY address, n DESC
         ON CONFLICT (tenant_id, address)
         DO UPDATE SET attributes = c.attributes || excluded.attributes, updated_at = now()
         RETURNING (xmax = 0)",
    )
    .bind(tenant)
    .bind(format == Format::Csv)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let new = inserted.iter().filter(|&&fresh| fresh).count() as u64;
    tracing::info!(tenant_id = %tenant, received, inserted = new, "contacts uploaded");
    Ok(Json(ContactUploadResult {
        received,
        inserted: new,
        updated: inserted.len() as u64 - new,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// Only this tenant's contacts (a tenant key sees only its own anyway).
    pub tenant_id: Option<Uuid>,
    /// Only the contact with this address, exactly as stored (phone numbers in E.164).
    pub address: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// At most this many (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Contact {
    pub id: i64,
    pub tenant_id: Uuid,
    pub address: String,
    #[schema(value_type = Object)]
    pub attributes: Value,
    pub created_at: DateTime<Utc>,
}

#[utoipa::path(get, path = "/contacts", tag = "contacts", params(ListQuery),
    responses((status = 200, body = Page<Contact>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<Page<Contact>>, ApiError> {
    let limit = page::limit(query.limit)?;
    let after: Option<i64> = page::decode(query.cursor.as_deref())?;
    // Each condition is written only when given, so that it is an index bound in every plan.
    let mut qb = QueryBuilder::<Postgres>::new(
        "SELECT id, tenant_id, address, attributes, created_at FROM contacts WHERE true",
    );
    if let Some(scope) = caller.scope().tenant() {
        qb.push(" AND tenant_id = ").push_bind(scope);
    }
    if let Some(tenant) = query.tenant_id {
        qb.push(" AND tenant_id = ").push_bind(tenant);
    }
    page::push_exact(&mut qb, "address", query.address.as_deref());
    page::push_page(&mut qb, "id", after, limit);
    let rows = qb.build_query_as().fetch_all(&state.pool).await?;
    Ok(Json(Page::of(rows, limit, |c: &Contact| c.id)))
}
