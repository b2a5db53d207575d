//! Fuzz targets (proptest) for what providers answer: each adapter reads any status and any
//! body (a proxy's HTML page, truncated JSON, an error object of the wrong shape) as a
//! result, never a panic; a 2xx is always accepted (the message exists however unreadable
//! its answer), and an error's reason is clipped. Also `Retry-After` and Twilio's lookup
//! lists. `PROPTEST_CASES` sets how many cases (256 by default; more in `scripts/fuzz.sh`).

use chrono::{TimeZone, Utc};
use herald_shared::domain::Channel;
use herald_shared::queue::message::{DispatchMessage, FORMAT_VERSION};
use herald_worker::adapters::{self, Answer, generic, twilio, whatsapp};
use herald_worker::outcome::CallResult;
use proptest::prelude::*;
use uuid::Uuid;

/// Bodies shaped like the providers' answers, then bent: fields dropped or retyped, the
/// text cut short, raw bytes.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let fragment = prop_oneof![
        3 => prop::sample::select(vec![
            "{", "}", "[", "]", ",", ":", "\"sid\"", "\"SM123\"", "\"code\"", "20003", "21211",
            "20429", "\"message\"", "\"error\"", "\"messages\"", "\"id\"", "\"wamid.X\"",
            "\"error_data\"", "\"details\"", "\"error_subcode\"", "2494010", "\"fbtrace_id\"",
            "\"calls\"", "\"date_created\"", "\"Mon, 30 Nov 2026 10:00:00 +0000\"", "\"to\"",
            "\"+15551234567\"", "\"body\"", "null", "true", "-1", "1e999", "\"\u{0}\"",
            "<html>", "é", " ",
        ]).prop_map(|s| s.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..32),
    ];
    prop::collection::vec(fragment, 0..40).prop_map(|parts| parts.concat())
}

fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        prop::sample::select(vec![
            200u16, 201, 202, 204, 400, 401, 403, 404, 408, 409, 425, 429, 500, 502, 503, 504
        ]),
        100u16..600,
    ]
}

fn message() -> DispatchMessage {
    DispatchMessage {
        v: FORMAT_VERSION,
        recipient_id: 7,
        seq: 1,
        tenant_id: Uuid::nil(),
        campaign_id: Uuid::nil(),
        provider_id: Uuid::nil(),
        channel: Channel::Sms,
        to: "+15551234567".into(),
        body: "Hello".into(),
        expires_at: None,
        variables: serde_json::Map::new(),
    }
}

fn check(status: u16, result: &CallResult) {
    match result {
        CallResult::Accepted { .. } => {
            assert!(
                (200..300).contains(&status),
                "{status} accepted: {result:?}"
            )
        }
        CallResult::Throttled { reason, .. }
        | CallResult::RecipientBusy { reason, .. }
        | CallResult::Transient { reason, .. }
        | CallResult::Unavailable { reason, .. }
        | CallResult::Unknown { reason, .. }
        | CallResult::Misconfigured { reason }
        | CallResult::Redirected { reason }
        | CallResult::Permanent { reason }
        | CallResult::OptedOut { reason } => {
            assert!(
                !(200..300).contains(&status),
                "{status} refused: {result:?}"
            );
            assert!(
                reason.chars().count() <= 400,
                "an unclipped reason: {reason}"
            );
        }
    }
}

proptest! {
    #[test]
    fn fuzz_provider_answers(status in status(), body in body(), retry in prop::option::of(0u64..100_000)) {
        let answer = Answer {
            status,
            retry_after: retry.map(std::time::Duration::from_secs),
            body: &body,
        };
        for result in [
            twilio::interpret(&answer),
            whatsapp::interpret(&answer),
            generic::interpret(&answer),
        ] {
            check(status, &result);
        }
    }

    #[test]
    fn fuzz_twilio_lookup_answers(status in status(), body in body()) {
        let answer = Answer { status, retry_after: None, body: &body };
        let now = Utc.with_ymd_and_hms(2026, 11, 30, 10, 0, 0).single().expect("a time");
        let window = (now - chrono::Duration::minutes(5))..=now;
        // A list is read only from a 2xx.
        if twilio::find_in_lookup(&answer, &message(), &window).is_ok() {
            prop_assert!((200..300).contains(&status));
        }
    }

    #[test]
    fn fuzz_retry_after(value in prop_oneof![any::<String>(), "[0-9]{0,25}", "[A-Za-z]{3}, [0-9]{2} [A-Za-z]{3} [0-9]{4} [0-9:]{8} GMT"]) {
        let now = Utc.with_ymd_and_hms(2026, 11, 30, 10, 0, 0).single().expect("a time");
        let _ = adapters::parse_retry_after(&value, now);
    }
}
