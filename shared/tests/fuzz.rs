//! Fuzz targets (proptest) for what the shared library reads from outside: dispatch
//! messages off the queue (anything can be published into a lane), receipt references
//! echoed by providers, and webhook signatures. Whatever comes in ends in a value or an
//! error, never a panic. `PROPTEST_CASES` sets how many cases (256 by default; more in
//! `scripts/fuzz.sh`).

use herald_shared::domain::Channel;
use herald_shared::queue::message::{self, DispatchMessage, FORMAT_VERSION, decode_batch};
use herald_shared::signature;
use proptest::prelude::*;
use uuid::Uuid;

fn message() -> impl Strategy<Value = DispatchMessage> {
    (
        any::<i64>(),
        any::<i32>(),
        any::<u128>(),
        any::<String>(),
        any::<String>(),
        prop::option::of(-8_000_000_000_i64..8_000_000_000),
    )
        .prop_map(
            |(recipient_id, seq, id, to, body, expires)| DispatchMessage {
                v: FORMAT_VERSION,
                recipient_id,
                seq,
                tenant_id: Uuid::from_u128(id),
                campaign_id: Uuid::from_u128(id.rotate_left(7)),
                provider_id: Uuid::from_u128(id.rotate_left(13)),
                channel: Channel::Sms,
                to,
                body,
                expires_at: expires.and_then(|s| chrono::DateTime::from_timestamp(s, 0)),
                variables: serde_json::Map::new(),
            },
        )
}

/// JSON that is almost a message: a real one with a field dropped, changed or retyped.
fn near_message() -> impl Strategy<Value = Vec<u8>> {
    (message(), 0usize..10, any::<i64>(), any::<String>()).prop_map(|(m, field, n, text)| {
        let mut value = serde_json::to_value(&m).expect("a message serialises");
        let object = value.as_object_mut().expect("an object");
        let keys: Vec<String> = object.keys().cloned().collect();
        let key = &keys[field % keys.len()];
        match n.rem_euclid(4) {
            0 => {
                object.remove(key);
            }
            1 => {
                object.insert(key.clone(), serde_json::json!(n));
            }
            2 => {
                object.insert(key.clone(), serde_json::json!(text));
            }
            _ => {
                object.insert(key.clone(), serde_json::Value::Null);
            }
        }
        serde_json::to_vec(&value).expect("JSON serialises")
    })
}

proptest! {
    #[test]
    fn fuzz_dispatch_message_decoding(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = DispatchMessage::decode(&bytes);
        let _ = decode_batch(&bytes);
    }

    #[test]
    fn fuzz_nearly_valid_batches(items in prop::collection::vec(near_message(), 0..4)) {
        let items: Vec<serde_json::Value> = items
            .iter()
            .map(|bytes| serde_json::from_slice(bytes).expect("near_message writes JSON"))
            .collect();
        let bytes = serde_json::to_vec(&serde_json::json!({"v": 2, "messages": items}))
            .expect("JSON serialises");
        if let Ok(decoded) = decode_batch(&bytes) {
            prop_assert!(!decoded.is_empty());
            prop_assert!(decoded.iter().all(|m| m.v == FORMAT_VERSION));
        }
    }

    #[test]
    fn fuzz_nearly_valid_dispatch_messages(bytes in near_message()) {
        if let Ok(decoded) = DispatchMessage::decode(&bytes) {
            prop_assert_eq!(decoded.v, FORMAT_VERSION);
        }
        if let Ok(decoded) = decode_batch(&bytes) {
            prop_assert!(decoded.iter().all(|m| m.v == FORMAT_VERSION));
        }
    }

    #[test]
    fn dispatch_messages_round_trip(m in message()) {
        prop_assert_eq!(DispatchMessage::decode(&m.encode()).ok(), Some(m));
    }

    #[test]
    fn fuzz_receipt_references(text in prop_oneof![
        any::<String>(),
        "herald-[0-9a-f]{0,40}-[-0-9]{0,25}",
    ]) {
        if let Some((campaign, recipient)) = message::parse_reference(&text) {
            prop_assert!(recipient > 0);
            prop_assert_eq!(message::reference(campaign, recipient), text.to_lowercase());
        }
    }

    #[test]
    fn fuzz_signature_headers(
        secret in "[!-~]{1,40}",
        body in prop::collection::vec(any::<u8>(), 0..256),
        header in any::<String>(),
    ) {
        // Only the right signature is accepted (its hex in either case, spaces around it).
        let right = signature::hub(&secret, &body);
        if signature::verify_hub(&secret, &body, &header) {
            let given = header.trim();
            prop_assert!(given.starts_with("sha256="), "{}", header);
            prop_assert_eq!(given.to_ascii_lowercase(), right.clone());
        }
        prop_assert!(signature::verify_hub(&secret, &body, &right));
    }
}
