//! A generic HTTP JSON provider: `POST {endpoint}` with a JSON body, an `Idempotency-Key`
//! header stable across retries of one recipient, and a bearer token if the provider has one.
//!
//! Without a body template the body is Herald's original one:
//! `{"body", "channel", "metadata": {"campaign_id", "recipient_id", "tenant_id"}, "to"}`, and
//! `callback_url` (where to post this message's receipts) when Herald takes receipts.
//! With `settings.body_template`, every string in the template is rendered with the message's
//! variables; the values land inside JSON strings, so serialising escapes them.

use super::{Answer, ErrorClass, Header, HttpRequest, callback_with_reference, clip};
use crate::outcome::{CallResult, StatusClass, classify_status};
use herald_shared::provider_config::HttpConfig;
use herald_shared::queue::message::DispatchMessage;
use herald_shared::template;
use serde_json::{Map, Value, json};

pub fn build(
    config: &HttpConfig,
    message: &DispatchMessage,
    callback: Option<&str>,
) -> HttpRequest {
    let callback = callback.map(|url| callback_with_reference(url, message));
    let body = match &config.body_template {
        None => {
            let mut body = json!({
                "to": message.to,
                "body": message.body,
                "channel": message.channel,
                "metadata": {
                    "tenant_id": message.tenant_id.to_string(),
                    "campaign_id": message.campaign_id.to_string(),
                    "recipient_id": message.recipient_id.to_string(),
                },
            });
            if let Some(callback) = &callback {
                body["callback_url"] = Value::String(callback.clone());
            }
            body
        }
        Some(template) => render(template, &variables(message, callback.as_deref())),
    };
    let mut headers = vec![
        Header::new("Content-Type", "application/json"),
        Header::new("Idempotency-Key", message.idempotency_key()),
    ];
    if let Some(token) = &config.bearer_token {
        headers.push(Header::secret(
            "Authorization",
            format!("Bearer {}", token.expose()),
        ));
    }
    headers.extend(
        config
            .headers
            .iter()
            .map(|(name, value)| Header::new(name, value.clone())),
    );
    headers.extend(
        config
            .secret_headers
            .iter()
            .map(|(name, value)| Header::secret(name, value.expose())),
    );
    // Serialising a Value of strings and numbers cannot fail.
    let body = serde_json::to_vec(&body).unwrap_or_default();
    HttpRequest::post(config.endpoint.clone(), headers, body)
}

/// The variables a body template may use (`BODY_TEMPLATE_VARIABLES`).
fn variables(message: &DispatchMessage, callback: Option<&str>) -> Map<String, Value> {
    let mut vars = Map::new();
    let mut set = |name: &str, value: String| {
        vars.insert(name.to_owned(), Value::String(value));
    };
    set("to", message.to.clone());
    set("body", message.body.clone());
    set("channel", message.channel.as_str().to_owned());
    set("idempotency_key", message.idempotency_key());
    set("recipient_id", message.recipient_id.to_string());
    set("campaign_id", message.campaign_id.to_string());
    set("tenant_id", message.tenant_id.to_string());
    set("callback_url", callback.unwrap_or_default().to_owned());
    vars
}

/// Renders every string of the template. The template was validated when the provider was
/// loaded (known variables only), so rendering cannot fail; a string that somehow does is
/// sent as written rather than dropped. A string may wrap the whole text in much more of its
/// own (an HTML body around `{{body}}`), so its bound is its own length and a few texts':
/// enough for any use, and it keeps a string repeating a variable from building a huge one.
fn render(template: &Value, vars: &Map<String, Value>) -> Value {
    match template {
        Value::String(s) => {
            // Its length in bytes (at least its characters): no count on every message.
            let bound = s.len() + 4 * template::MAX_TEXT_CHARS;
            Value::String(template::render_within(s, vars, bound).unwrap_or_else(|_| s.clone()))
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| render(v, vars)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), render(v, vars)))
                .collect(),
        ),
        other => other.clone(),
    }
}

pub fn interpret(answer: &Answer<'_>) -> CallResult {
    let class = match classify_status(answer.status) {
        StatusClass::Success => {
            let id = serde_json::from_slice::<Value>(answer.body)
                .ok()
                .and_then(|v| {
                    v.get("id")
                        .or_else(|| v.get("message_id"))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                });
            return CallResult::Accepted {
                provider_message_id: id,
            };
        }
        _ if answer.status == 429 => ErrorClass::Throttled,
        _ if answer.status == 401 => ErrorClass::Misconfigured,
        StatusClass::Transient => ErrorClass::Transient,
        StatusClass::Unavailable => ErrorClass::Unavailable,
        StatusClass::Ambiguous => ErrorClass::Ambiguous,
        StatusClass::Permanent => ErrorClass::Permanent,
    };
    let reason = format!(
        "HTTP {}: {}",
        answer.status,
        clip(&String::from_utf8_lossy(answer.body))
    );
    class.into_result(reason, answer.retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::tests::{KEY, answer, message};
    use herald_shared::provider_config::{ProviderConfig, parse};
    use std::time::Duration;

    fn config(settings: Value, credentials: Value) -> HttpConfig {
        match parse(
            "http",
            "http://127.0.0.1:9/v1/messages",
            &settings,
            &credentials,
        )
        .unwrap()
        {
            ProviderConfig::Http(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_default_request_is_unchanged() {
        let request = build(
            &config(json!({}), json!({"bearer_token": "tok"})),
            &message(),
            None,
        );
        assert_eq!(request.method, reqwest::Method::POST);
        assert_eq!(request.url, "http://127.0.0.1:9/v1/messages");
        let headers: Vec<(&str, &str, bool)> = request
            .headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str(), h.sensitive))
            .collect();
        assert_eq!(
            headers,
            [
                ("Content-Type", "application/json", false),
                ("Idempotency-Key", KEY, false),
                ("Authorization", "Bearer tok", true),
            ]
        );
        assert_eq!(
            String::from_utf8(request.body).unwrap(),
            concat!(
                r#"{"body":"Hi Ada & <Bob>, 100% \"ready\"?","channel":"sms","#,
                r#""metadata":{"campaign_id":"00000000-0000-0000-0000-000000000007","#,
                r#""recipient_id":"42","tenant_id":"00000000-0000-0000-0000-000000000001"},"#,
                r#""to":"+15551234567"}"#
            )
        );
        // With receipts, the body says where to post them, naming the recipient.
        let with_receipts = build(
            &config(json!({}), json!({})),
            &message(),
            Some("https://hooks.example/webhooks/http/9"),
        );
        let body: Value = serde_json::from_slice(&with_receipts.body).unwrap();
        assert_eq!(
            body["callback_url"],
            format!("https://hooks.example/webhooks/http/9?ref={KEY}&seq=3")
        );
    }

    #[test]
    fn templates_render_json_escaped_and_extra_headers_follow() {
        let c = config(
            json!({
                "body_template": {"phone": "{{to}}", "text": "{{ body }}", "ref": "{{idempotency_key}}",
                                  "n": 1, "tags": ["{{channel}}", "r{{recipient_id}}"],
                                  "hook": "{{callback_url}}"},
                "headers": {"X-Tenant": "acme"},
            }),
            json!({"headers": {"X-Api-Key": "k3y"}}),
        );
        let request = build(&c, &message(), Some("https://h.example/cb"));
        assert_eq!(
            String::from_utf8(request.body.clone()).unwrap(),
            format!(
                r#"{{"hook":"https://h.example/cb?ref={KEY}&seq=3","n":1,"phone":"+15551234567","ref":"{KEY}","tags":["sms","r42"],"text":"Hi Ada & <Bob>, 100% \"ready\"?"}}"#
            )
        );
        assert_eq!(request.header("X-Tenant"), Some("acme"));
        assert_eq!(request.header("X-Api-Key"), Some("k3y"));
        assert!(
            request
                .headers
                .iter()
                .any(|h| h.name == "X-Api-Key" && h.sensitive)
        );
        assert_eq!(request.header("Authorization"), None);
    }

    #[test]
    fn a_long_wrapper_around_the_text_still_renders() {
        let wrapper = format!("<div>{}</div>{{{{body}}}}", "x".repeat(20_000));
        let c = config(json!({"body_template": {"html": wrapper}}), json!({}));
        let request = build(&c, &message(), None);
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let html = body["html"].as_str().unwrap_or_default();
        assert!(
            html.ends_with("</div>Hi Ada & <Bob>, 100% \"ready\"?"),
            "{}",
            &html[html.len() - 60..]
        );
    }

    #[test]
    fn answers_map_to_results() {
        assert_eq!(
            interpret(&answer(200, r#"{"id":"sim_1","status":"accepted"}"#)),
            CallResult::Accepted {
                provider_message_id: Some("sim_1".into())
            }
        );
        assert_eq!(
            interpret(&answer(202, "not json")),
            CallResult::Accepted {
                provider_message_id: None
            }
        );
        let limited = Answer {
            retry_after: Some(Duration::from_secs(2)),
            ..answer(429, "slow down")
        };
        assert_eq!(
            interpret(&limited),
            CallResult::Throttled {
                reason: "HTTP 429: slow down".into(),
                retry_after: Some(Duration::from_secs(2))
            }
        );
        assert!(matches!(
            interpret(&answer(503, "")),
            CallResult::Unavailable { .. }
        ));
        // A server error may have had its effect: settled by a receipt or, for a provider
        // that honours the idempotency key (`unknown_outcome = retry`), sent again at once.
        assert!(matches!(
            interpret(&answer(500, "")),
            CallResult::Unknown { .. }
        ));
        assert!(matches!(
            interpret(&answer(401, "")),
            CallResult::Misconfigured { .. }
        ));
        assert_eq!(
            interpret(&answer(400, r#"{"error":{"code":"invalid_number"}}"#)),
            CallResult::Permanent {
                reason: r#"HTTP 400: {"error":{"code":"invalid_number"}}"#.into()
            }
        );
    }
}
