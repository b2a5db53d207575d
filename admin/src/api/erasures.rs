//! Erasing an address from a tenant's data at its request (a person asking to be
//! forgotten): `herald_store::erasures` says what goes and what stays.

use super::JsonBody;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::phone;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use herald_store as store;
use herald_store::erasures::Erased;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewErasure {
    /// Operators only; ignored for tenant keys.
    pub tenant_id: Option<Uuid>,
    /// A phone number as people write it (`+33 6 12 34 56 78`; without a country code, read
    /// in the tenant's `default_region`), looked for as recipients store it, in E.164.
    pub address: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Erasure {
    /// The address as it was looked for.
    pub address: String,
    #[serde(flatten)]
    pub erased: Erased,
}

#[utoipa::path(post, path = "/erasures", tag = "erasures", request_body = NewErasure,
    responses((status = 200, body = Erasure,
               description = "Erased as far as it can be now; asked again, it answers what is still in flight"),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn erase(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<NewErasure>,
) -> Result<Json<Erasure>, ApiError> {
    let tenant = caller.owning_tenant(body.tenant_id)?;
    let region = super::tenants::phone_region(&mut *state.pool.acquire().await?, tenant).await?;
    let address = phone::normalize(&body.address, region)
        .map_err(|reason| ApiError::field("address", reason))?;
    let erased = store::erasures::erase(&state.pool, tenant, &address).await?;
    // Never the address itself: logs outlive the erasure.
    tracing::info!(
        tenant_id = %tenant,
        contacts = erased.contacts,
        messages = erased.messages,
        cancelled = erased.cancelled,
        in_flight = erased.in_flight,
        "address erased"
    );
    Ok(Json(Erasure { address, erased }))
}
