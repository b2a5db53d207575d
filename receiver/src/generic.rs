//! Receipts of a generic HTTP provider, in Herald's own format: a JSON object, or an array
//! of them, signed with `X-Herald-Signature: sha256=<hex HMAC-SHA256 of the body>` keyed
//! with the provider's `credentials.webhook_secret`:
//!
//! ```json
//! {"id": "msg_123", "status": "delivered", "reference": "herald-…-42",
//!  "error_code": "30003", "error_message": "…", "timestamp": "2026-11-29T10:00:00Z"}
//! ```
//!
//! `id` (the provider's message id) and `status` (Herald's statuses: `queued`, `sent`,
//! `delivered`, `undelivered`, `failed`, `read`, the call statuses…) are required;
//! `reference` is the one Herald sent (`?ref=` of the callback URL, or the idempotency key).
//! Only the body is signed, so the reference is read from it, never from the URL.

use crate::intake::{Refusal, clip, text};
use chrono::{DateTime, Utc};
use herald_shared::delivery::DeliveryStatus;
use herald_shared::queue::message::parse_reference;
use herald_store::receipts::Receipt;
use serde::Deserialize;
use uuid::Uuid;

#[derive(Deserialize)]
struct Item {
    id: String,
    status: String,
    reference: Option<String>,
    error_code: Option<serde_json::Value>,
    error_message: Option<String>,
    timestamp: Option<DateTime<Utc>>,
}

/// Most receipts one request may carry.
pub const MAX_PER_REQUEST: usize = 1_000;

pub fn receipts(provider_id: Uuid, body: &[u8]) -> Result<Vec<Receipt>, Refusal> {
    // One receipt or a list of them, told apart by the first character (an untagged enum
    // would answer "did not match any variant" whatever field was wrong).
    let list = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let parsed = if list {
        serde_json::from_slice::<Vec<Item>>(body)
    } else {
        serde_json::from_slice::<Item>(body).map(|item| vec![item])
    };
    let items = parsed.map_err(|e| Refusal::BadRequest(format!("not a receipt: {e}")))?;
    if items.len() > MAX_PER_REQUEST {
        return Err(Refusal::BadRequest(format!(
            "at most {MAX_PER_REQUEST} receipts per request"
        )));
    }
    items
        .into_iter()
        .map(|item| {
            let status = item.status.parse::<DeliveryStatus>().map_err(|e| {
                Refusal::BadRequest(format!("status: {}", clip(&e.to_string(), 100)))
            })?;
            Ok(Receipt {
                provider_id,
                message_id: text("id", item.id.trim(), 256)?,
                reference: item.reference.as_deref().and_then(parse_reference),
                seq: None,
                status,
                raw_status: item.status,
                error_code: item.error_code.map(|c| match c {
                    serde_json::Value::String(s) => clip(&s, 32),
                    other => clip(&other.to_string(), 32),
                }),
                error_message: item.error_message.map(|m| clip(&m, 500)),
                provider_time: item.timestamp,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_or_many() {
        let one = br#"{"id":"m1","status":"delivered","reference":"herald-00000000000000000000000000000007-42","error_code":7}"#;
        let got = receipts(Uuid::nil(), one).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].status, DeliveryStatus::Delivered);
        assert_eq!(got[0].reference, Some((Uuid::from_u128(7), 42)));
        assert_eq!(got[0].error_code.as_deref(), Some("7"));
        let many = br#"[{"id":"m1","status":"sent"},{"id":"m2","status":"accepted","timestamp":"2026-11-29T10:00:00Z"}]"#;
        let got = receipts(Uuid::nil(), many).unwrap();
        assert_eq!(got[1].status, DeliveryStatus::Queued);
        assert!(got[1].provider_time.is_some());
    }

    #[test]
    fn malformed_receipts_are_refused() {
        for bad in [
            &b"{"[..],
            br#"{"status":"sent"}"#,
            br#"{"id":"m1","status":"teleported"}"#,
            br#"{"id":"","status":"sent"}"#,
            br#"{"id":"m1","status":"sent","timestamp":"yesterday"}"#,
            br#"[{"id":"m1","status":"sent"},{"id":7,"status":"sent"}]"#,
        ] {
            assert!(
                matches!(receipts(Uuid::nil(), bad), Err(Refusal::BadRequest(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // The refusal says what was wrong, and where (not "did not match any variant").
        let Err(Refusal::BadRequest(why)) = receipts(
            Uuid::nil(),
            br#"{"id":"m1","status":"sent","timestamp":"yesterday"}"#,
        ) else {
            panic!("refused expected")
        };
        assert!(
            why.contains("invalid") && why.contains("column 50"),
            "{why}"
        );
    }
}
