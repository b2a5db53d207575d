//! Webhook signatures: how providers sign the receipts they post, and how Herald checks them.
//!
//! - Twilio (`X-Twilio-Signature`): base64 of HMAC-SHA1, keyed with the account's auth token,
//!   over the full URL Twilio requested followed by every POST parameter, names sorted, each
//!   name immediately followed by its value (a repeated name: each distinct value, sorted).
//! - Meta (`X-Hub-Signature-256`) and Herald's generic receipts (`X-Herald-Signature`):
//!   `sha256=` and the lower-case hex HMAC-SHA256 of the raw body, keyed with the app secret
//!   (or the provider's webhook secret).
//!
//! - Herald's status events posted to a tenant's webhook (`Herald-Signature`):
//!   `t=<unix seconds>,v1=<lower-case hex HMAC-SHA256 of "<t>.<raw body>">`, keyed with the
//!   webhook's secret; the time signed lets the tenant refuse an old event replayed.
//!
//! Comparisons are constant-time. The provider simulator signs with the same functions; the
//! tests check them against Twilio's and Meta's published examples.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::Sha256;
use std::collections::BTreeMap;
use std::collections::BTreeSet;

/// The header Herald's generic receipts carry.
pub const HERALD_SIGNATURE_HEADER: &str = "x-herald-signature";

/// Twilio's signature of a form post to `url` with `params`.
pub fn twilio(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(url.as_bytes());
    let mut sorted: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, value) in params {
        sorted.entry(name).or_default().insert(value);
    }
    for (name, values) in sorted {
        for value in values {
            mac.update(name.as_bytes());
            mac.update(value.as_bytes());
        }
    }
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether `signature` is Twilio's for this request. Like Twilio's own libraries, the URL is
/// tried as given, without its port and with the scheme's default port added, since proxies
/// between Twilio and the receiver may add or drop a default port.
pub fn verify_twilio(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    signature: &str,
) -> bool {
    let Ok(given) = STANDARD.decode(signature.trim()) else {
        return false;
    };
    url_variants(url).iter().any(|candidate| {
        let expected = STANDARD
            .decode(twilio(auth_token, candidate, params))
            .unwrap_or_default();
        constant_time_eq(&expected, &given)
    })
}

fn url_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_owned()];
    let Ok(parsed) = url::Url::parse(url) else {
        return variants;
    };
    let mut without_port = parsed.clone();
    if without_port.set_port(None).is_ok() {
        variants.push(without_port.as_str().to_owned());
    }
    // `Url` drops a default port it was given; put it back explicitly.
    if parsed.port().is_none()
        && let (Some(host), Some(port)) = (parsed.host_str(), parsed.port_or_known_default())
    {
        let rest = &parsed.as_str()[parsed[..url::Position::BeforePath].len()..];
        variants.push(format!("{}://{host}:{port}{rest}", parsed.scheme()));
    }
    variants
}

/// `sha256=<hex>`: Meta's `X-Hub-Signature-256` of `body` (and Herald's generic one).
pub fn hub(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `header` (`sha256=<hex>`) signs `body` with `secret`.
pub fn verify_hub(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(given) = header
        .trim()
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
    else {
        return false;
    };
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// The header Herald's status events carry.
pub const EVENT_SIGNATURE_HEADER: &str = "herald-signature";

/// Herald's signature of a status event's `body` posted at `timestamp` (unix seconds), with
/// each of `secrets` (the webhook's, and the one it replaced while that still signs).
pub fn event(secrets: &[&str], timestamp: i64, body: &[u8]) -> String {
    let mut header = format!("t={timestamp}");
    for secret in secrets {
        header.push_str(",v1=");
        header.push_str(&hex::encode(event_mac(secret, timestamp, body)));
    }
    header
}

fn event_mac(secret: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// Whether `header` signs `body` with `secret` at a time within `tolerance_s` of `now` (unix
/// seconds): what a tenant's endpoint checks (any one `v1` matching is enough: during a
/// change of secret each post carries one of each).
pub fn verify_event(secret: &str, body: &[u8], header: &str, now: i64, tolerance_s: u64) -> bool {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v)) => signatures.extend(hex::decode(v).ok()),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return false;
    };
    if now.abs_diff(timestamp) > tolerance_s {
        return false;
    }
    let expected = event_mac(secret, timestamp, body);
    signatures
        .iter()
        .any(|given| constant_time_eq(&expected, given))
}

/// Whether two secrets are equal, in time that does not depend on where they differ (for a
/// token a provider echoes, like Meta's verify token).
pub fn same_secret(a: &str, b: &str) -> bool {
    constant_time_eq(a.as_bytes(), b.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_event_verifies_with_its_secret_and_time_only() {
        let body = br#"{"id":1}"#;
        // A known answer (Python: hmac.new(b"whsec_test", b'1700000000.{"id":1}', sha256)).
        assert_eq!(
            event(&["whsec_test"], 1_700_000_000, body),
            "t=1700000000,v1=2f441ba4b3b2d50d28a9ab9d9fd8880376ecd1eb5d0435401553f5d8d0a5dcf8"
        );
        let header = event(&["whsec_a"], 1_700_000_000, body);
        assert!(verify_event("whsec_a", body, &header, 1_700_000_100, 300));
        // Another secret, another body, too old, no time: refused.
        assert!(!verify_event("whsec_b", body, &header, 1_700_000_100, 300));
        assert!(!verify_event("whsec_a", b"{}", &header, 1_700_000_100, 300));
        assert!(!verify_event("whsec_a", body, &header, 1_700_000_400, 300));
        let unsigned_time = header.replacen("t=1700000000,", "", 1);
        assert!(!verify_event(
            "whsec_a",
            body,
            &unsigned_time,
            1_700_000_000,
            300
        ));
        // The time is signed: moving it forward breaks the signature.
        let moved = header.replacen("t=1700000000", "t=1700000099", 1);
        assert!(!verify_event("whsec_a", body, &moved, 1_700_000_100, 300));
        // No overflow on a time at the ends of the range.
        let extreme = format!("t={},v1=00", i64::MIN);
        assert!(!verify_event("whsec_a", body, &extreme, i64::MAX, 300));
        // During a change of secret each post is signed with both: either verifies.
        let both = event(&["whsec_new", "whsec_old"], 1_700_000_000, body);
        assert!(verify_event("whsec_new", body, &both, 1_700_000_000, 300));
        assert!(verify_event("whsec_old", body, &both, 1_700_000_000, 300));
        assert!(!verify_event("whsec_b", body, &both, 1_700_000_000, 300));
    }

    /// Twilio's published example (twilio-python's request validator tests).
    const TOKEN: &str = "12345";
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn call() -> Vec<(String, String)> {
        params(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ])
    }

    #[test]
    fn twilio_documented_examples() {
        assert_eq!(twilio(TOKEN, URL, &call()), "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
        assert_eq!(
            twilio(
                TOKEN,
                "https://mycompany.com:443/myapp.php?foo=1&bar=2",
                &call()
            ),
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        );
        let repeated = params(&[
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ]);
        assert_eq!(
            twilio(TOKEN, URL, &repeated),
            "IK+Dwps556ElfBT0I3Rgjkr1wJU="
        );
    }

    #[test]
    fn twilio_verification_accepts_the_example_and_port_variants() {
        assert!(verify_twilio(
            TOKEN,
            URL,
            &call(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        // Signed with :443 added, received without it, and the other way round.
        assert!(verify_twilio(
            TOKEN,
            URL,
            &call(),
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        ));
        assert!(verify_twilio(
            TOKEN,
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            &call(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        assert!(verify_twilio(
            TOKEN,
            "http://mycompany.com/myapp.php?foo=1&bar=2",
            &call(),
            "0ZXoZLH/DfblKGATFgpif+LLRf4="
        ));
    }

    #[test]
    fn twilio_verification_refuses_tampering() {
        let good = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
        // A wrong key, a changed URL, a changed or added parameter, garbage.
        assert!(!verify_twilio("54321", URL, &call(), good));
        assert!(!verify_twilio(
            TOKEN,
            "https://mycompany.com/myapp.php?foo=2&bar=2",
            &call(),
            good
        ));
        let mut tampered = call();
        tampered[2].1 = "9999".into();
        assert!(!verify_twilio(TOKEN, URL, &tampered, good));
        let mut added = call();
        added.push(("MessageStatus".into(), "delivered".into()));
        assert!(!verify_twilio(TOKEN, URL, &added, good));
        assert!(!verify_twilio(TOKEN, URL, &call(), ""));
        assert!(!verify_twilio(TOKEN, URL, &call(), "not base64!"));
    }

    #[test]
    fn hub_signatures_match_the_published_check_value() {
        assert_eq!(
            hub("secret", b"test"),
            "sha256=0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c0914"
        );
        let header = hub("app-secret", br#"{"object":"whatsapp_business_account"}"#);
        assert!(verify_hub(
            "app-secret",
            br#"{"object":"whatsapp_business_account"}"#,
            &header
        ));
        assert!(!verify_hub(
            "app-secret",
            br#"{"object":"whatsapp_business_account" }"#,
            &header
        ));
        assert!(!verify_hub(
            "other",
            br#"{"object":"whatsapp_business_account"}"#,
            &header
        ));
        assert!(!verify_hub("app-secret", b"{}", "sha1=abc"));
        assert!(!verify_hub("app-secret", b"{}", "sha256=zz"));
    }
}
