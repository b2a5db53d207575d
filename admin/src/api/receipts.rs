//! Receipts that never found their message: providers reported on a message id no send of
//! Herald's recorded, for longer than the scheduler's `HERALD_RECEIPT_ORPHAN_AFTER_MS`. A
//! few mean a provider reports on messages sent by something else with the same account;
//! many mean receipts are not matched (say, a provider that does not echo the reference).

use super::QueryParams;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use herald_store::receipts::{self, OrphanReceipt};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
// Read by `QueryParams`, which utoipa cannot place as it places axum's `Query`.
#[into_params(parameter_in = Query)]
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
    QueryParams(query): QueryParams<OrphanQuery>,
) -> Result<Json<Vec<OrphanReceipt>>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 1000"));
    }
    let rows = receipts::orphans(&state.pool, caller.scope(), query.provider_id, limit).await?;
    Ok(Json(rows))
}
