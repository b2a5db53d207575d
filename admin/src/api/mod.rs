//! The versioned JSON API (`/api/v1`) and its OpenAPI document.
//!
//! One module per resource. Every handler takes the [`Caller`](crate::auth::Caller) and
//! scopes its queries by it; every write that makes or changes several rows is one
//! transaction.

pub mod audience;
pub mod campaigns;
pub mod contacts;
pub mod keys;
pub mod providers;
pub mod receipts;
pub mod segments;
pub mod tenants;

use crate::error::{ApiError, ErrorBody, FieldError, RowError};
use crate::limits;
use crate::state::AppState;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::routing::{get, post, put};
use serde::de::DeserializeOwned;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

/// A JSON body whose rejection (malformed JSON, wrong field type, missing field) is an
/// [`ApiError`] naming the problem, like every other error.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &AppState) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                let essence = v.split(';').next().unwrap_or("").trim();
                essence == "application/json" || essence.ends_with("+json")
            });
        if !json {
            return Err(ApiError::UnsupportedMediaType(
                "expected Content-Type: application/json".to_owned(),
            ));
        }
        let bytes = axum::body::to_bytes(req.into_body(), limits::MAX_JSON_BODY)
            .await
            .map_err(|_| {
                ApiError::TooLarge(format!(
                    "the body is larger than {} bytes (or could not be read)",
                    limits::MAX_JSON_BODY
                ))
            })?;
        // What PostgreSQL cannot store is refused here, naming the field, before any of it
        // reaches a query.
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes)
            && let Some(flaw) = limits::flaw(&value, "")
        {
            return Err(ApiError::field(&flaw.path, flaw.reason));
        }
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::UnsupportedMediaType("expected Content-Type: application/json".to_owned())
        }
        JsonRejection::JsonDataError(error) => {
            // serde's message names the field (e.g. "batch_size: invalid type: string").
            let text = error.body_text();
            let detail = text
                .split_once(": ")
                .map_or(text.as_str(), |(_, rest)| rest)
                .to_owned();
            let field = detail
                .split_once(": ")
                .map(|(path, _)| path.to_owned())
                .filter(|p| !p.contains(' '))
                .unwrap_or_else(|| "body".to_owned());
            ApiError::fields(
                "request body",
                vec![FieldError {
                    field,
                    reason: detail,
                }],
            )
        }
        other => ApiError::field("body", other.body_text()),
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi_json))
        .route("/tenants", post(tenants::create).get(tenants::list))
        .route("/tenants/{id}", get(tenants::show))
        .route("/tenants/{id}/keys", post(tenants::create_key))
        .route("/keys", get(keys::list))
        .route("/keys/{id}/revoke", post(keys::revoke))
        .route("/keys/{id}/rotate", post(keys::rotate))
        .route("/providers", post(providers::create).get(providers::list))
        .route("/providers/{id}", get(providers::show))
        .route(
            "/providers/{id}/credentials",
            put(providers::rotate_credentials),
        )
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
        .route("/segments", post(segments::create).get(segments::list))
        .route("/segments/{id}", get(segments::show))
        .route("/segments/{id}/count", get(segments::count))
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

async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An operator key (hk_op_…) or a tenant key (hk_tn_…)"))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald admin API",
        description = "Create, target, schedule and control campaigns. See admin/API.md."
    ),
    servers((url = "/api/v1")),
    modifiers(&BearerAuth),
    security(("api_key" = [])),
    paths(
        tenants::create, tenants::list, tenants::show, tenants::create_key,
        keys::list, keys::revoke, keys::rotate,
        providers::create, providers::list, providers::show, providers::rotate_credentials,
        campaigns::create, campaigns::list, campaigns::show,
        campaigns::start, campaigns::pause, campaigns::resume, campaigns::cancel,
        campaigns::progress, campaigns::errors,
        audience::upload, audience::list,
        contacts::upload, contacts::list,
        segments::create, segments::list, segments::show, segments::count,
        receipts::orphans,
    ),
    components(schemas(ErrorBody, FieldError, RowError))
)]
pub struct ApiDoc;
