//! The WhatsApp Cloud API's webhooks: the subscription check (`GET` with `hub.mode`,
//! `hub.verify_token`, `hub.challenge`) and status notifications (`POST`, signed with
//! `X-Hub-Signature-256`): `entry[].changes[].value.statuses[]`, each with the message's
//! `id` (wamid), `status`, `timestamp`, the `biz_opaque_callback_data` Herald set on the
//! send (its reference) and, when it failed, `errors[]`.

use crate::intake::{Refusal, clip, text};
use chrono::{DateTime, Utc};
use herald_shared::delivery::DeliveryStatus;
use herald_shared::queue::message::parse_reference;
use herald_store::receipts::Receipt;
use serde::Deserialize;
use uuid::Uuid;

#[derive(Deserialize)]
struct Notification {
    object: String,
    #[serde(default)]
    entry: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    changes: Vec<Change>,
}

#[derive(Deserialize)]
struct Change {
    #[serde(default)]
    field: String,
    value: Value,
}

#[derive(Deserialize)]
struct Value {
    metadata: Option<Metadata>,
    #[serde(default)]
    statuses: Vec<Status>,
}

#[derive(Deserialize)]
struct Metadata {
    phone_number_id: Option<String>,
}

#[derive(Deserialize)]
struct Status {
    id: String,
    status: String,
    timestamp: Option<String>,
    biz_opaque_callback_data: Option<String>,
    #[serde(default)]
    errors: Vec<Error>,
}

#[derive(Deserialize)]
struct Error {
    code: Option<serde_json::Value>,
    title: Option<String>,
    message: Option<String>,
}

/// One status, with the phone number it came through (its provider is found by that).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberedReceipt {
    pub phone_number_id: Option<String>,
    pub receipt: Receipt,
}

/// The statuses of a notification, their provider provisionally `provider_id` (the one the
/// webhook URL names). Statuses Herald does not track (`deleted`, …) and other fields
/// (inbound messages) are left out.
pub fn statuses(provider_id: Uuid, body: &[u8]) -> Result<Vec<NumberedReceipt>, Refusal> {
    let notification: Notification = serde_json::from_slice(body)
        .map_err(|e| Refusal::BadRequest(format!("not a WhatsApp notification: {e}")))?;
    if notification.object != "whatsapp_business_account" {
        return Err(Refusal::BadRequest(format!(
            "object is `{}`, not whatsapp_business_account",
            clip(&notification.object, 64)
        )));
    }
    let mut out = Vec::new();
    for change in notification.entry.into_iter().flat_map(|e| e.changes) {
        if change.field != "messages" {
            continue;
        }
        // Looked up among the providers: one PostgreSQL cannot take (a NUL, say) is the
        // sender's error, not the database's.
        let number = change
            .value
            .metadata
            .and_then(|m| m.phone_number_id)
            .map(|n| text("metadata.phone_number_id", &n, 64))
            .transpose()?;
        for status in change.value.statuses {
            let Some(normalised) = DeliveryStatus::from_whatsapp(&status.status) else {
                continue;
            };
            let error = status.errors.into_iter().next();
            let provider_time = status
                .timestamp
                .as_deref()
                .and_then(|t| t.parse::<i64>().ok())
                .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0));
            out.push(NumberedReceipt {
                phone_number_id: number.clone(),
                receipt: Receipt {
                    provider_id,
                    message_id: text("statuses[].id", status.id.trim(), 256)?,
                    reference: status
                        .biz_opaque_callback_data
                        .as_deref()
                        .and_then(parse_reference),
                    seq: None,
                    status: normalised,
                    raw_status: text("statuses[].status", &status.status, 64)?,
                    error_code: error.as_ref().and_then(|e| {
                        e.code.as_ref().map(|c| match c {
                            serde_json::Value::String(s) => clip(s, 32),
                            other => clip(&other.to_string(), 32),
                        })
                    }),
                    error_message: error
                        .and_then(|e| e.message.or(e.title))
                        .map(|m| clip(&m, 500)),
                    provider_time,
                },
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn statuses_are_read_with_their_number_reference_and_errors() {
        let body = json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550001111", "phone_number_id": "1055"},
                "statuses": [
                    {"id": "wamid.A", "status": "read", "timestamp": "1785000000",
                     "recipient_id": "15551234567",
                     "biz_opaque_callback_data": "herald-00000000000000000000000000000007-42"},
                    {"id": "wamid.B", "status": "failed", "timestamp": "1785000001",
                     "recipient_id": "15551234568",
                     "errors": [{"code": 131026, "title": "Message undeliverable"}]},
                    {"id": "wamid.C", "status": "deleted"}
                ]}}]}]
        })
        .to_string();
        let got = statuses(Uuid::nil(), body.as_bytes()).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].phone_number_id.as_deref(), Some("1055"));
        assert_eq!(got[0].receipt.status, DeliveryStatus::Read);
        assert_eq!(got[0].receipt.reference, Some((Uuid::from_u128(7), 42)));
        assert_eq!(got[1].receipt.status, DeliveryStatus::Failed);
        assert_eq!(got[1].receipt.error_code.as_deref(), Some("131026"));
        assert_eq!(
            got[1].receipt.error_message.as_deref(),
            Some("Message undeliverable")
        );
    }

    #[test]
    fn other_documents_are_refused() {
        assert!(statuses(Uuid::nil(), b"{").is_err());
        assert!(statuses(Uuid::nil(), br#"{"object":"page","entry":[]}"#).is_err());
        let inbound = json!({"object": "whatsapp_business_account", "entry": [{"changes": [
            {"field": "messages", "value": {"messages": [{"id": "wamid.in"}]}}]}]})
        .to_string();
        assert_eq!(statuses(Uuid::nil(), inbound.as_bytes()).unwrap(), []);
        // A number PostgreSQL cannot look up is the sender's error (400), not a 503.
        let nul = json!({"object": "whatsapp_business_account", "entry": [{"changes": [
            {"field": "messages", "value": {"metadata": {"phone_number_id": "10\u{0}55"},
             "statuses": [{"id": "wamid.A", "status": "sent"}]}}]}]})
        .to_string();
        assert!(matches!(
            statuses(Uuid::nil(), nul.as_bytes()),
            Err(Refusal::BadRequest(reason)) if reason.contains("metadata.phone_number_id")
        ));
    }
}
