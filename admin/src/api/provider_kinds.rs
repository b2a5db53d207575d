//! The JSON Schemas of a new provider, one per kind, for the OpenAPI document.
//!
//! What a provider's `settings` and `credentials` may hold depends on its `kind`, and the
//! rules (`herald_shared::provider_config::parse`, which the handlers and workers share) go
//! beyond what utoipa's typed schemas can say: a choice between two fields, a field required
//! only with another, header names compared without case. So they are written here as JSON
//! Schema, rule for rule, and spliced into the document; `scripts/api-schema.sh` checks the
//! two agree, generating requests from these schemas and sending them to the server.
//!
//! A `null` in settings or credentials means "not given", as the parser reads it.

use herald_shared::provider_config::{
    BODY_TEMPLATE_VARIABLES, MAX_TEMPLATE_PARAMETERS, RESERVED_HEADERS,
};
use serde_json::{Value, json};

/// Characters no text may hold: C0 and C1 controls (NUL among them).
const CONTROL: &str = "\\u0000-\\u001f\\u007f-\\u009f";

/// RFC 9110 token characters: a header name.
const HEADER_NAME: &str = "^[-!#$%&'*+.^_`|~0-9A-Za-z]+$";

/// The schemas to add to `components.schemas`, by name.
pub fn schemas() -> Vec<(&'static str, Value)> {
    vec![
        ("NewProvider", new_provider()),
        ("NewCredentials", new_credentials()),
        ("BodyTemplateValue", body_template_value()),
        ("StorableJson", storable_json()),
    ]
}

/// Any JSON PostgreSQL can store: no NUL character in a string or a key (which the API
/// refuses anywhere in a body).
fn storable_json() -> Value {
    let reference = json!({"$ref": "#/components/schemas/StorableJson"});
    json!({
        "anyOf": [
            {"type": "string", "pattern": "^[^\\u0000]*$"},
            {"type": ["number", "boolean", "null"]},
            {"type": "array", "items": reference},
            {"type": "object", "propertyNames": {"pattern": "^[^\\u0000]*$"}, "additionalProperties": reference},
        ]
    })
}

fn new_provider() -> Value {
    let variant = |kind: &str, kind_required: bool, endpoint: Value, settings, credentials| {
        let mut properties = common_properties();
        let map = properties.as_object_mut().expect("an object");
        map.insert(
            "kind".into(),
            json!({"type": "string", "enum": [kind], "description": kind_description(kind)}),
        );
        map.insert("endpoint".into(), endpoint);
        map.insert("settings".into(), settings);
        map.insert("credentials".into(), credentials);
        let mut required = vec!["name"];
        if kind_required {
            required.push("kind");
        }
        if kind == "http" {
            required.push("endpoint");
        }
        json!({
            "title": kind,
            "type": "object",
            "additionalProperties": false,
            "required": required,
            "properties": properties,
        })
    };
    let base_url = json!({
        "description": "The API's base URL; omitted or null: the real one.",
        "anyOf": [url(), {"type": "null"}],
    });
    let mut http_url = url();
    http_url["description"] = json!(
        "The URL requests are POSTed to. With a tenant key: https, on a public address \
         (resolved on every connection; operators may allow more)."
    );
    json!({
        "description": "A provider. `kind` (default `http`) decides what `settings` and \
                        `credentials` hold; see API.md.",
        "oneOf": [
            variant("http", false, http_url, http_settings(), http_credentials()),
            variant("twilio_sms", true, base_url.clone(), twilio_sms_settings(), twilio_credentials()),
            variant("twilio_voice", true, base_url.clone(), twilio_voice_settings(), twilio_credentials()),
            variant("whatsapp", true, base_url, whatsapp_settings(), whatsapp_credentials()),
        ],
    })
}

fn kind_description(kind: &str) -> &'static str {
    match kind {
        "http" => "A generic HTTP API (the default).",
        "twilio_sms" => "Twilio Programmable Messaging (SMS, or WhatsApp through Twilio).",
        "twilio_voice" => "Twilio Programmable Voice.",
        _ => "Meta's WhatsApp Cloud API.",
    }
}

/// Credentials for a rotation: those of the provider's kind (any of the kinds' shapes).
fn new_credentials() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["credentials"],
        "properties": {
            "credentials": {
                "description": "Secrets of the provider's kind, replacing all of the old ones \
                                (see API.md); write-only.",
                "anyOf": [http_credentials(), twilio_credentials(), whatsapp_credentials()],
            },
            "grace_seconds": {
                "description": "How long receipts signed with the credentials replaced still \
                                pass: 0 (a leaked secret) to a week; a day by default. The \
                                same credentials again keep the grace of those replaced before.",
                "type": "integer", "format": "int32", "minimum": 0, "maximum": 604800,
                "default": 86400,
            },
        }
    })
}

fn common_properties() -> Value {
    let whole = |min: i64, max: i64, default: i64| json!({"type": "integer", "format": "int32", "minimum": min, "maximum": max, "default": default});
    let optional = |min: i64, max: i64| json!({"type": ["integer", "null"], "format": "int32", "minimum": min, "maximum": max});
    let name = serde_json::to_value(super::openapi::rules::name()).expect("a schema");
    json!({
        "tenant_id": {
            "type": ["string", "null"], "format": "uuid",
            "description": "Operators only; omitted: a shared provider. Ignored for tenant keys."
        },
        "name": name,
        "timeout_ms": whole(10, 300_000, 10_000),
        "max_in_flight": whole(1, 100_000, 100),
        "max_attempts": whole(1, 100, 5),
        "retry_base_ms": whole(1, 86_400_000, 1_000),
        "retry_max_ms": whole(1, 86_400_000, 300_000),
        "rate_limit": {
            "description": "Requests allowed per rate_window_ms across all workers; null: no limit.",
            "type": ["integer", "null"], "format": "int32", "minimum": 1, "maximum": 1_000_000
        },
        "rate_window_ms": whole(1, 86_400_000, 1_000),
        "cost_per_message": {
            "description": "What one message costs (any currency, to the millionth).",
            "type": ["number", "null"], "minimum": 0, "exclusiveMaximum": 1_000_000
        },
        "unknown_outcome": {
            "description": "What a request whose answer never came leads to; retry only for an http provider that honours Idempotency-Key.",
            "type": "string", "enum": ["await_receipt", "retry", "fail"], "default": "await_receipt"
        },
        "unknown_window_ms": whole(0, 86_400_000, 120_000),
        "max_live_calls": optional(1, 100_000),
        "live_call_timeout_ms": whole(1_000, 86_400_000, 600_000),
    })
}

/// An http:// or https:// URL without spaces or control characters.
fn url() -> Value {
    json!({
        "type": "string",
        "pattern": format!("^(?:http://[^\\s{CONTROL}]{{2,}}|https://[^\\s{CONTROL}]+)$"),
    })
}

fn optional(schema: Value) -> Value {
    json!({"anyOf": [schema, {"type": "null"}]})
}

/// Visible ASCII without surrounding spaces; `non_empty` for secrets.
fn header_value(non_empty: bool) -> Value {
    let inner = "[!-~](?:[ -~]*[!-~])?";
    let pattern = if non_empty {
        format!("^{inner}$")
    } else {
        format!("^(?:{inner})?$")
    };
    json!({"type": "string", "pattern": pattern})
}

/// A regular expression matching any of `names` whatever their case (`[Hh][Oo][Ss][Tt]`):
/// JSON Schema's patterns have no case-insensitive flag.
fn caseless(names: &[&str]) -> String {
    let one = |name: &str| -> String {
        name.chars()
            .map(|c| {
                if c.is_ascii_alphabetic() {
                    format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase())
                } else if c == '-' || c == '.' {
                    format!("\\{c}")
                } else {
                    c.to_string()
                }
            })
            .collect()
    };
    format!(
        "^(?:{})$",
        names.iter().map(|n| one(n)).collect::<Vec<_>>().join("|")
    )
}

/// `{"Name": "value"}`: valid header names, none Herald sets itself (nor `Authorization`,
/// unless `secret`).
fn headers(secret: bool) -> Value {
    let mut refused: Vec<&str> = RESERVED_HEADERS.to_vec();
    if !secret {
        refused.push("authorization");
    }
    optional(json!({
        "type": "object",
        "propertyNames": {
            "pattern": HEADER_NAME,
            "not": {"pattern": caseless(&refused)},
        },
        "additionalProperties": header_value(false),
    }))
}

/// A Herald template (`Hi {{first_name}}`); with `names`, only those variables.
pub fn template_pattern(names: Option<&[&str]>) -> String {
    let name = match names {
        Some(names) => format!("(?:{})", names.join("|")),
        None => "[A-Za-z0-9_.]+".to_owned(),
    };
    let text = "(?:[^{\\u0000]|\\{(?!\\{))*";
    format!("^(?:{text}\\{{\\{{\\s*{name}\\s*\\}}\\}})*{text}$")
}

/// A string without control characters, not blank, of at most `max` characters.
fn text(max: usize) -> Value {
    json!({
        "type": "string",
        "maxLength": max,
        "pattern": format!("^[^{CONTROL}]*[^\\s{CONTROL}][^{CONTROL}]*$"),
    })
}

fn sid(prefix: &str) -> Value {
    json!({"type": "string", "pattern": format!("^{prefix}[0-9A-Za-z]{{32}}$")})
}

/// Present and not null.
fn given(names: &[&str]) -> Value {
    let properties: serde_json::Map<String, Value> = names
        .iter()
        .map(|n| ((*n).to_owned(), json!({"type": "string"})))
        .collect();
    json!({"required": names, "properties": properties})
}

fn body_template_value() -> Value {
    let reference = json!({"$ref": "#/components/schemas/BodyTemplateValue"});
    json!({
        "description": "Part of an http provider's body template: its strings may use the \
                        variables listed in API.md.",
        "anyOf": [
            {"type": "string", "pattern": template_pattern(Some(&BODY_TEMPLATE_VARIABLES))},
            {"type": ["number", "boolean", "null"]},
            {"type": "array", "items": reference},
            {"type": "object", "propertyNames": {"pattern": "^[^\\u0000]*$"}, "additionalProperties": reference},
        ]
    })
}

fn http_settings() -> Value {
    let reference = json!({"$ref": "#/components/schemas/BodyTemplateValue"});
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "body_template": optional(json!({
                "description": "The request body: a JSON object or array whose strings may use \
                                {{to}}, {{body}}, {{channel}}, … (API.md).",
                "anyOf": [
                    {"type": "array", "items": reference},
                    {"type": "object", "propertyNames": {"pattern": "^[^\\u0000]*$"}, "additionalProperties": reference},
                ]
            })),
            "headers": headers(false),
        }
    })
}

fn http_credentials() -> Value {
    json!({
        "description": "Write-only. Keys other than these are kept and ignored.",
        "type": "object",
        "properties": {
            "bearer_token": optional(header_value(true)),
            "headers": headers(true),
            "webhook_secret": optional(header_value(true)),
        },
        // Keys other than these are free-form (older rows), but still what PostgreSQL keeps.
        "propertyNames": {"pattern": "^[^\\u0000]*$"},
        "additionalProperties": {"$ref": "#/components/schemas/StorableJson"},
        // A bearer token and an Authorization header would both set the same header.
        "if": given(&["bearer_token"]),
        "then": {
            "properties": {
                "headers": optional(json!({
                    "type": "object",
                    "propertyNames": {"not": {"pattern": caseless(&["authorization"])}},
                }))
            }
        },
    })
}

fn twilio_credentials() -> Value {
    json!({
        "description": "Write-only: the account SID with its auth token, or with an API key \
                        (SK…) and its secret (the auth token then only checks callbacks).",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "account_sid": sid("AC"),
            "auth_token": optional(header_value(true)),
            "api_key_sid": optional(sid("SK")),
            "api_key_secret": optional(header_value(true)),
        },
        "allOf": [
            {"required": ["account_sid"]},
            {"anyOf": [given(&["auth_token"]), given(&["api_key_sid"]), given(&["api_key_secret"])]},
            {"if": given(&["api_key_sid"]), "then": given(&["api_key_secret"])},
            {"if": given(&["api_key_secret"]), "then": given(&["api_key_sid"])},
        ],
    })
}

fn twilio_sms_settings() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "from": optional(text(64)),
            "messaging_service_sid": optional(sid("MG")),
            "status_callback": optional(url()),
        },
        "anyOf": [given(&["from"]), given(&["messaging_service_sid"])],
    })
}

fn twilio_voice_settings() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["from"],
        "properties": {
            "from": text(64),
            "url": optional(url()),
            "status_callback": optional(url()),
        },
    })
}

fn whatsapp_settings() -> Value {
    let parameter = json!({
        "type": "string",
        "maxLength": 1024,
        "allOf": [
            {"pattern": template_pattern(None)},
            {"pattern": format!("^[^{CONTROL}]*[^\\s{CONTROL}][^{CONTROL}]*$")},
        ],
    });
    let parameters = |max: usize| {
        optional(json!({"type": "array", "maxItems": max, "items": parameter.clone()}))
    };
    let button = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["sub_type", "index", "parameter"],
        "properties": {
            "sub_type": {"type": "string", "enum": ["url", "quick_reply", "copy_code"]},
            "index": {"type": "integer", "minimum": 0, "maximum": 9},
            "parameter": parameter,
        }
    });
    let template = json!({
        "description": "Send this approved template instead of text. Each parameter is a \
                        Herald template filled from the recipient's variables.",
        "type": "object",
        "additionalProperties": false,
        "required": ["name", "language"],
        "properties": {
            "name": text(512),
            "language": text(16),
            "header": parameters(1),
            "body": parameters(MAX_TEMPLATE_PARAMETERS),
            "body_parameter": optional(json!({"type": "boolean"})),
            "buttons": optional(json!({"type": "array", "maxItems": 10, "items": button})),
        },
        // The campaign's message fills the body only when the body lists no parameters.
        "not": {
            "required": ["body_parameter", "body"],
            "properties": {
                "body_parameter": {"const": true},
                "body": {"type": "array", "minItems": 1},
            }
        },
    });
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["phone_number_id"],
        "properties": {
            "phone_number_id": {"type": "string", "pattern": "^[0-9]{1,32}$"},
            "api_version": optional(json!({"type": "string", "pattern": "^v[0-9]{1,4}(?:\\.[0-9]{1,4})?$"})),
            "preview_url": optional(json!({"type": "boolean"})),
            "template": optional(template),
        },
    })
}

fn whatsapp_credentials() -> Value {
    json!({
        "description": "Write-only: the access token; the app secret checks webhook signatures \
                        and the verify token answers Meta's subscription check.",
        "type": "object",
        "additionalProperties": false,
        "required": ["access_token"],
        "properties": {
            "access_token": header_value(true),
            "app_secret": optional(header_value(true)),
            "verify_token": optional(header_value(true)),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, text: &str) -> bool {
        // The patterns are ECMA-262 with lookahead; fancy-regex reads that dialect.
        fancy_regex::Regex::new(pattern)
            .unwrap()
            .is_match(text)
            .unwrap()
    }

    #[test]
    fn template_patterns_follow_the_template_parser() {
        let any = template_pattern(None);
        for good in [
            "Hi {{first_name}}!",
            "no variables",
            "{{ a.b }} and }} and {",
            "",
        ] {
            assert!(matches(&any, good), "{good}");
            assert!(herald_shared::template::variables(good).is_ok(), "{good}");
        }
        for bad in ["Hi {{name", "Hi {{}}", "Hi {{a b}}", "{{{a}}", "x{{ {b} }}"] {
            assert!(!matches(&any, bad), "{bad}");
            assert!(herald_shared::template::variables(bad).is_err(), "{bad}");
        }
        let body = template_pattern(Some(&BODY_TEMPLATE_VARIABLES));
        assert!(matches(&body, "{{to}}: {{ body }}"));
        assert!(!matches(&body, "{{first_name}}"));
    }

    #[test]
    fn reserved_headers_are_refused_whatever_their_case() {
        let pattern = caseless(&["content-type", "host"]);
        for refused in ["Content-Type", "content-type", "HOST"] {
            assert!(matches(&pattern, refused), "{refused}");
        }
        for allowed in ["X-Host", "Content-Types", "Accept"] {
            assert!(!matches(&pattern, allowed), "{allowed}");
        }
    }

    #[test]
    fn header_values_are_visible_ascii_without_surrounding_spaces() {
        let value = header_value(false)["pattern"].as_str().unwrap().to_owned();
        let secret = header_value(true)["pattern"].as_str().unwrap().to_owned();
        assert!(matches(&value, "") && !matches(&secret, ""));
        assert!(matches(&secret, "Bearer abc") && matches(&secret, "x"));
        assert!(!matches(&secret, " x") && !matches(&secret, "x ") && !matches(&secret, "é"));
    }

    #[test]
    fn every_kind_is_a_choice_of_the_new_provider() {
        let schema = new_provider();
        let kinds: Vec<_> = schema["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["title"].as_str().unwrap().to_owned())
            .collect();
        let known: Vec<_> = herald_shared::provider_config::Kind::ALL
            .iter()
            .map(|k| k.as_str().to_owned())
            .collect();
        assert_eq!(kinds, known);
    }
}
