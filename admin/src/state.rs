//! What every request handler shares.

use crate::endpoints::EndpointPolicy;
use crate::tenant_turns::TenantTurns;
use crate::upload_slots::UploadSlots;
use sqlx::PgPool;
use std::time::Duration;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub uploads: UploadSlots,
    /// How many of one tenant's requests run at once.
    pub turns: TenantTurns,
    /// How long a request's body (an upload's, a JSON one) may send nothing before it is
    /// ended.
    pub upload_idle: Duration,
    /// The longest an upload may take in all.
    pub upload_within: Duration,
    /// How long any other request may take before it is answered 503 (`request_deadline`).
    pub request_deadline: Duration,
    /// Where tenants' provider endpoints may point.
    pub endpoints: EndpointPolicy,
    /// Seals providers' credentials at rest.
    pub keyring: herald_shared::sealed::Keyring,
    /// Most campaigns of one tenant scheduled, running or paused at once.
    pub max_active_campaigns: i64,
    /// Most segments one tenant keeps.
    pub max_segments: i64,
    /// Providers one tenant may have in use (`HERALD_ADMIN_MAX_PROVIDERS_PER_TENANT`).
    pub max_providers: i64,
}
