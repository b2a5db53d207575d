//! How much of the receiver one caller can hold. The receiver faces the internet, and
//! anyone can reach it before a signature is checked. Only so many webhook requests are
//! handled at once (each may hold a body of up to the body limit in memory); past them the
//! next is answered 503 with `Retry-After` at once, so a flood queues nowhere. A request
//! holds its place for a bounded time: its whole body must be in within a deadline of its
//! head (408 after it), however it trickles, and its answer within another. Places are
//! shared by every caller, so a determined flood can still crowd real webhooks out; it
//! cannot hold a place, nor the memory behind it, for longer than those deadlines. The
//! request head's own deadline is the listener's (`herald_shared::serve`).

use crate::routes::BODY_LIMIT;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use herald_shared::ops::metrics::HTTP_REFUSED;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tower_http::timeout::TimeoutLayer;

/// A handler that has not answered by then waits on something that is failing (the
/// database): 503, which the providers that retry do.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// The limits of one receiver.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A request's whole body must be in within this of its head.
    pub body_timeout: Duration,
    /// Requests handled at once.
    pub max_requests: usize,
}

struct Room {
    places: Semaphore,
    body_timeout: Duration,
}

/// `routes` with the limits applied to each request they match (a path they do not match
/// is answered 404 without taking a place).
pub fn apply<S: Clone + Send + Sync + 'static>(routes: Router<S>, limits: Limits) -> Router<S> {
    let room = Arc::new(Room {
        places: Semaphore::new(limits.max_requests),
        body_timeout: limits.body_timeout,
    });
    routes
        .route_layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            ANSWER_TIMEOUT,
        ))
        .route_layer(middleware::map_response(retry_later))
        .route_layer(middleware::from_fn_with_state(room, admit))
}

/// Every 503 of a webhook that does not say when to come back (the answer timeout's, a
/// receipt that could not be stored, a provider that could not be read) says 5 s: what
/// failed (the database) is away for seconds, not for one.
async fn retry_later(mut response: Response) -> Response {
    if response.status() == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .entry(header::RETRY_AFTER)
            .or_insert(HeaderValue::from_static("5"));
    }
    response
}

/// The largest body a webhook at `path` may have: Twilio's status callbacks are forms of
/// a few kilobytes ([`crate::twilio::MAX_BODY`]), read as such, not as Meta's notifications
/// of up to 3 MB.
fn body_limit(path: &str) -> usize {
    if path.starts_with("/webhooks/twilio/") {
        crate::twilio::MAX_BODY
    } else {
        BODY_LIMIT
    }
}

/// Takes the request if there is a place for it and its body comes in time.
async fn admit(State(room): State<Arc<Room>>, request: Request, next: Next) -> Response {
    // The semaphore is never closed.
    let Ok(_place) = room.places.try_acquire() else {
        metrics::counter!(HTTP_REFUSED, "reason" => "busy").increment(1);
        let mut busy = (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests at once; try again shortly\n",
        )
            .into_response();
        busy.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return busy;
    };
    // Read whole here, against one deadline: a timer restarted by every chunk (as
    // tower-http's body timeout is) would let a byte every few seconds hold the place.
    let (parts, body) = request.into_parts();
    let limit = body_limit(parts.uri.path());
    let read = tokio::time::timeout(room.body_timeout, axum::body::to_bytes(body, limit));
    let bytes = match read.await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(error)) => {
            let too_large = std::error::Error::source(&error)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            return if too_large {
                // Larger than any webhook of the provider's API.
                crate::refusals::no_provider_sends(
                    (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("the body is over {limit} bytes\n"),
                    )
                        .into_response(),
                )
            } else {
                // A body cut off (its connection lost): a provider's, maybe, sent again.
                (StatusCode::BAD_REQUEST, "the body could not be read\n").into_response()
            };
        }
        Err(_) => {
            metrics::counter!(HTTP_REFUSED, "reason" => "body_timeout").increment(1);
            return (
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not come in time\n",
            )
                .into_response();
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_twilio_callback_is_read_as_a_form_of_a_few_kilobytes() {
        let id = "3fa85f64-5717-4562-b3fc-2c963f66afa6";
        assert_eq!(
            body_limit(&format!("/webhooks/twilio/{id}")),
            crate::twilio::MAX_BODY
        );
        assert_eq!(body_limit(&format!("/webhooks/whatsapp/{id}")), BODY_LIMIT);
        assert_eq!(body_limit(&format!("/webhooks/http/{id}")), BODY_LIMIT);
    }
    use axum::routing::post;
    use tower::ServiceExt;

    /// A handler held past the answer timeout (the database away) is answered 503 with
    /// `Retry-After`, as every other 503 of the receiver is.
    #[tokio::test(start_paused = true)]
    async fn an_answer_that_never_comes_is_a_503_that_says_when_to_come_back() {
        let routes = Router::new().route(
            "/webhooks/held",
            post(|| async {
                tokio::time::sleep(ANSWER_TIMEOUT * 2).await;
                "stored"
            }),
        );
        let limits = Limits {
            body_timeout: Duration::from_secs(5),
            max_requests: 4,
        };
        let request = Request::post("/webhooks/held")
            .body(Body::from("{}"))
            .unwrap_or_default();
        let Ok(response) = apply(routes, limits).oneshot(request).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from_static("5"))
        );
    }
}
