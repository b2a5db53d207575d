//! Provider credentials encrypted at rest.
//!
//! With `HERALD_CREDENTIALS_KEY` set (32 random bytes, base64), the admin stores a provider's
//! credentials as `{"sealed": "v1.<key id>.<base64 of nonce and ciphertext>"}`: XChaCha20-
//! Poly1305 with a random 192-bit nonce, the provider's id as associated data (a sealed value
//! copied onto another provider does not open). A database dump or a replica then holds no
//! usable secret. The workers and the receiver open them with the same key.
//!
//! Rotation: set the new key as `HERALD_CREDENTIALS_KEY` and the old one in
//! `HERALD_CREDENTIALS_OLD_KEYS` (values are opened with whichever key sealed them, named by
//! its id), run `herald-admin credentials reseal` to seal every value with the new key, then
//! drop the old one. Values stored before a key was set are plain JSON objects: they are
//! read as they are and sealed by the next reseal.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

const VERSION: &str = "v1";
const FIELD: &str = "sealed";
const NONCE_LEN: usize = 24;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("a credentials key must be 32 bytes in base64 (openssl rand -base64 32)")]
    BadKey,
    #[error(
        "sealed with key {0}, which is neither HERALD_CREDENTIALS_KEY nor one of HERALD_CREDENTIALS_OLD_KEYS"
    )]
    UnknownKey(String),
    #[error("the provider's credentials are sealed but no HERALD_CREDENTIALS_KEY is set")]
    NoKey,
    #[error("the provider's sealed credentials are malformed or were not sealed for it")]
    Corrupt,
}

/// One key: its id (the first 8 hex digits of its SHA-256, never the key) and its cipher.
#[derive(Clone)]
struct SealKey {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl SealKey {
    fn parse(text: &str) -> Result<Self, SealError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| SealError::BadKey)?;
        if bytes.len() != 32 {
            return Err(SealError::BadKey);
        }
        let id = hex::encode(&Sha256::digest(&bytes)[..4]);
        let cipher = XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| SealError::BadKey)?;
        Ok(Self { id, cipher })
    }
}

/// The keys a process seals and opens credentials with.
#[derive(Clone, Default)]
pub struct Keyring {
    /// Seals, and opens what it sealed; `None`: credentials are stored as they are.
    current: Option<SealKey>,
    /// Only open (a rotation in progress).
    old: Vec<SealKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current.as_ref().map(|k| &k.id))
            .field("old", &self.old.iter().map(|k| &k.id).collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    /// From `HERALD_CREDENTIALS_KEY` and `HERALD_CREDENTIALS_OLD_KEYS` (comma-separated).
    pub fn new(
        current: Option<&SecretString>,
        old: Option<&SecretString>,
    ) -> Result<Self, SealError> {
        let current = current
            .map(|k| SealKey::parse(k.expose_secret()))
            .transpose()?;
        let old = old
            .map(|keys| {
                keys.expose_secret()
                    .split(',')
                    .filter(|k| !k.trim().is_empty())
                    .map(SealKey::parse)
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        Ok(Self { current, old })
    }

    /// The id of the key new values are sealed with.
    pub fn current_id(&self) -> Option<&str> {
        self.current.as_ref().map(|k| k.id.as_str())
    }

    /// What to store for `provider`'s `credentials`: sealed with the current key, or as they
    /// are without one. An empty object stays empty (no credentials to hide).
    pub fn seal(&self, provider: Uuid, credentials: &Map<String, Value>) -> Value {
        let Some(key) = &self.current else {
            return Value::Object(credentials.clone());
        };
        if credentials.is_empty() {
            return Value::Object(Map::new());
        }
        let plaintext = Value::Object(credentials.clone()).to_string();
        let nonce: [u8; NONCE_LEN] = rand::random();
        let sealed = key
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: provider.as_bytes(),
                },
            )
            // Encrypting a message shorter than XChaCha20's 256 GiB limit cannot fail.
            .unwrap_or_default();
        let mut blob = nonce.to_vec();
        blob.extend(sealed);
        let mut stored = Map::new();
        stored.insert(
            FIELD.into(),
            Value::String(format!("{VERSION}.{}.{}", key.id, STANDARD.encode(blob))),
        );
        Value::Object(stored)
    }

    /// The credentials `stored` for `provider` holds: opened if sealed, as they are if not.
    pub fn open(&self, provider: Uuid, stored: &Value) -> Result<Value, SealError> {
        let Some(sealed) = sealed_text(stored) else {
            return Ok(stored.clone());
        };
        let mut parts = sealed.splitn(3, '.');
        let (Some(VERSION), Some(id), Some(data)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(SealError::Corrupt);
        };
        let key = self
            .current
            .iter()
            .chain(&self.old)
            .find(|k| k.id == id)
            .ok_or_else(|| {
                if self.current.is_none() && self.old.is_empty() {
                    SealError::NoKey
                } else {
                    SealError::UnknownKey(id.to_owned())
                }
            })?;
        let blob = STANDARD.decode(data).map_err(|_| SealError::Corrupt)?;
        if blob.len() < NONCE_LEN {
            return Err(SealError::Corrupt);
        }
        let (nonce, ciphertext) = blob.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Corrupt)?;
        let plaintext = key
            .cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: provider.as_bytes(),
                },
            )
            .map_err(|_| SealError::Corrupt)?;
        serde_json::from_slice(&plaintext).map_err(|_| SealError::Corrupt)
    }

    /// Whether `stored` is as the current key would store it (sealed with it, or, without a
    /// key, plain): what `herald-admin credentials reseal` leaves alone.
    pub fn is_current(&self, stored: &Value) -> bool {
        match (sealed_text(stored), &self.current) {
            (Some(text), Some(key)) => text
                .strip_prefix(VERSION)
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|rest| rest.starts_with(&format!("{}.", key.id))),
            (None, Some(_)) => stored.as_object().is_some_and(Map::is_empty),
            (None, None) => true,
            (Some(_), None) => false,
        }
    }
}

/// The sealed text, if `stored` is a sealed value.
fn sealed_text(stored: &Value) -> Option<&str> {
    let object = stored.as_object()?;
    if object.len() != 1 {
        return None;
    }
    object.get(FIELD)?.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(byte: u8) -> SecretString {
        SecretString::from(STANDARD.encode([byte; 32]))
    }

    fn creds() -> Map<String, Value> {
        json!({"account_sid": "AC1", "auth_token": "s3cr3t-t0k3n"})
            .as_object()
            .cloned()
            .unwrap()
    }

    #[test]
    fn sealed_credentials_open_only_for_their_provider_and_hide_the_secret() {
        let ring = Keyring::new(Some(&key(1)), None).unwrap();
        let provider = Uuid::from_u128(7);
        let stored = ring.seal(provider, &creds());
        let text = stored.to_string();
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.starts_with(r#"{"sealed":"v1."#), "{text}");
        assert_eq!(
            ring.open(provider, &stored).unwrap(),
            Value::Object(creds())
        );
        // Another provider's id is other associated data: the copy does not open.
        assert_eq!(
            ring.open(Uuid::from_u128(8), &stored),
            Err(SealError::Corrupt)
        );
        // Two seals of the same value differ (random nonces).
        assert_ne!(ring.seal(provider, &creds()), stored);
        assert!(ring.is_current(&stored));
    }

    #[test]
    fn rotation_opens_old_values_and_reseals_with_the_new_key() {
        let provider = Uuid::from_u128(7);
        let old = Keyring::new(Some(&key(1)), None).unwrap();
        let stored = old.seal(provider, &creds());
        let rotating = Keyring::new(Some(&key(2)), Some(&key(1))).unwrap();
        assert!(!rotating.is_current(&stored));
        let opened = rotating.open(provider, &stored).unwrap();
        let resealed = rotating.seal(provider, opened.as_object().unwrap());
        assert!(rotating.is_current(&resealed));
        let new_only = Keyring::new(Some(&key(2)), None).unwrap();
        assert_eq!(
            new_only.open(provider, &resealed).unwrap(),
            Value::Object(creds())
        );
        assert!(matches!(
            new_only.open(provider, &stored),
            Err(SealError::UnknownKey(_))
        ));
        assert_eq!(
            Keyring::default().open(provider, &stored),
            Err(SealError::NoKey)
        );
    }

    #[test]
    fn plain_values_pass_through_and_bad_keys_are_refused() {
        let provider = Uuid::from_u128(7);
        let ring = Keyring::new(Some(&key(1)), None).unwrap();
        let plain = Value::Object(creds());
        assert_eq!(ring.open(provider, &plain).unwrap(), plain);
        assert!(!ring.is_current(&plain), "a plain value is resealed");
        assert!(ring.is_current(&json!({})));
        assert_eq!(Keyring::default().seal(provider, &creds()), plain);
        for bad in ["", "c2hvcnQ=", "not base64!"] {
            assert_eq!(
                Keyring::new(Some(&SecretString::from(bad)), None).unwrap_err(),
                SealError::BadKey
            );
        }
        let tampered = json!({"sealed": "v1.deadbeef.AAAA"});
        assert!(ring.open(provider, &tampered).is_err());
        assert_eq!(
            ring.open(provider, &json!({"sealed": "v2.x.y"})),
            Err(SealError::Corrupt)
        );
    }
}
