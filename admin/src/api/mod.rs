//! The versioned JSON API (`/api/v1`) and its OpenAPI document.
//!
//! One module per resource. Every handler takes the [`Caller`](crate::auth::Caller) and
//! scopes its queries by it; every write that makes or changes several rows is one
//! transaction.

pub mod audience;
pub mod campaigns;
pub mod contacts;
pub mod default_providers;
pub mod erasures;
pub mod keys;
pub mod messages;
mod openapi;
pub mod page;
mod provider_fit;
mod provider_kinds;
pub mod providers;
pub mod receipts;
pub mod segments;
pub mod suppressions;
pub mod tenants;
pub mod webhooks;

use crate::error::{ApiError, ErrorBody, FieldError};
use crate::limits;
use crate::state::AppState;
use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::routing::{get, post, put};
use serde::de::DeserializeOwned;
use std::time::Duration;

/// A JSON body whose rejection (malformed JSON, wrong field type, missing field) is an
/// [`ApiError`] naming the problem, like every other error.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        require_json(&req)?;
        let bytes = read_body(req, state.upload_idle).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// An optional JSON body (`POST …/start` alone, or with `{"start_at": …}`): nothing, or only
/// whitespace, is `T::default()`.
pub struct OptionalJsonBody<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        // No body needs no type; a type given must be JSON, body or not.
        let declared = req.headers().contains_key(axum::http::header::CONTENT_TYPE);
        let json = require_json(&req);
        let bytes = read_body(req, state.upload_idle).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) && (!declared || json.is_ok()) {
            return Ok(OptionalJsonBody(T::default()));
        }
        json?;
        parse_json(&bytes).map(OptionalJsonBody)
    }
}

/// A query string (`?status=…&limit=…`) whose rejection (a `limit` that is no number, a
/// `tenant_id` that is no UUID, a parameter the endpoint does not take) is an [`ApiError`]
/// naming the parameter, like a body's: axum's own `Query` answers 400 with the parameter
/// named only in its message. The types it reads refuse unknown parameters, as bodies
/// refuse unknown fields: a misspelt filter (`?stauts=sent`) would otherwise list everything.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parse_query(parts.uri.query().unwrap_or("")).map(QueryParams)
    }
}

fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let pairs = url::form_urlencoded::parse(query.as_bytes());
    serde_path_to_error::deserialize(serde_urlencoded::Deserializer::new(pairs)).map_err(|error| {
        let field = error.path().to_string();
        let reason = error.into_inner().to_string();
        // A query's values are flat, so serde names a bad one by its parameter; a
        // missing one is reported at the root, with its name in the message.
        let named = missing_field(&reason).or_else(|| unknown_field(&reason));
        let field = match (field.as_str(), named) {
            (_, Some(name)) if !name.is_empty() => name,
            ("." | "", _) => "query".to_owned(),
            (_, _) => field,
        };
        ApiError::fields("query parameter", vec![FieldError { field, reason }])
    })
}

fn require_json(req: &Request) -> Result<(), ApiError> {
    let json = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            // Media types are case-insensitive (RFC 9110 §8.3.1).
            let essence = v
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            essence == "application/json" || essence.ends_with("+json")
        });
    if json {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(
            "expected Content-Type: application/json".to_owned(),
        ))
    }
}

/// The JSON body, whole: at most [`limits::MAX_JSON_BODY`] bytes, each part of it within the
/// upload idle timeout of the one before (a client that stops sending, or dies mid-body,
/// would otherwise hold its request, and a graceful stop, for ever).
async fn read_body(req: Request, idle: Duration) -> Result<axum::body::Bytes, ApiError> {
    use http_body_util::BodyExt;
    let mut body = http_body_util::Limited::new(req.into_body(), limits::MAX_JSON_BODY);
    let mut bytes = Vec::new();
    loop {
        let frame = tokio::time::timeout(idle, body.frame())
            .await
            .map_err(|_| {
                ApiError::Timeout(format!("the body sent nothing for {} ms", idle.as_millis()))
            })?;
        match frame {
            None => return Ok(bytes.into()),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            Some(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
                return Err(ApiError::TooLarge(format!(
                    "the body is larger than {} bytes",
                    limits::MAX_JSON_BODY
                )));
            }
            Some(Err(error)) => {
                return Err(ApiError::field(
                    "body",
                    format!("could not be read: {error}"),
                ));
            }
        }
    }
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::field("body", format!("not valid JSON: {e}")))?;
    // What PostgreSQL cannot store is refused here, naming the field, before any of it
    // reaches a query.
    if let Some(flaw) = limits::flaw(&value, "") {
        return Err(ApiError::field(&flaw.path, flaw.reason));
    }
    // JSON has one number type: `1000.0` is the integer 1000 (as JSON Schema, and so the
    // OpenAPI document, reads it), not a type error.
    integral_numbers(&mut value);
    serde_path_to_error::deserialize(value).map_err(data_error)
}

/// Numbers without a fractional part, written as floats, become integers.
fn integral_numbers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) => {
            if let Some(f) = n.as_f64()
                && !n.is_i64()
                && !n.is_u64()
                && f.fract() == 0.0
                && f.abs() < 9.0e15
            {
                // Below 2^53 every integral f64 is exact.
                *value = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers),
        Value::Object(map) => map.values_mut().for_each(integral_numbers),
        _ => {}
    }
}

/// A body of the wrong shape (a missing field, a wrong type, an unknown field), naming the
/// field by its path.
fn data_error(error: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = error.path().to_string();
    let reason = error.into_inner().to_string();
    // serde reports a missing field at its parent; the caller wants the field itself.
    let field = match (path.as_str(), missing_field(&reason)) {
        ("." | "", Some(name)) => name,
        (parent, Some(name)) => format!("{parent}.{name}"),
        ("." | "", None) => "body".to_owned(),
        (_, None) => path,
    };
    ApiError::fields("request body", vec![FieldError { field, reason }])
}

/// The field serde's "unknown field `…`" message names.
fn unknown_field(reason: &str) -> Option<String> {
    reason
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name.to_owned())
}

/// The field serde's "missing field `…`" message names.
fn missing_field(reason: &str) -> Option<String> {
    reason
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name.to_owned())
}

/// Where [`router`] is served.
pub const BASE: &str = "/api/v1";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi::document))
        .route("/tenants", post(tenants::create).get(tenants::list))
        .route("/tenants/{id}", get(tenants::show).patch(tenants::update))
        .route("/tenants/{id}/keys", post(tenants::create_key))
        .route(
            "/tenants/{id}/default-providers",
            get(default_providers::list),
        )
        .route(
            "/tenants/{id}/default-providers/{channel}",
            put(default_providers::set).delete(default_providers::remove),
        )
        .route(
            "/tenants/{id}/webhook",
            put(webhooks::set)
                .get(webhooks::show)
                .delete(webhooks::remove),
        )
        .route("/tenants/{id}/webhook/recover", post(webhooks::recover))
        .route("/tenants/{id}/webhook/test", post(webhooks::test))
        .route("/tenants/{id}/webhook/events", get(webhooks::events))
        .route("/keys", get(keys::list))
        .route("/keys/{id}/revoke", post(keys::revoke))
        .route("/keys/{id}/rotate", post(keys::rotate))
        .route("/providers", post(providers::create).get(providers::list))
        .route(
            "/providers/{id}",
            get(providers::show).delete(providers::retire),
        )
        .route(
            "/providers/{id}/credentials",
            put(providers::rotate_credentials),
        )
        .route("/providers/{id}/commitment", put(providers::set_commitment))
        .route("/campaigns", post(campaigns::create).get(campaigns::list))
        .route("/campaigns/{id}", get(campaigns::show))
        .route("/campaigns/{id}/start", post(campaigns::start))
        .route("/campaigns/{id}/pause", post(campaigns::pause))
        .route("/campaigns/{id}/resume", post(campaigns::resume))
        .route("/campaigns/{id}/cancel", post(campaigns::cancel))
        .route("/campaigns/{id}/progress", get(campaigns::progress))
        .route("/campaigns/{id}/errors", get(campaigns::errors))
        .route(
            "/campaigns/{id}/recipients",
            post(audience::upload).get(audience::list),
        )
        .route("/contacts", post(contacts::upload).get(contacts::list))
        .route("/contacts/{id}", axum::routing::delete(contacts::delete))
        .route("/segments", post(segments::create).get(segments::list))
        .route(
            "/segments/{id}",
            get(segments::show).delete(segments::delete),
        )
        .route("/segments/{id}/count", get(segments::count))
        .route("/messages", post(messages::send).get(messages::list))
        .route("/messages/batch", post(messages::send_batch))
        .route("/messages/{id}", get(messages::show))
        .route("/messages/{id}/cancel", post(messages::cancel))
        .route(
            "/suppressions",
            post(suppressions::add).get(suppressions::list),
        )
        .route(
            "/suppressions/{id}",
            axum::routing::delete(suppressions::remove),
        )
        .route("/erasures", post(erasures::erase))
        .route("/receipts/orphans", get(receipts::orphans))
        .fallback(|| async { ApiError::NotFound("resource") })
        .layer(axum::middleware::from_fn(refuse_nul_in_query))
        .layer(axum::middleware::map_response(json_errors))
}

/// A NUL in a query parameter (`?state=%00`) is refused, naming the parameter, before any
/// handler passes it to PostgreSQL (which cannot store or compare it).
async fn refuse_nul_in_query(
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let query = request.uri().query().unwrap_or("");
    if let Some((name, _)) = url::form_urlencoded::parse(query.as_bytes())
        .find(|(name, value)| name.contains('\0') || value.contains('\0'))
    {
        return ApiError::field(&name.replace('\0', ""), "must not contain a NUL character")
            .into_response();
    }
    next.run(request).await
}

/// Rejections produced by axum itself (a malformed id in the path, a wrong method) are plain
/// text; API callers get every error in the same JSON shape.
async fn json_errors(response: axum::response::Response) -> axum::response::Response {
    use axum::response::IntoResponse;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let text = match axum::body::to_bytes(response.into_body(), 64 * 1024).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_owned()
    } else {
        text
    };
    let body = ErrorBody {
        error: crate::error::ErrorDetail {
            status: status.as_u16(),
            message,
            fields: Vec::new(),
            rows: Vec::new(),
            error_rows: None,
        },
    };
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::parse_query;
    use crate::error::{ApiError, FieldError};
    use serde::Deserialize;
    use uuid::Uuid;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Listing {
        tenant_id: Option<Uuid>,
        limit: Option<i64>,
        format: String,
    }

    fn refused_field(query: &str) -> String {
        match parse_query::<Listing>(query) {
            Err(ApiError::Invalid { fields, .. }) => match fields.as_slice() {
                [FieldError { field, .. }] => field.clone(),
                other => panic!("{query}: one field expected, got {other:?}"),
            },
            other => panic!("{query}: refused expected, got {other:?}"),
        }
    }

    #[test]
    fn a_query_value_of_the_wrong_type_names_its_parameter() {
        assert_eq!(refused_field("format=csv&tenant_id=nope"), "tenant_id");
        assert_eq!(refused_field("format=csv&limit=ten"), "limit");
        assert_eq!(refused_field("limit=5"), "format", "a missing one");
        assert_eq!(
            refused_field("format=csv&stauts=sent"),
            "stauts",
            "an unknown one"
        );
        assert_eq!(
            refused_field("format=csv&=null"),
            "query",
            "one without a name"
        );
    }

    #[test]
    fn a_query_that_reads_is_taken_as_it_is() {
        let id = Uuid::new_v4();
        let listing: Listing = parse_query(&format!("format=csv&limit=7&tenant_id={id}"))
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            (listing.tenant_id, listing.limit, listing.format.as_str()),
            (Some(id), Some(7), "csv")
        );
    }
}
