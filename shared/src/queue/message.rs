//! The dispatch message: one dispatch of one recipient, self-contained so a worker needs no
//! extra lookup before calling the provider; and the batch that carries several of them, of
//! one provider's lane, in one AMQP message, so the broker's cost is paid per batch, not per
//! recipient.

use crate::domain::Channel;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Bumped when the format changes incompatibly; workers reject versions they do not know.
pub const FORMAT_VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchMessage {
    pub v: u8,
    pub recipient_id: i64,
    /// The recipient's `dispatch_seq` at claim time: a message whose seq no longer matches the
    /// row is stale (the recipient was re-dispatched or finished) and is dropped unsent.
    pub seq: i32,
    pub tenant_id: Uuid,
    pub campaign_id: Uuid,
    pub provider_id: Uuid,
    pub channel: Channel,
    pub to: String,
    /// Rendered from the campaign's template and the recipient's variables.
    pub body: String,
    /// The campaign's expiry: a worker that gets to the provider call only after it (say,
    /// after waiting for the provider's in-flight cap) does not send. Absent in messages of
    /// campaigns without one (and in messages from before the field existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The recipient's variables, for what a provider fills in at send time beside the body
    /// (a WhatsApp template's header, body and button parameters). Absent when empty.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub variables: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a dispatch message: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("unsupported message format version {0}")]
    Version(u8),
    #[error("a batch without dispatches")]
    Empty,
}

impl DispatchMessage {
    /// The AMQP `message-id`: unique per dispatch, stable across redeliveries.
    pub fn message_id(&self) -> String {
        format!("{}:{}", self.recipient_id, self.seq)
    }

    /// The idempotency key sent to the provider: stable across every retry of one recipient,
    /// so a provider that honours keys never delivers the same recipient twice. It is also
    /// the reference a provider echoes back in its receipts (see [`parse_reference`]).
    pub fn idempotency_key(&self) -> String {
        reference(self.campaign_id, self.recipient_id)
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain strings and numbers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let message: Self = serde_json::from_slice(bytes)?;
        if message.v != FORMAT_VERSION {
            return Err(DecodeError::Version(message.v));
        }
        Ok(message)
    }
}

/// The batch envelope's version (its items are [`FORMAT_VERSION`] dispatch messages).
pub const BATCH_VERSION: u8 = 2;

/// Most recipients one AMQP message carries. Per recipient, a message of its own cost the
/// broker about as much CPU as PostgreSQL; twenty to a message make it a small share. Not
/// more: a message is acked only once its last recipient has room under the worker's cap
/// and is leased, so a newcomer's batch behind it waits for all of them.
pub const MAX_PER_MESSAGE: usize = 20;

/// How many recipients the messages of a lane carry, for workers that may each have
/// `allowance` requests in flight to its provider (the smallest allowance among them). A
/// worker holds a lane's messages whole, each recipient in them waits for room under the
/// worker's allowance, and a message's slot in the worker's prefetch is taken until the
/// last of its recipients has room and is leased: an eighth of the allowance keeps that
/// short (a newcomer waits behind a few batches, each an eighth of the worker's requests).
/// The scheduler cuts batches by it and the worker sizes its prefetch by it, so both agree.
pub fn per_message(allowance: u32) -> usize {
    usize::try_from(allowance / 8)
        .unwrap_or(MAX_PER_MESSAGE)
        .clamp(1, MAX_PER_MESSAGE)
}

#[derive(Serialize)]
struct BatchOut<'a> {
    v: u8,
    messages: &'a [DispatchMessage],
}

#[derive(Deserialize)]
struct BatchIn {
    v: u8,
    messages: Vec<DispatchMessage>,
}

/// The body of one AMQP message carrying `messages` (all of one lane).
pub fn encode_batch(messages: &[DispatchMessage]) -> Vec<u8> {
    let batch = BatchOut {
        v: BATCH_VERSION,
        messages,
    };
    // Serialising plain strings and numbers cannot fail.
    serde_json::to_vec(&batch).unwrap_or_default()
}

/// The dispatches in one AMQP message's body: a batch, or a single dispatch message as a
/// scheduler from before batches published them (still in a queue across an upgrade).
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<DispatchMessage>, DecodeError> {
    match serde_json::from_slice::<BatchIn>(bytes) {
        Ok(batch) if batch.v != BATCH_VERSION => Err(DecodeError::Version(batch.v)),
        Ok(batch) => {
            if let Some(item) = batch.messages.iter().find(|m| m.v != FORMAT_VERSION) {
                return Err(DecodeError::Version(item.v));
            }
            if batch.messages.is_empty() {
                return Err(DecodeError::Empty);
            }
            Ok(batch.messages)
        }
        Err(_) => DispatchMessage::decode(bytes).map(|message| vec![message]),
    }
}

/// The AMQP `message-id` of a batch: its first dispatch's, and how many follow. Stable across
/// redeliveries; a row claim bumps its recipients' `dispatch_seq`, but a campaign's first
/// attempts claimed by range again (a cursor moved back) repeat their earlier batch's ids.
/// Nothing deduplicates by it: the lease decides.
pub fn batch_message_id(messages: &[DispatchMessage]) -> String {
    match messages.first() {
        Some(first) => format!("{}+{}", first.message_id(), messages.len() - 1),
        None => String::new(),
    }
}

/// `herald-{campaign}-{recipient}`: names one recipient in requests and receipts.
pub fn reference(campaign_id: Uuid, recipient_id: i64) -> String {
    format!("herald-{}-{}", campaign_id.simple(), recipient_id)
}

/// The campaign and recipient a [`reference`] names; `None` for anything else, including
/// spellings [`reference`] never writes (`-01`, `-+1`): a receipt names a recipient only in the
/// one form Herald sent, so two texts never name the same recipient.
pub fn parse_reference(text: &str) -> Option<(Uuid, i64)> {
    let rest = text.strip_prefix("herald-")?;
    let (campaign, recipient) = rest.split_once('-')?;
    if campaign.len() != 32
        || recipient.starts_with('0')
        || !recipient.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let recipient: i64 = recipient.parse().ok().filter(|&id| id > 0)?;
    Some((Uuid::try_parse(campaign).ok()?, recipient))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DispatchMessage {
        DispatchMessage {
            v: FORMAT_VERSION,
            recipient_id: 42,
            seq: 3,
            tenant_id: Uuid::nil(),
            campaign_id: Uuid::from_u128(7),
            provider_id: Uuid::nil(),
            channel: Channel::Sms,
            to: "+15551234567".into(),
            body: "Hi Ada".into(),
            expires_at: None,
            variables: serde_json::Map::new(),
        }
    }

    #[test]
    fn round_trips() {
        let message = sample();
        assert_eq!(DispatchMessage::decode(&message.encode()).unwrap(), message);
    }

    #[test]
    fn expiry_is_optional_on_the_wire() {
        let encoded = String::from_utf8(sample().encode()).unwrap();
        assert!(
            !encoded.contains("expires_at"),
            "absent when unset: {encoded}"
        );
        let expiring = DispatchMessage {
            expires_at: Some(chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap()),
            ..sample()
        };
        assert_eq!(
            DispatchMessage::decode(&expiring.encode()).unwrap(),
            expiring
        );
    }

    #[test]
    fn rejects_garbage_and_unknown_versions() {
        assert!(matches!(
            DispatchMessage::decode(b"not json"),
            Err(DecodeError::Malformed(_))
        ));
        let mut message = sample();
        message.v = 9;
        assert!(matches!(
            DispatchMessage::decode(&message.encode()),
            Err(DecodeError::Version(9))
        ));
    }

    #[test]
    fn batches_round_trip_and_single_messages_still_decode() {
        let messages = vec![
            sample(),
            DispatchMessage {
                recipient_id: 43,
                ..sample()
            },
        ];
        assert_eq!(decode_batch(&encode_batch(&messages)).unwrap(), messages);
        // A message published one per recipient, before batches, is a batch of one.
        assert_eq!(decode_batch(&sample().encode()).unwrap(), vec![sample()]);
        assert_eq!(batch_message_id(&messages), "42:3+1");
    }

    #[test]
    fn batches_reject_unknown_versions_and_emptiness() {
        let encoded = String::from_utf8(encode_batch(&[sample()])).unwrap();
        let newer = encoded.replacen("\"v\":2", "\"v\":3", 1);
        assert!(matches!(
            decode_batch(newer.as_bytes()),
            Err(DecodeError::Version(3))
        ));
        let mut old_item = sample();
        old_item.v = 9;
        assert!(matches!(
            decode_batch(&encode_batch(&[old_item])),
            Err(DecodeError::Version(9))
        ));
        assert!(matches!(
            decode_batch(&encode_batch(&[])),
            Err(DecodeError::Empty)
        ));
        assert!(matches!(
            decode_batch(b"[]"),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn batches_follow_the_workers_allowance() {
        assert_eq!(per_message(1), 1);
        assert_eq!(per_message(15), 1);
        assert_eq!(per_message(40), 5);
        assert_eq!(per_message(100), 12);
        assert_eq!(per_message(160), MAX_PER_MESSAGE);
        assert_eq!(per_message(u32::MAX), MAX_PER_MESSAGE);
    }

    #[test]
    fn references_round_trip_and_nothing_else_parses() {
        let key = sample().idempotency_key();
        assert_eq!(parse_reference(&key), Some((Uuid::from_u128(7), 42)));
        for bad in [
            "",
            "herald-",
            "herald-00000000000000000000000000000007",
            "herald-00000000000000000000000000000007-x",
            "herald-00000000000000000000000000000007--4",
            "herald-00000000000000000000000000000007-+4",
            "herald-00000000000000000000000000000007-04",
            "herald-00000000000000000000000000000007-0",
            "herald-0000000000000000000000000000007-42",
            "sim-00000000000000000000000000000007-42",
        ] {
            assert_eq!(parse_reference(bad), None, "{bad}");
        }
    }

    #[test]
    fn idempotency_key_ignores_the_dispatch_seq() {
        let first = sample();
        let retry = DispatchMessage { seq: 9, ..sample() };
        assert_eq!(first.idempotency_key(), retry.idempotency_key());
        assert_ne!(first.message_id(), retry.message_id());
    }
}
