//! The OpenAPI document served at `/api/v1/openapi.json`.
//!
//! Generated clients trust it, so it states what the server does: every status an operation
//! can answer, with the error body's shape, and the request constraints the handlers enforce.
//! The statuses every operation shares (a missing key, a malformed parameter, an oversized
//! body…) are added here once, by what the operation has (parameters, a body, an `{id}`),
//! rather than repeated on each handler; `scripts/api-schema.sh` checks the result against
//! the running server with schemathesis.

use super::{
    audience, campaigns, contacts, default_providers, erasures, keys, messages, providers,
    receipts, segments, suppressions, tenants, webhooks,
};
use crate::error::{ErrorBody, FieldError, RowError};
use utoipa::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    Content, HeaderBuilder, Ref, RefOr, ResponseBuilder, Responses, Type, schema::ObjectBuilder,
};

pub async fn document() -> axum::Json<serde_json::Value> {
    // Built once: it never changes while the server runs.
    static DOCUMENT: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    axum::Json(DOCUMENT.get_or_init(document_json).clone())
}

/// The document as served: utoipa's, with the provider schemas whose rules utoipa's types
/// cannot hold (see [`super::provider_kinds`]) put in place.
pub fn document_json() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
    let schemas = doc["components"]["schemas"]
        .as_object_mut()
        .expect("the document has schemas");
    for (name, schema) in super::provider_kinds::schemas() {
        schemas.insert(name.to_owned(), schema);
    }
    doc
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald admin API",
        description = "Create, target, schedule and control campaigns. See admin/API.md."
    ),
    servers((url = "/api/v1")),
    modifiers(&BearerAuth, &SharedResponses),
    security(("api_key" = [])),
    paths(
        tenants::create, tenants::list, tenants::show, tenants::update, tenants::create_key,
        default_providers::list, default_providers::set, default_providers::remove,
        webhooks::set, webhooks::show, webhooks::remove, webhooks::recover, webhooks::test,
        webhooks::events,
        keys::list, keys::revoke, keys::rotate,
        providers::create, providers::list, providers::show, providers::retire,
        providers::rotate_credentials,
        providers::set_commitment,
        campaigns::create, campaigns::list, campaigns::show,
        campaigns::start, campaigns::pause, campaigns::resume, campaigns::cancel,
        campaigns::progress, campaigns::errors,
        audience::upload, audience::list,
        contacts::upload, contacts::list, contacts::delete,
        segments::create, segments::list, segments::show, segments::delete, segments::count,
        messages::send, messages::send_batch, messages::show, messages::list, messages::cancel,
        suppressions::add, suppressions::list, suppressions::remove,
        erasures::erase,
        receipts::orphans,
    ),
    components(schemas(ErrorBody, FieldError, RowError))
)]
pub struct ApiDoc;

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

/// An error status every operation of some shape can answer, and why.
struct Shared {
    status: &'static str,
    name: &'static str,
    description: &'static str,
    applies: fn(&OperationShape) -> bool,
}

/// What decides which shared errors an operation can answer.
struct OperationShape {
    has_parameters: bool,
    has_query: bool,
    names_a_resource: bool,
    has_body: bool,
    /// Outside what a `send` key may call.
    closed_to_send_keys: bool,
}

const SHARED: &[Shared] = &[
    Shared {
        status: "400",
        name: "BadParameter",
        description: "A path or query parameter is malformed (an id that is not a UUID, a \
                      number that is not one).",
        applies: |op| op.has_parameters,
    },
    Shared {
        status: "401",
        name: "Unauthorized",
        description: "No `Authorization: Bearer` key, or one that is unknown, revoked or past \
                      its rotation's grace.",
        applies: |_| true,
    },
    Shared {
        status: "403",
        name: "Forbidden",
        description: "The key may not do this: a key of access `send` reaches only the \
                      messages API (some operations also say they need an operator key).",
        applies: |op| op.closed_to_send_keys,
    },
    Shared {
        status: "404",
        name: "NotFound",
        description: "No such object, or one the key may not see (another tenant's objects \
                      answer exactly like missing ones).",
        applies: |op| op.names_a_resource,
    },
    Shared {
        status: "413",
        name: "TooLarge",
        description: "The body, or a field, line or value in it, is past its size limit \
                      (see API.md, Limits).",
        applies: |op| op.has_body,
    },
    Shared {
        status: "415",
        name: "UnsupportedMediaType",
        description: "The body's `Content-Type` is not one the operation reads.",
        applies: |op| op.has_body,
    },
    Shared {
        status: "422",
        name: "Invalid",
        description: "Invalid input: `fields` (or `rows`, for uploads) name each problem.",
        applies: |op| op.has_body || op.has_query,
    },
    Shared {
        status: "503",
        name: "Unavailable",
        description: "The database did not answer in time (a statement or lock timeout); \
                      nothing was changed: try again after `Retry-After`.",
        applies: |_| true,
    },
];

/// Adds the shared error responses (as `#/components/responses/…`) to every operation they
/// apply to, keeping any the operation documents itself.
struct SharedResponses;

impl utoipa::Modify for SharedResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let error = || Content::new(Some(RefOr::Ref(Ref::from_schema_name("ErrorBody"))));
        let retry_after = || {
            HeaderBuilder::new()
                .schema(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(1)),
                )
                .description(Some("Seconds to wait before trying again."))
                .build()
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        for shared in SHARED {
            let mut response = ResponseBuilder::new()
                .description(shared.description)
                .content("application/json", error());
            if shared.status == "503" {
                response = response.header("Retry-After", retry_after());
            }
            components
                .responses
                .insert(shared.name.to_owned(), RefOr::T(response.build()));
        }
        components.responses.insert(
            "Busy".to_owned(),
            RefOr::T(
                ResponseBuilder::new()
                    .description(
                        "Too many uploads at once (from this key or in all), or too many \
                         messages waiting to be sent (`max_queued_messages`).",
                    )
                    .header("Retry-After", retry_after())
                    .content("application/json", error())
                    .build(),
            ),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            let names_a_resource = path.contains('{');
            let closed_to_send_keys = !crate::auth::SEND_ROUTES.contains(&path.as_str());
            for operation in [
                item.get.as_mut(),
                item.post.as_mut(),
                item.put.as_mut(),
                item.delete.as_mut(),
                item.patch.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                let shape = shape(operation, names_a_resource, closed_to_send_keys);
                add_shared(&mut operation.responses, &shape);
            }
        }
    }
}

fn shape(
    operation: &Operation,
    names_a_resource: bool,
    closed_to_send_keys: bool,
) -> OperationShape {
    use utoipa::openapi::path::ParameterIn;
    let parameters = operation.parameters.as_deref().unwrap_or_default();
    OperationShape {
        has_parameters: names_a_resource || !parameters.is_empty(),
        has_query: parameters
            .iter()
            .any(|p| matches!(p.parameter_in, ParameterIn::Query)),
        names_a_resource,
        has_body: operation.request_body.is_some(),
        closed_to_send_keys,
    }
}

fn add_shared(responses: &mut Responses, shape: &OperationShape) {
    for shared in SHARED.iter().filter(|s| (s.applies)(shape)) {
        responses
            .responses
            .entry(shared.status.to_owned())
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(shared.name)));
    }
    // An upload refused for being one too many names when to try again.
    if let Some(busy) = responses.responses.get_mut("429") {
        *busy = RefOr::Ref(Ref::from_response_name("Busy"));
    }
}

/// Schemas of values whose rules the handlers check in code, written once so that the
/// document and the checks agree. Used with `#[schema(schema_with = …)]`.
pub mod rules {
    use herald_shared::domain::{CampaignStatus, Channel};
    use utoipa::openapi::schema::{Object, ObjectBuilder, Type};

    /// Characters no name may hold: C0 and C1 controls (`char::is_control`).
    const CONTROL: &str = "\\u0000-\\u001f\\u007f-\\u009f";

    fn text() -> ObjectBuilder {
        ObjectBuilder::new().schema_type(Type::String)
    }

    fn one_of(values: impl IntoIterator<Item = String>) -> Object {
        text()
            .enum_values(Some(values.into_iter().collect::<Vec<_>>()))
            .build()
    }

    /// A display name ([`crate::validate::name`]): 1–200 characters, not only spaces, no
    /// control characters.
    pub fn name() -> Object {
        text()
            .min_length(Some(1))
            .max_length(Some(200))
            .pattern(Some(format!("^[^{CONTROL}]*[^\\s{CONTROL}][^{CONTROL}]*$")))
            .build()
    }

    /// A message template: `{{variable}}` placeholders in text, not blank.
    pub fn template() -> Object {
        let grammar = super::super::provider_kinds::template_pattern(None);
        text()
            .min_length(Some(1))
            .max_length(Some(crate::limits::MAX_TEMPLATE_CHARS))
            .pattern(Some(format!(
                "^(?=[\\s\\S]*\\S){}",
                grammar.trim_start_matches('^')
            )))
            .build()
    }

    /// A time of day, `HH:MM` ([`crate::validate::clock_time`]).
    pub fn clock_time() -> Object {
        text()
            .pattern(Some("^([01][0-9]|2[0-3]):[0-5][0-9]$"))
            .build()
    }

    /// A region the phone number metadata knows ([`crate::phone::region`]), or null.
    pub fn optional_region() -> Object {
        let mut values: Vec<serde_json::Value> = crate::phone::regions()
            .into_iter()
            .map(Into::into)
            .collect();
        values.push(serde_json::Value::Null);
        ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
                Type::String,
                Type::Null,
            ]))
            .enum_values(Some(values))
            .build()
    }

    pub fn channel() -> Object {
        one_of(Channel::ALL.iter().map(|c| c.as_str().to_owned()))
    }

    pub fn campaign_status() -> Object {
        one_of(CampaignStatus::ALL.iter().map(|c| c.as_str().to_owned()))
    }

    /// Where a webhook event's posting stands.
    pub fn event_delivery() -> Object {
        one_of(
            herald_store::webhooks::Delivery::ALL
                .iter()
                .map(|d| d.as_str().to_owned()),
        )
    }

    /// The types of event a webhook is posted.
    pub fn event_type() -> Object {
        one_of(crate::api::webhooks::EVENT_TYPES.map(str::to_owned))
    }

    /// The store's, which its recipient rows use too.
    pub fn recipient_state() -> Object {
        herald_store::recipients::state_schema()
    }

    /// A provider's word on a message or call, as receipts record it.
    pub fn delivery_status() -> Object {
        one_of(
            herald_shared::delivery::DeliveryStatus::ALL
                .iter()
                .map(|d| d.as_str().to_owned()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statuses(doc: &utoipa::openapi::OpenApi, path: &str, method: &str) -> Vec<String> {
        let item = &doc.paths.paths[path];
        let operation = match method {
            "get" => item.get.as_ref(),
            "post" => item.post.as_ref(),
            "put" => item.put.as_ref(),
            _ => None,
        }
        .unwrap_or_else(|| panic!("{method} {path} is not documented"));
        operation.responses.responses.keys().cloned().collect()
    }

    #[test]
    fn every_operation_documents_a_missing_key_and_a_busy_database() {
        let doc = ApiDoc::openapi();
        for (path, item) in &doc.paths.paths {
            for operation in [&item.get, &item.post, &item.put].into_iter().flatten() {
                let codes: Vec<_> = operation.responses.responses.keys().collect();
                assert!(codes.iter().any(|c| *c == "401"), "{path}: {codes:?}");
                assert!(codes.iter().any(|c| *c == "503"), "{path}: {codes:?}");
                assert!(!codes.iter().any(|c| *c == "500"), "{path}: {codes:?}");
            }
        }
    }

    #[test]
    fn shared_errors_follow_the_operations_shape() {
        let doc = ApiDoc::openapi();
        // No parameters, no body: only the key and the database can fail it.
        assert_eq!(statuses(&doc, "/keys", "get"), ["200", "401", "403", "503"]);
        // Open to a `send` key: no 403 of that kind.
        assert_eq!(statuses(&doc, "/messages", "get")[..2], ["200", "400"]);
        assert!(!statuses(&doc, "/messages", "get").contains(&"403".to_owned()));
        // An id in the path: malformed (400) or not visible (404).
        let show = statuses(&doc, "/campaigns/{id}", "get");
        assert!(show.contains(&"400".to_owned()) && show.contains(&"404".to_owned()));
        assert!(!show.contains(&"413".to_owned()), "{show:?}");
        // A body: too large, the wrong type, invalid.
        let create = statuses(&doc, "/campaigns", "post");
        for code in ["201", "413", "415", "422"] {
            assert!(
                create.contains(&code.to_owned()),
                "{code} missing: {create:?}"
            );
        }
    }

    #[test]
    fn the_served_document_has_a_schema_per_provider_kind_and_no_dangling_reference() {
        let doc = document_json();
        let kinds = doc["components"]["schemas"]["NewProvider"]["oneOf"]
            .as_array()
            .expect("NewProvider is a choice of kinds");
        assert_eq!(kinds.len(), 4);
        fn references(value: &serde_json::Value, found: &mut Vec<String>) {
            match value {
                serde_json::Value::Object(map) => {
                    if let Some(serde_json::Value::String(r)) = map.get("$ref") {
                        found.push(r.clone());
                    }
                    map.values().for_each(|v| references(v, found));
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| references(v, found)),
                _ => {}
            }
        }
        let mut found = Vec::new();
        references(&doc, &mut found);
        assert!(found.len() > 50, "{}", found.len());
        for reference in found {
            let pointer = reference.trim_start_matches('#');
            assert!(doc.pointer(pointer).is_some(), "{reference} points nowhere");
        }
    }

    #[test]
    fn a_busy_upload_names_when_to_retry() {
        let doc = ApiDoc::openapi();
        let json = serde_json::to_value(&doc).unwrap();
        let busy = &json["components"]["responses"]["Busy"];
        assert!(busy["headers"]["Retry-After"].is_object(), "{busy}");
        let upload = &json["paths"]["/campaigns/{id}/recipients"]["post"]["responses"]["429"];
        assert_eq!(upload["$ref"], "#/components/responses/Busy");
    }
}
