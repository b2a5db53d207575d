//! Every request but an upload is answered within a deadline (`HERALD_ADMIN_REQUEST_TIMEOUT_MS`).
//! A statement that is only slow ends at PostgreSQL's `statement_timeout` (503, try again);
//! one sent on a connection that leads nowhere (a failover to another host, a network cut
//! that drops packets) would otherwise hold its request until the kernel gives up on the
//! connection, about 15 minutes. Uploads stream for as long as their client sends, each
//! read bounded by the upload idle timeout instead; their statements are bounded on
//! PostgreSQL's side only (its statement timeout, and a cut-off session ended there), so
//! an upload caught by a cut holds its slot until this side's kernel gives up.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Whether `request` streams an upload (a campaign's audience, contacts).
pub fn is_upload(method: &Method, path: &str) -> bool {
    method == Method::POST && (path.ends_with("/recipients") || path.ends_with("/contacts"))
}

/// Answers 503 with `Retry-After` a request not answered within the deadline.
pub async fn bound(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if is_upload(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    let deadline = state.request_deadline;
    match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(?deadline, "a request was not answered within its deadline");
            ApiError::Unavailable(
                "the server could not answer in time (its database is out of reach); try again shortly"
                    .to_owned(),
            )
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_are_the_posts_of_audiences_and_contacts() {
        assert!(is_upload(&Method::POST, "/campaigns/x/recipients"));
        assert!(is_upload(&Method::POST, "/contacts"));
        assert!(!is_upload(&Method::GET, "/campaigns/x/recipients"));
        assert!(!is_upload(&Method::GET, "/contacts"));
        assert!(!is_upload(&Method::POST, "/campaigns"));
    }
}
