//! Receipts that never found their message: providers reported on a message id no send of
//! Herald's recorded, for longer than the scheduler's `HERALD_RECEIPT_ORPHAN_AFTER_MS`. A
//! few mean a provider reports on messages sent by something else with the same account;
//! many mean receipts are not matched (say, a provider that does not echo the reference).

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct OrphanReceipt {
    pub provider_id: Uuid,
    /// The provider's id of the message the receipt is about.
    pub message_id: String,
    pub status: String,
    /// As the provider spelled it.
    pub raw_status: String,
    pub error_code: Option<String>,
    pub received_at: DateTime<Utc>,
    pub orphaned_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct OrphanQuery {
    /// Only this provider's.
    pub provider_id: Option<Uuid>,
    /// At most this many, newest first (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// Orphaned receipts of the providers the caller may see (a tenant: its own providers).
#[utoipa::path(get, path = "/receipts/orphans", tag = "receipts", params(OrphanQuery),
    responses((status = 200, body = Vec<OrphanReceipt>), (status = 422, body = crate::error::ErrorBody)))]
pub async fn orphans(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<OrphanQuery>,
) -> Result<Json<Vec<OrphanReceipt>>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 1000"));
    }
    let rows = sqlx::query_as(
        "SELECT x.provider_id, x.message_id, x.status, x.raw_status, x.error_code, x.received_at,
                x.orphaned_at
         FROM receipts x JOIN providers p ON p.id = x.provider_id
         WHERE x.orphaned_at IS NOT NULL AND x.recipient_id IS NULL
           AND ($1::uuid IS NULL OR p.tenant_id = $1)
           AND ($2::uuid IS NULL OR x.provider_id = $2)
         ORDER BY x.received_at DESC LIMIT $3",
    )
    .bind(caller.scope())
    .bind(query.provider_id)
    .bind(limit)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(rows))
}
