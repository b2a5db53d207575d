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
    metadata: Option<serde_json::Value>,
    /// Each read on its own: one Herald cannot read must not cost the others.
    #[serde(default)]
    statuses: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Metadata {
    phone_number_id: Option<String>,
}

#[derive(Deserialize)]
struct Status {
    id: String,
    status: String,
    /// Seconds since the epoch; Meta writes them as a string.
    timestamp: Option<serde_json::Value>,
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

/// What a notification said: the statuses read, and how many could not be.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Statuses {
    pub read: Vec<NumberedReceipt>,
    /// Statuses (or a change's whole list, under a number that cannot be read) left out as
    /// unreadable. Refusing the notification for them would refuse the others with them:
    /// Meta would send the same again for days, and every time the same would fail.
    pub unreadable: usize,
}

/// The statuses of a notification, their provider provisionally `provider_id` (the one the
/// webhook URL names). Statuses Herald does not track (`deleted`, …) and other fields
/// (inbound messages) are left out; so are statuses it cannot read, counted. A document that
/// is no WhatsApp notification at all is refused.
pub fn statuses(provider_id: Uuid, body: &[u8]) -> Result<Statuses, Refusal> {
    let notification: Notification = serde_json::from_slice(body)
        .map_err(|e| Refusal::BadRequest(format!("not a WhatsApp notification: {e}")))?;
    if notification.object != "whatsapp_business_account" {
        return Err(Refusal::BadRequest(format!(
            "object is `{}`, not whatsapp_business_account",
            clip(&notification.object, 64)
        )));
    }
    let mut out = Statuses::default();
    for change in notification.entry.into_iter().flat_map(|e| e.changes) {
        if change.field != "messages" {
            continue;
        }
        let number = match change.value.metadata.map(number_of).transpose() {
            Ok(number) => number.flatten(),
            Err(reason) => {
                tracing::warn!(%provider_id, reason, "a change's number cannot be read: its statuses left out");
                out.unreadable += change.value.statuses.len();
                continue;
            }
        };
        for status in change.value.statuses {
            match receipt(provider_id, status) {
                Ok(Some(receipt)) => out.read.push(NumberedReceipt {
                    phone_number_id: number.clone(),
                    receipt,
                }),
                Ok(None) => {}
                Err(reason) => {
                    tracing::warn!(%provider_id, reason, "a status cannot be read: left out");
                    out.unreadable += 1;
                }
            }
        }
    }
    Ok(out)
}

/// A change's `metadata.phone_number_id`: looked up among the providers, so one PostgreSQL
/// cannot take (a NUL, say) is unreadable, not the database's error.
fn number_of(metadata: serde_json::Value) -> Result<Option<String>, String> {
    let metadata: Metadata =
        serde_json::from_value(metadata).map_err(|e| format!("metadata: {e}"))?;
    metadata
        .phone_number_id
        .map(|n| readable("metadata.phone_number_id", &n, 64))
        .transpose()
}

/// [`text`]'s check, its reason kept.
fn readable(field: &str, value: &str, max: usize) -> Result<String, String> {
    text(field, value, max).map_err(|refusal| match refusal {
        Refusal::BadRequest(why) => why,
        _ => format!("{field} cannot be read"),
    })
}

/// One status as a receipt; `None` for a status Herald does not track.
fn receipt(provider_id: Uuid, status: serde_json::Value) -> Result<Option<Receipt>, String> {
    let status: Status = serde_json::from_value(status).map_err(|e| format!("statuses[]: {e}"))?;
    let Some(normalised) = DeliveryStatus::from_whatsapp(&status.status) else {
        return Ok(None);
    };
    let error = status.errors.into_iter().next();
    let provider_time = status
        .timestamp
        .and_then(|t| match t {
            serde_json::Value::String(s) => s.parse::<i64>().ok(),
            other => other.as_i64(),
        })
        .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0));
    Ok(Some(Receipt {
        provider_id,
        message_id: readable("statuses[].id", status.id.trim(), 256)?,
        reference: status
            .biz_opaque_callback_data
            .as_deref()
            .and_then(parse_reference),
        seq: None,
        status: normalised,
        raw_status: readable("statuses[].status", &status.status, 64)?,
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
    }))
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
        let Statuses {
            read: got,
            unreadable,
        } = statuses(Uuid::nil(), body.as_bytes()).unwrap();
        assert_eq!(unreadable, 0);
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
        assert_eq!(
            statuses(Uuid::nil(), inbound.as_bytes()).unwrap(),
            Statuses::default()
        );
    }

    /// One status Herald cannot read (no id, an id PostgreSQL cannot take, a number with a
    /// NUL) is left out and counted; the rest of the notification is read. Refused whole,
    /// Meta would send it again for days, failing each time, the good statuses with it.
    #[test]
    fn an_unreadable_status_costs_only_itself() {
        let body = json!({"object": "whatsapp_business_account", "entry": [{"changes": [
            {"field": "messages", "value": {"metadata": {"phone_number_id": "1055"},
             "statuses": [
                {"status": "sent"},
                {"id": "wamid.\u{0}", "status": "sent"},
                {"id": "wamid.A", "status": "delivered", "timestamp": 17},
                {"id": "wamid.B", "status": "delivered"}
             ]}},
            {"field": "messages", "value": {"metadata": {"phone_number_id": "10\u{0}55"},
             "statuses": [{"id": "wamid.C", "status": "sent"}]}}]}]})
        .to_string();
        let got = statuses(Uuid::nil(), body.as_bytes()).unwrap();
        // wamid.A's timestamp is a number, not Meta's string: read all the same.
        let ids: Vec<_> = got
            .read
            .iter()
            .map(|r| r.receipt.message_id.as_str())
            .collect();
        assert_eq!(ids, ["wamid.A", "wamid.B"]);
        assert_eq!(got.unreadable, 3);
        assert_eq!(
            got.read[0].receipt.provider_time,
            DateTime::<Utc>::from_timestamp(17, 0)
        );
    }
}
