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

/// What a request's body held.
#[derive(Debug, Default)]
pub struct Read {
    pub receipts: Vec<Receipt>,
    /// Receipts in the list that could not be read (a field missing or of the wrong type,
    /// a status Herald does not know, an empty id), skipped. Refusing the request for them
    /// would refuse the others with it, for good: the provider sends the same body again.
    pub unreadable: usize,
}

/// The receipts of `body`; a body that is no receipt or list of them at all, or a list
/// longer than [`MAX_PER_REQUEST`], is refused.
pub fn receipts(provider_id: Uuid, body: &[u8]) -> Result<Read, Refusal> {
    // One receipt or a list of them, told apart by the first character (an untagged enum
    // would answer "did not match any variant" whatever field was wrong).
    let list = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let items = if list {
        serde_json::from_slice::<Bounded>(body)
            .map_err(|e| Refusal::BadRequest(format!("not a list of receipts: {e}")))?
            .0
    } else {
        // A single receipt that cannot be read is refused, saying why: there is nothing
        // else in the request to keep.
        let item = serde_json::from_slice::<Item>(body)
            .map_err(|e| Refusal::BadRequest(format!("not a receipt: {e}")))?;
        let receipt = receipt(provider_id, item)?;
        return Ok(Read {
            receipts: vec![receipt],
            unreadable: 0,
        });
    };
    let mut read = Read::default();
    for item in items {
        match item.and_then(|item| receipt(provider_id, item).ok()) {
            Some(receipt) => read.receipts.push(receipt),
            None => read.unreadable += 1,
        }
    }
    Ok(read)
}

/// A list's items, each read as a receipt or not (`None`), refused past
/// [`MAX_PER_REQUEST`] as it is read: a body of millions of small values is never held
/// whole, as a `Vec<Value>` of it would be (tens of bytes a value).
struct Bounded(Vec<Option<Item>>);

impl<'de> Deserialize<'de> for Bounded {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Items;
        impl<'de> serde::de::Visitor<'de> for Items {
            type Value = Bounded;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "a list of at most {MAX_PER_REQUEST} receipts")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Bounded, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Lenient>()? {
                    if items.len() == MAX_PER_REQUEST {
                        return Err(serde::de::Error::custom(format!(
                            "at most {MAX_PER_REQUEST} receipts per request"
                        )));
                    }
                    items.push(match item {
                        Lenient::Item(item) => Some(item),
                        Lenient::Other(_) => None,
                    });
                }
                Ok(Bounded(items))
            }
        }
        deserializer.deserialize_seq(Items)
    }
}

/// A list's item: a receipt, or anything else (skipped, counted unreadable).
#[derive(Deserialize)]
#[serde(untagged)]
enum Lenient {
    Item(Item),
    Other(serde::de::IgnoredAny),
}

fn receipt(provider_id: Uuid, item: Item) -> Result<Receipt, Refusal> {
    let status = item
        .status
        .parse::<DeliveryStatus>()
        .map_err(|e| Refusal::BadRequest(format!("status: {}", clip(&e.to_string(), 100))))?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_or_many() {
        let one = br#"{"id":"m1","status":"delivered","reference":"herald-00000000000000000000000000000007-42","error_code":7}"#;
        let got = receipts(Uuid::nil(), one).unwrap().receipts;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].status, DeliveryStatus::Delivered);
        assert_eq!(got[0].reference, Some((Uuid::from_u128(7), 42)));
        assert_eq!(got[0].error_code.as_deref(), Some("7"));
        let many = br#"[{"id":"m1","status":"sent"},{"id":"m2","status":"accepted","timestamp":"2026-11-29T10:00:00Z"}]"#;
        let got = receipts(Uuid::nil(), many).unwrap().receipts;
        assert_eq!(got[1].status, DeliveryStatus::Queued);
        assert!(got[1].provider_time.is_some());
    }

    #[test]
    fn an_unreadable_receipt_in_a_list_costs_only_itself() {
        let body = br#"[{"id":"m1","status":"sent"},{"id":7,"status":"sent"},
            {"id":"m3","status":"teleported"},{"id":"","status":"sent"},
            {"id":"m5","status":"sent","timestamp":"yesterday"},"nothing",
            {"id":"m7","status":"delivered"}]"#;
        let read = receipts(Uuid::nil(), body).unwrap();
        let ids: Vec<&str> = read
            .receipts
            .iter()
            .map(|r| r.message_id.as_str())
            .collect();
        assert_eq!((ids, read.unreadable), (vec!["m1", "m7"], 5));
    }

    #[test]
    fn a_list_is_refused_past_its_bound_as_it_is_read() {
        let most: Vec<String> = (0..MAX_PER_REQUEST).map(|_| "0".to_owned()).collect();
        let read = receipts(Uuid::nil(), format!("[{}]", most.join(",")).as_bytes()).unwrap();
        assert_eq!((read.receipts.len(), read.unreadable), (0, MAX_PER_REQUEST));
        let past = format!("[{},0]", most.join(","));
        let Err(Refusal::BadRequest(why)) = receipts(Uuid::nil(), past.as_bytes()) else {
            panic!("refused expected")
        };
        assert!(why.contains("at most 1000 receipts"), "{why}");
    }

    #[test]
    fn malformed_receipts_are_refused() {
        for bad in [
            &b"{"[..],
            br#"{"status":"sent"}"#,
            br#"{"id":"m1","status":"teleported"}"#,
            br#"{"id":"","status":"sent"}"#,
            br#"{"id":"m1","status":"sent","timestamp":"yesterday"}"#,
            br#"[{"id":"m1","status":"sent"}"#,
            br#"{"receipts": []}"#,
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
