//! Headers every answer of the admin server carries, so that a browser holding an API key
//! runs only the page's own script, never frames it, and never leaks its addresses.
//!
//! The page (`web/`) has no inline script or style and talks only to its own origin, which
//! is what lets the policy be this strict: a campaign name that slipped through as markup
//! still could not run.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use tower_http::set_header::SetResponseHeaderLayer;

pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

/// The headers, in the order they are added.
pub const HEADERS: [(HeaderName, &str); 5] = [
    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    // For browsers that predate `frame-ancestors`.
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "no-referrer"),
    // Answers carry tenants' data and, once, new keys: no shared cache may keep them.
    (header::CACHE_CONTROL, "no-store"),
];

/// `router` with [`HEADERS`] on every answer (a handler's own value wins).
pub fn apply<S: Clone + Send + Sync + 'static>(mut router: Router<S>) -> Router<S> {
    for (name, value) in HEADERS {
        router = router.layer(SetResponseHeaderLayer::if_not_present(
            name,
            HeaderValue::from_static(value),
        ));
    }
    router
}
