//! Meta's WhatsApp Cloud API: `POST {base}/{version}/{phone_number_id}/messages`, JSON,
//! `Authorization: Bearer {access_token}`. Success is 200 with `messages[0].id` (a `wamid`);
//! errors are `{"error": {"message", "type", "code", "error_data", "error_subcode",
//! "fbtrace_id"}}`, to be handled on `code` (Meta's advice).
//!
//! The Cloud API documents no idempotency key. The recipient's key goes into
//! `biz_opaque_callback_data` instead, a documented free-text field that Meta echoes in the
//! message's status webhooks: it does not stop a duplicate send, but it ties every status
//! back to the recipient (and lets the simulator count duplicates).

use super::{Answer, ErrorClass, Header, HttpRequest, clip};
use crate::outcome::CallResult;
use herald_shared::provider_config::{WhatsAppConfig, WhatsAppMessage};
use herald_shared::queue::message::DispatchMessage;
use serde::{Deserialize, Serialize};

// The request's shape, field order as in Meta's documentation.
#[derive(Serialize)]
struct Send<'a> {
    messaging_product: &'static str,
    recipient_type: &'static str,
    to: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<Text<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    template: Option<Template<'a>>,
    biz_opaque_callback_data: String,
}

#[derive(Serialize)]
struct Text<'a> {
    preview_url: bool,
    body: &'a str,
}

#[derive(Serialize)]
struct Template<'a> {
    name: &'a str,
    language: Language<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    components: Vec<Component<'a>>,
}

#[derive(Serialize)]
struct Language<'a> {
    code: &'a str,
}

#[derive(Serialize)]
struct Component<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    parameters: Vec<Parameter<'a>>,
}

#[derive(Serialize)]
struct Parameter<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

pub fn build(config: &WhatsAppConfig, message: &DispatchMessage) -> HttpRequest {
    // WhatsApp ids are the E.164 digits without the `+`.
    let to = message.to.strip_prefix('+').unwrap_or(&message.to);
    let (kind, text, template) = match &config.message {
        WhatsAppMessage::Text { preview_url } => (
            "text",
            Some(Text {
                preview_url: *preview_url,
                body: &message.body,
            }),
            None,
        ),
        WhatsAppMessage::Template {
            name,
            language,
            body_parameter,
        } => {
            let components = if *body_parameter {
                vec![Component {
                    kind: "body",
                    parameters: vec![Parameter {
                        kind: "text",
                        text: &message.body,
                    }],
                }]
            } else {
                Vec::new()
            };
            (
                "template",
                None,
                Some(Template {
                    name,
                    language: Language { code: language },
                    components,
                }),
            )
        }
    };
    let send = Send {
        messaging_product: "whatsapp",
        recipient_type: "individual",
        to,
        kind,
        text,
        template,
        biz_opaque_callback_data: message.idempotency_key(),
    };
    let url = format!(
        "{}/{}/{}/messages",
        config.base_url, config.api_version, config.phone_number_id
    );
    let headers = vec![
        Header::secret(
            "Authorization",
            format!("Bearer {}", config.access_token.expose()),
        ),
        Header::new("Content-Type", "application/json"),
    ];
    // Serialising strings and booleans cannot fail.
    HttpRequest::post(url, headers, serde_json::to_vec(&send).unwrap_or_default())
}

#[derive(Deserialize)]
struct Sent {
    #[serde(default)]
    messages: Vec<SentMessage>,
}

#[derive(Deserialize)]
struct SentMessage {
    id: String,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: GraphError,
}

#[derive(Deserialize)]
struct GraphError {
    code: Option<i64>,
    message: Option<String>,
    error_data: Option<ErrorData>,
}

#[derive(Deserialize)]
struct ErrorData {
    details: Option<String>,
}

/// How the Cloud API's error codes are treated (see the provider reference).
pub fn class(status: u16, code: Option<i64>) -> ErrorClass {
    match (code, status) {
        // Throughput limit, pair rate limit, spam rate limit, WABA and app call-rate limits:
        // the provider (or the pair) needs a slower pace, the recipient is not at fault.
        (Some(130429 | 131056 | 131048 | 80007 | 4), _) | (_, 429) => ErrorClass::Throttled,
        // Access token expired or invalid.
        (Some(190), _) | (_, 401) => ErrorClass::Misconfigured,
        // Undeliverable, re-engagement window closed, unsupported type, invalid parameter.
        (Some(131026 | 131047 | 131051 | 100), _) => ErrorClass::Permanent,
        // Service temporarily down or overloaded, account upgrade in progress: nothing sent.
        (Some(2 | 131057), _) | (_, 503) => ErrorClass::Unavailable,
        // A gateway lost Meta's answer: the message may exist.
        (_, 502 | 504) => ErrorClass::Ambiguous,
        // Unknown API error, something went wrong.
        (Some(1 | 131000), _) | (_, 500..) | (_, 408) => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

pub fn interpret(answer: &Answer<'_>) -> CallResult {
    if (200..300).contains(&answer.status) {
        let id = serde_json::from_slice::<Sent>(answer.body)
            .ok()
            .and_then(|s| s.messages.into_iter().next())
            .map(|m| m.id);
        return CallResult::Accepted {
            provider_message_id: id,
        };
    }
    let error = serde_json::from_slice::<ErrorEnvelope>(answer.body)
        .ok()
        .map(|e| e.error);
    let code = error.as_ref().and_then(|e| e.code);
    let reason = match error {
        Some(error) => {
            let mut text = error.message.unwrap_or_default();
            if let Some(details) = error.error_data.and_then(|d| d.details) {
                text = format!("{text} ({details})");
            }
            match code {
                Some(code) => format!("whatsapp {code} (HTTP {}): {}", answer.status, clip(&text)),
                None => format!("whatsapp HTTP {}: {}", answer.status, clip(&text)),
            }
        }
        None => format!(
            "whatsapp HTTP {}: {}",
            answer.status,
            clip(&String::from_utf8_lossy(answer.body))
        ),
    };
    class(answer.status, code).into_result(reason, answer.retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::tests::{KEY, answer, message};
    use herald_shared::provider_config::{ProviderConfig, parse};
    use serde_json::{Value, json};

    fn config(settings: Value) -> WhatsAppConfig {
        let credentials = json!({"access_token": "EAAGtok"});
        match parse("whatsapp", "http://127.0.0.1:9", &settings, &credentials).unwrap() {
            ProviderConfig::WhatsApp(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_text_message_is_the_documented_json() {
        let request = build(
            &config(json!({"phone_number_id": "106540352242922"})),
            &message(),
        );
        assert_eq!(request.method, reqwest::Method::POST);
        assert_eq!(
            request.url,
            "http://127.0.0.1:9/v21.0/106540352242922/messages"
        );
        let headers: Vec<(&str, &str, bool)> = request
            .headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str(), h.sensitive))
            .collect();
        assert_eq!(
            headers,
            [
                ("Authorization", "Bearer EAAGtok", true),
                ("Content-Type", "application/json", false),
            ]
        );
        assert_eq!(
            String::from_utf8(request.body).unwrap(),
            format!(
                r#"{{"messaging_product":"whatsapp","recipient_type":"individual","to":"15551234567","type":"text","text":{{"preview_url":false,"body":"Hi Ada & <Bob>, 100% \"ready\"?"}},"biz_opaque_callback_data":"{KEY}"}}"#
            )
        );
    }

    #[test]
    fn a_template_message_carries_the_body_as_its_parameter() {
        let request = build(
            &config(json!({"phone_number_id": "1055", "api_version": "v19.0",
                           "template": {"name": "spring_sale", "language": "en_US"}})),
            &message(),
        );
        assert_eq!(request.url, "http://127.0.0.1:9/v19.0/1055/messages");
        assert_eq!(
            String::from_utf8(request.body).unwrap(),
            format!(
                r#"{{"messaging_product":"whatsapp","recipient_type":"individual","to":"15551234567","type":"template","template":{{"name":"spring_sale","language":{{"code":"en_US"}},"components":[{{"type":"body","parameters":[{{"type":"text","text":"Hi Ada & <Bob>, 100% \"ready\"?"}}]}}]}},"biz_opaque_callback_data":"{KEY}"}}"#
            )
        );
        let bare = build(
            &config(json!({"phone_number_id": "1055",
                           "template": {"name": "hello_world", "language": "en_US", "body_parameter": false}})),
            &message(),
        );
        assert!(
            String::from_utf8(bare.body)
                .unwrap()
                .contains(r#""template":{"name":"hello_world","language":{"code":"en_US"}},"#)
        );
    }

    fn error(code: i64, message: &str) -> String {
        json!({"error": {"message": message, "type": "OAuthException", "code": code,
                         "error_data": {"messaging_product": "whatsapp", "details": "more"},
                         "fbtrace_id": "Az8or2"}})
        .to_string()
    }

    #[test]
    fn answers_map_to_results() {
        assert_eq!(
            interpret(&answer(
                200,
                r#"{"messaging_product":"whatsapp","contacts":[{"input":"15551234567","wa_id":"15551234567"}],"messages":[{"id":"wamid.HBgN"}]}"#
            )),
            CallResult::Accepted {
                provider_message_id: Some("wamid.HBgN".into())
            }
        );
        assert_eq!(
            interpret(&answer(429, &error(130429, "(#130429) Rate limit hit"))),
            CallResult::Throttled {
                reason: "whatsapp 130429 (HTTP 429): (#130429) Rate limit hit (more)".into(),
                retry_after: None
            }
        );
        assert_eq!(
            interpret(&answer(400, &error(131026, "Message Undeliverable"))),
            CallResult::Permanent {
                reason: "whatsapp 131026 (HTTP 400): Message Undeliverable (more)".into()
            }
        );
        let cases = [
            (400, Some(131056), ErrorClass::Throttled),
            (400, Some(80007), ErrorClass::Throttled),
            (400, Some(4), ErrorClass::Throttled),
            (401, Some(190), ErrorClass::Misconfigured),
            (400, Some(190), ErrorClass::Misconfigured),
            (400, Some(131047), ErrorClass::Permanent),
            (400, Some(131051), ErrorClass::Permanent),
            (400, Some(100), ErrorClass::Permanent),
            (500, Some(131000), ErrorClass::Transient),
            (503, Some(2), ErrorClass::Unavailable),
            (400, Some(131057), ErrorClass::Unavailable),
            (400, Some(1), ErrorClass::Transient),
            (502, None, ErrorClass::Ambiguous),
            (403, Some(10), ErrorClass::Permanent),
        ];
        for (status, code, expected) in cases {
            assert_eq!(class(status, code), expected, "{status} {code:?}");
        }
    }
}
