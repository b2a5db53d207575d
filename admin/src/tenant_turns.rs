//! A tenant's share of the admin: at most `per_tenant` of one tenant's API requests run at
//! once; the rest wait their turn here, holding no database connection.
//!
//! A request that waits in PostgreSQL (on a campaign row an upload holds, on the tenant's
//! lock while its other message batches are accepted) keeps its connection for as long as
//! it waits, up to the statement timeout. Ten such requests of one tenant took the pool of
//! eight, and every other tenant's requests were refused after the pool's five seconds
//! (`hostile::one_tenants_waiting_requests_leave_the_pool_to_others`). Waiting for a turn
//! is bounded by the request deadline (`request_deadline`, outside this layer). Operators'
//! requests take no turn, nor do uploads: they stream as long as their client sends, and
//! their own slots bound them (`upload_slots`), so a big CSV does not hold a turn from the
//! tenant's other requests (its one-time codes).

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct TenantTurns {
    per_tenant: usize,
    by_tenant: Arc<Mutex<HashMap<Uuid, Arc<Semaphore>>>>,
}

impl TenantTurns {
    pub fn new(per_tenant: usize) -> Self {
        Self {
            per_tenant: per_tenant.max(1),
            by_tenant: Arc::default(),
        }
    }

    /// `tenant`'s turn, once one of its requests in progress ends if all its turns are taken.
    /// (`None` only if its turns were closed, which nothing does.)
    async fn turn(&self, tenant: Uuid) -> Option<OwnedSemaphorePermit> {
        let turns = self
            .by_tenant
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(tenant)
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_tenant)))
            .clone();
        turns.acquire_owned().await.ok()
    }
}

/// Authenticates the request once (the handler's `Caller` reads what is found here) and
/// runs a tenant's request in its turn. A request without a known key goes on without a
/// turn (its handler answers it: a route may need none); one whose key the database could
/// not look up (down, busy) is answered here, not asked a second time.
pub async fn take_turn(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let caller = match Caller::from_request_parts(&mut parts, &state).await {
        Ok(caller) => {
            parts.extensions.insert(caller);
            Some(caller)
        }
        Err(ApiError::Unauthorized) => None,
        Err(error) => return error.into_response(),
    };
    let upload = crate::request_deadline::is_upload(&parts.method, parts.uri.path());
    let request = Request::from_parts(parts, body);
    let _turn = match caller {
        Some(Caller::Tenant(tenant)) if !upload => state.turns.turn(tenant).await,
        Some(Caller::Tenant(_)) => None,
        Some(Caller::Operator) | None => None,
    };
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_tenant_waits_for_its_own_turns_only() {
        let turns = TenantTurns::new(2);
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let first = turns.turn(a).await;
        let _second = turns.turn(a).await;
        let third = tokio::time::timeout(Duration::from_millis(50), turns.turn(a)).await;
        assert!(third.is_err(), "a third request of a waits");
        let other = tokio::time::timeout(Duration::from_millis(50), turns.turn(b)).await;
        assert!(other.is_ok(), "b does not wait behind a");
        drop(first);
        let third = tokio::time::timeout(Duration::from_millis(50), turns.turn(a)).await;
        assert!(
            third.is_ok_and(|turn| turn.is_some()),
            "a's next request runs once one ends"
        );
    }
}
