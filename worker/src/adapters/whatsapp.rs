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

/// At most `max` characters of an identifier Meta sends, printable ASCII only.
fn clip_to(text: &str, max: usize) -> String {
    text.chars()
        .filter(char::is_ascii_graphic)
        .take(max)
        .collect()
}
use crate::outcome::CallResult;
use herald_shared::provider_config::{
    ButtonKind, WhatsAppConfig, WhatsAppMessage, WhatsAppTemplate,
};
use herald_shared::queue::message::DispatchMessage;
use herald_shared::template;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

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
    #[serde(skip_serializing_if = "Option::is_none")]
    sub_type: Option<&'static str>,
    /// A button's position, as a string (as Meta's examples write it).
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<String>,
    parameters: Vec<Parameter<'a>>,
}

/// A parameter, tagged by `type` as the Cloud API reads it.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Parameter<'a> {
    Text { text: Cow<'a, str> },
    Payload { payload: String },
    CouponCode { coupon_code: String },
}

/// The request for `message`, or a permanent failure when a template parameter cannot be
/// rendered from the recipient's variables.
pub fn build(
    config: &WhatsAppConfig,
    message: &DispatchMessage,
) -> Result<HttpRequest, CallResult> {
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
        WhatsAppMessage::Template(t) => (
            "template",
            None,
            Some(Template {
                name: &t.name,
                language: Language { code: &t.language },
                components: components(t, message)?,
            }),
        ),
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
    Ok(HttpRequest::post(
        url,
        headers,
        serde_json::to_vec(&send).unwrap_or_default(),
    ))
}

/// The template's components in Meta's order: header, body, then each button.
fn components<'a>(
    t: &'a WhatsAppTemplate,
    message: &'a DispatchMessage,
) -> Result<Vec<Component<'a>>, CallResult> {
    let render = |part: &str, parameter: &str| {
        template::render(parameter, &message.variables).map_err(|e| CallResult::Permanent {
            reason: format!("whatsapp template {part}: {e}"),
        })
    };
    let texts = |part: &str, parameters: &[String]| -> Result<Vec<Parameter<'a>>, CallResult> {
        parameters
            .iter()
            .map(|p| render(part, p).map(|text| Parameter::Text { text: text.into() }))
            .collect()
    };
    let mut components = Vec::new();
    if !t.header.is_empty() {
        components.push(Component {
            kind: "header",
            sub_type: None,
            index: None,
            parameters: texts("header", &t.header)?,
        });
    }
    let body = if t.body_parameter {
        vec![Parameter::Text {
            text: Cow::Borrowed(&message.body),
        }]
    } else {
        texts("body", &t.body)?
    };
    if !body.is_empty() {
        components.push(Component {
            kind: "body",
            sub_type: None,
            index: None,
            parameters: body,
        });
    }
    for button in &t.buttons {
        let value = render("button", &button.parameter)?;
        let parameter = match button.kind {
            ButtonKind::Url => Parameter::Text { text: value.into() },
            ButtonKind::QuickReply => Parameter::Payload { payload: value },
            ButtonKind::CopyCode => Parameter::CouponCode { coupon_code: value },
        };
        components.push(Component {
            kind: "button",
            sub_type: Some(button.kind.sub_type()),
            index: Some(button.index.to_string()),
            parameters: vec![parameter],
        });
    }
    Ok(components)
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

/// The Graph API's error object, read field by field: one field of an unexpected type (an
/// `error_data` that is a string, as older answers have it) must not cost the code that
/// decides what the answer means.
struct GraphError {
    code: Option<i64>,
    message: Option<String>,
    details: Option<String>,
    /// Refines `code` (190's 463: the token expired; 460: the password changed; 100's 33:
    /// no such object).
    error_subcode: Option<i64>,
    /// What Meta's support asks for to trace the request.
    fbtrace_id: Option<String>,
}

impl GraphError {
    fn read(body: &[u8]) -> Option<Self> {
        let value = serde_json::from_slice::<serde_json::Value>(body).ok()?;
        let error = value.get("error").filter(|e| e.is_object())?;
        let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_owned);
        Some(Self {
            code: error.get("code").and_then(serde_json::Value::as_i64),
            message: text(error.get("message")),
            details: text(error.get("error_data").and_then(|d| d.get("details")))
                .or_else(|| text(error.get("error_data"))),
            error_subcode: error
                .get("error_subcode")
                .and_then(serde_json::Value::as_i64),
            fbtrace_id: text(error.get("fbtrace_id")),
        })
    }
}

/// How the Cloud API's error codes are treated (see the provider reference); `subcode`
/// refines `code`.
pub fn class(status: u16, code: Option<i64>, subcode: Option<i64>) -> ErrorClass {
    match (code, status) {
        // The pair rate limit: too many messages from this number to this one user. Only
        // the recipient waits; slowing the whole number down for it would hold back every
        // other recipient on it (overlapping campaigns to one user would collapse it).
        (Some(131056), _) => ErrorClass::RecipientBusy,
        // Throughput limit, spam rate limit, WABA and app call-rate limits: the provider
        // needs a slower pace, the recipient is not at fault.
        (Some(130429 | 131048 | 80007 | 4), _) | (_, 429) => ErrorClass::Throttled,
        // Access token expired or invalid; or the account or its setup refused, for every
        // recipient alike: permission denied (10, 200-299), no such phone number id
        // (100 with subcode 33), account locked (131031), payment (131042), blocked for a
        // policy (368), number not registered (133010), the template missing, paused or
        // disabled (132001, 132015, 132016). The campaign stops rather than its audience
        // failing. Not 132000 or 132007 (parameters not matching, their text against a
        // policy): parameters are rendered per recipient, and a campaign paused for one
        // would be paused again at every resume.
        (Some(190 | 10 | 200..=299 | 131031 | 131042 | 368 | 133010), _)
        | (Some(132001 | 132015 | 132016), _)
        | (_, 401) => ErrorClass::Misconfigured,
        (Some(100), _) if subcode == Some(33) => ErrorClass::Misconfigured,
        // Undeliverable, re-engagement window closed, unsupported type, invalid parameter.
        (Some(131026 | 131047 | 131051 | 100), _) => ErrorClass::Permanent,
        // Service temporarily down or overloaded, account upgrade in progress: nothing sent.
        // Only on a 503 or a 4xx: code 2 also comes on a 500 or a gateway's 504 raised after
        // the message was taken, and resending it at once would send it twice.
        (Some(2 | 131057), status) if status < 500 || status == 503 => ErrorClass::Unavailable,
        (_, 503) => ErrorClass::Unavailable,
        // Unknown API error; "something went wrong: message failed to send". Not on a
        // 5xx: Meta failed while handling the request, and it may have been sent.
        (Some(1 | 131000), ..500) | (_, 408) => ErrorClass::Transient,
        // Any other 5xx: Meta failed while handling the request, or a gateway lost its
        // answer (502, 504). The messages API takes no idempotency key, so the message may
        // exist: its webhook may still tell.
        (_, 500..) => ErrorClass::Ambiguous,
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
    let error = GraphError::read(answer.body);
    let code = error.as_ref().and_then(|e| e.code);
    let subcode = error.as_ref().and_then(|e| e.error_subcode);
    let reason = match error {
        Some(error) => {
            let mut text = error.message.unwrap_or_default();
            if let Some(details) = error.details {
                text = format!("{text} ({details})");
            }
            let subcode = error
                .error_subcode
                .map(|s| format!(", subcode {s}"))
                .unwrap_or_default();
            let trace = error
                .fbtrace_id
                .filter(|t| !t.is_empty())
                .map(|t| format!(" [fbtrace_id {}]", clip_to(&t, 64)))
                .unwrap_or_default();
            match code {
                Some(code) => format!(
                    "whatsapp {code} (HTTP {}{subcode}): {}{trace}",
                    answer.status,
                    clip(&text)
                ),
                None => format!(
                    "whatsapp HTTP {}{subcode}: {}{trace}",
                    answer.status,
                    clip(&text)
                ),
            }
        }
        None => format!(
            "whatsapp HTTP {}: {}",
            answer.status,
            clip(&String::from_utf8_lossy(answer.body))
        ),
    };
    class(answer.status, code, subcode).into_result(reason, answer.retry_after)
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
        )
        .unwrap();
        assert_eq!(request.method, reqwest::Method::POST);
        assert_eq!(
            request.url,
            "http://127.0.0.1:9/v24.0/106540352242922/messages"
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
        )
        .unwrap();
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
        )
        .unwrap();
        assert!(
            String::from_utf8(bare.body)
                .unwrap()
                .contains(r#""template":{"name":"hello_world","language":{"code":"en_US"}},"#)
        );
    }

    /// Three body parameters, a header parameter and two buttons: Meta's documented shape
    /// ("Send template messages": components in header, body, button order; each button with
    /// `sub_type`, its `index` as a string, and a `text` or `payload` parameter).
    #[test]
    fn a_template_with_parameters_is_the_documented_json() {
        let settings = json!({"phone_number_id": "106540352242922", "template": {
        "name": "order_update", "language": "en_US",
        "header": ["{{first_name}}"],
        "body": ["{{first_name}}", "{{order_id}}", "arrives {{date}}"],
        "buttons": [
            {"sub_type": "url", "index": 0, "parameter": "{{order_id}}"},
            {"sub_type": "quick_reply", "index": 1, "parameter": "STOP-{{order_id}}"}
        ]}});
        let mut m = message();
        m.variables = json!({"first_name": "Ada", "order_id": "A-12345", "date": "Friday"})
            .as_object()
            .cloned()
            .unwrap();
        let request = build(&config(settings.clone()), &m).unwrap();
        assert_eq!(
            String::from_utf8(request.body).unwrap(),
            format!(
                concat!(
                    r#"{{"messaging_product":"whatsapp","recipient_type":"individual","to":"15551234567","type":"template","#,
                    r#""template":{{"name":"order_update","language":{{"code":"en_US"}},"components":["#,
                    r#"{{"type":"header","parameters":[{{"type":"text","text":"Ada"}}]}},"#,
                    r#"{{"type":"body","parameters":[{{"type":"text","text":"Ada"}},{{"type":"text","text":"A-12345"}},{{"type":"text","text":"arrives Friday"}}]}},"#,
                    r#"{{"type":"button","sub_type":"url","index":"0","parameters":[{{"type":"text","text":"A-12345"}}]}},"#,
                    r#"{{"type":"button","sub_type":"quick_reply","index":"1","parameters":[{{"type":"payload","payload":"STOP-A-12345"}}]}}]}},"#,
                    r#""biz_opaque_callback_data":"{KEY}"}}"#
                ),
                KEY = KEY
            )
        );
        // A recipient without a variable a parameter needs cannot be sent this template.
        m.variables.remove("order_id");
        let Err(CallResult::Permanent { reason }) = build(&config(settings), &m) else {
            panic!("built without order_id")
        };
        assert!(reason.contains("order_id"), "{reason}");
    }

    #[test]
    fn meta_error_subcodes_and_trace_ids_are_kept() {
        let body = json!({"error": {"message": "Error validating access token: Session has expired",
            "type": "OAuthException", "code": 190, "error_subcode": 463, "fbtrace_id": "AbC123xyz"}});
        assert_eq!(
            interpret(&answer(401, &body.to_string())),
            CallResult::Misconfigured {
                reason: "whatsapp 190 (HTTP 401, subcode 463): Error validating access token: \
                         Session has expired [fbtrace_id AbC123xyz]"
                    .into()
            }
        );
    }

    #[test]
    fn an_error_field_of_an_unexpected_type_does_not_cost_the_code() {
        // `error_data` as a string (older answers), a numeric trace id: the code still
        // decides (a pair rate limit, not a permanent failure).
        let body = json!({"error": {"message": "Pair rate limit hit", "code": 131056,
            "error_data": "(#131056) too many messages to this user", "fbtrace_id": 12345}});
        assert!(matches!(
            interpret(&answer(400, &body.to_string())),
            CallResult::RecipientBusy { .. }
        ));
        // The phone number id named no object: the provider's setup, not the recipient.
        let missing = json!({"error": {"message": "Unsupported post request. Object with ID \
            '106540352242922' does not exist", "code": 100, "error_subcode": 33}});
        assert!(matches!(
            interpret(&answer(400, &missing.to_string())),
            CallResult::Misconfigured { .. }
        ));
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
                reason: "whatsapp 130429 (HTTP 429): (#130429) Rate limit hit (more) [fbtrace_id Az8or2]".into(),
                retry_after: None
            }
        );
        assert_eq!(
            interpret(&answer(400, &error(131026, "Message Undeliverable"))),
            CallResult::Permanent {
                reason:
                    "whatsapp 131026 (HTTP 400): Message Undeliverable (more) [fbtrace_id Az8or2]"
                        .into()
            }
        );
        let cases = [
            (400, Some(131056), ErrorClass::RecipientBusy),
            (429, Some(131056), ErrorClass::RecipientBusy),
            (400, Some(80007), ErrorClass::Throttled),
            (400, Some(4), ErrorClass::Throttled),
            (401, Some(190), ErrorClass::Misconfigured),
            (400, Some(190), ErrorClass::Misconfigured),
            (400, Some(131047), ErrorClass::Permanent),
            (400, Some(131051), ErrorClass::Permanent),
            (400, Some(100), ErrorClass::Permanent),
            (400, Some(131000), ErrorClass::Transient),
            (500, Some(131000), ErrorClass::Ambiguous),
            (500, Some(1), ErrorClass::Ambiguous),
            // A 5xx that names no error Meta documents: the message may exist.
            (500, None, ErrorClass::Ambiguous),
            (500, Some(999_999), ErrorClass::Ambiguous),
            (503, Some(2), ErrorClass::Unavailable),
            // Code 2 on another 5xx: Meta (or its gateway) may have taken the message.
            (500, Some(2), ErrorClass::Ambiguous),
            (504, Some(2), ErrorClass::Ambiguous),
            (500, Some(131057), ErrorClass::Ambiguous),
            (400, Some(131057), ErrorClass::Unavailable),
            (400, Some(1), ErrorClass::Transient),
            (502, None, ErrorClass::Ambiguous),
            (403, Some(10), ErrorClass::Misconfigured),
            (403, Some(200), ErrorClass::Misconfigured),
            (400, Some(131031), ErrorClass::Misconfigured),
            (400, Some(131042), ErrorClass::Misconfigured),
            (400, Some(368), ErrorClass::Misconfigured),
            (400, Some(132001), ErrorClass::Misconfigured),
            (400, Some(132015), ErrorClass::Misconfigured),
            // A parameter's text too long, or not matching, is this recipient's.
            (400, Some(132005), ErrorClass::Permanent),
            (400, Some(132000), ErrorClass::Permanent),
        ];
        for (status, code, expected) in cases {
            assert_eq!(class(status, code, None), expected, "{status} {code:?}");
        }
        // 100 is an invalid parameter, unless the object (the phone number id) is missing.
        assert_eq!(class(400, Some(100), Some(33)), ErrorClass::Misconfigured);
        assert_eq!(
            class(400, Some(100), Some(2_494_010)),
            ErrorClass::Permanent
        );
    }
}
