//! Idempotency keys: a client that lost an answer (a timeout, a dropped connection) sends
//! its create again with the same key, and gets the object the first request made instead
//! of a second one. Messages hold their keys in `messages`, campaigns in
//! `campaign_idempotency`; the rules for a key are the same for both.

use crate::error::ApiError;
use axum::http::HeaderMap;
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Longest idempotency key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// The header a single create's key comes in.
pub const HEADER: &str = "idempotency-key";

/// Marks an answer that replays an earlier request's object.
pub const REPLAYED: &str = "idempotent-replayed";

/// An idempotency key as the API takes it, from a body or the header: 1 to
/// [`MAX_KEY_LEN`] printable ASCII characters.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
}

/// What a valid key is, as a refusal says it ([`MAX_KEY_LEN`]).
pub const KEY_RULE: &str = "must be 1 to 255 printable ASCII characters";

/// The request's `Idempotency-Key`, if it has one; refused, naming the header, if it is not
/// a valid key.
pub fn from_header(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    headers
        .get(HEADER)
        .map(|header| {
            header
                .to_str()
                .ok()
                .filter(|key| valid_key(key))
                .map(str::to_owned)
                .ok_or_else(|| ApiError::field("Idempotency-Key", KEY_RULE))
        })
        .transpose()
}

/// What makes two creates of `tenant`'s the same request: its body as read (defaults
/// filled in), whoever named the tenant (an operator's `tenant_id`, or a tenant's own key).
/// Fields left out (`null`) are not part of it, so that a field added to the body later
/// does not make a retry across the upgrade another request. (serde_json's maps are
/// sorted by key: the same body always serializes alike.)
pub fn request_hash(tenant: Uuid, body: &impl Serialize) -> Vec<u8> {
    let Ok(serde_json::Value::Object(mut fields)) = serde_json::to_value(body) else {
        // Plain data always serializes; were it ever not to, the request matches no other.
        return Uuid::new_v4().as_bytes().to_vec();
    };
    fields.retain(|_, value| !value.is_null());
    fields.insert("tenant_id".into(), serde_json::json!(tenant));
    Sha256::digest(serde_json::Value::Object(fields).to_string()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_key_is_printable_ascii_of_bounded_length() {
        assert!(KEY_RULE.contains(&MAX_KEY_LEN.to_string()));
        assert!(valid_key("order-42 retry"));
        assert!(!valid_key(""));
        assert!(!valid_key(&"k".repeat(MAX_KEY_LEN + 1)));
        assert!(valid_key(&"k".repeat(MAX_KEY_LEN)));
        assert!(!valid_key("tab\there"));
        assert!(!valid_key("clé"));
    }

    #[test]
    fn the_same_request_hashes_alike_whoever_names_the_tenant() {
        let tenant = Uuid::from_u128(7);
        let named = json!({"tenant_id": tenant, "name": "spring"});
        let unnamed = json!({"tenant_id": null, "name": "spring"});
        assert_eq!(request_hash(tenant, &named), request_hash(tenant, &unnamed));
        // A field the body did not have before, left out.
        assert_eq!(
            request_hash(tenant, &json!({"name": "spring", "added_later": null})),
            request_hash(tenant, &unnamed)
        );
        assert_ne!(
            request_hash(tenant, &named),
            request_hash(tenant, &json!({"tenant_id": tenant, "name": "autumn"}))
        );
        assert_ne!(
            request_hash(tenant, &unnamed),
            request_hash(Uuid::from_u128(8), &unnamed)
        );
    }

    #[test]
    fn a_header_key_is_read_or_refused_by_name() {
        let mut headers = HeaderMap::new();
        assert_eq!(from_header(&headers).ok(), Some(None));
        headers.insert(HEADER, "k1".parse().unwrap());
        assert_eq!(from_header(&headers).ok(), Some(Some("k1".to_owned())));
        headers.insert(HEADER, "".parse().unwrap());
        assert!(from_header(&headers).is_err());
    }
}
