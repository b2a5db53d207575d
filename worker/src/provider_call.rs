//! The HTTP call to a generic JSON provider.
//!
//! `POST {endpoint}` with `{"to", "body", "channel", "metadata"}`, an `Idempotency-Key` header
//! stable across retries of one recipient, and a bearer token if the provider has one.

use crate::outcome::{CallResult, StatusClass, classify_status};
use crate::providers::Provider;
use herald_shared::queue::message::DispatchMessage;
use reqwest::Client;
use serde_json::{Value, json};
use std::time::Duration;

/// Most characters of a provider's error body kept in `last_error`.
const ERROR_BODY_LIMIT: usize = 300;

pub async fn send(client: &Client, provider: &Provider, message: &DispatchMessage) -> CallResult {
    let payload = json!({
        "to": message.to,
        "body": message.body,
        "channel": message.channel,
        "metadata": {
            "tenant_id": message.tenant_id.to_string(),
            "campaign_id": message.campaign_id.to_string(),
            "recipient_id": message.recipient_id.to_string(),
        },
    });
    let mut request = client
        .post(&provider.endpoint)
        .timeout(provider.timeout)
        .header("Idempotency-Key", message.idempotency_key())
        .json(&payload);
    if let Some(token) = &provider.bearer_token {
        request = request.bearer_auth(token);
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) if error.is_timeout() => {
            return CallResult::Transient {
                reason: format!("timed out after {:?}", provider.timeout),
                retry_after: None,
            };
        }
        Err(error) => {
            return CallResult::Transient {
                reason: format!("request failed: {}", without_url(&error)),
                retry_after: None,
            };
        }
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(error) if error.is_timeout() => {
            return CallResult::Transient {
                reason: format!("timed out after {:?}", provider.timeout),
                retry_after: None,
            };
        }
        Err(error) => {
            return CallResult::Transient {
                reason: format!("reading response: {}", without_url(&error)),
                retry_after: None,
            };
        }
    };
    match classify_status(status) {
        StatusClass::Success => {
            let id = serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
                v.get("id")
                    .or_else(|| v.get("message_id"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
            CallResult::Accepted {
                provider_message_id: id,
            }
        }
        StatusClass::Transient => CallResult::Transient {
            reason: describe(status, &body),
            retry_after,
        },
        StatusClass::Permanent => CallResult::Permanent {
            reason: describe(status, &body),
        },
    }
}

fn describe(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut text: String = text.chars().take(ERROR_BODY_LIMIT).collect();
    if text.len() < body.len() {
        text.push('…');
    }
    format!("HTTP {status}: {text}")
}

/// reqwest errors print the URL, which may carry credentials in query strings.
fn without_url(error: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    let mut deepest = None;
    while let Some(s) = source {
        deepest = Some(s.to_string());
        source = s.source();
    }
    deepest.unwrap_or_else(|| "connection error".into())
}
