//! Fuzz targets (proptest) for webhook bodies: Twilio's form posts, Meta's notifications and
//! the generic JSON receipts. Whatever a caller posts (once its signature holds, or a
//! provider's bug) is a receipt, a clear 400, or nothing to store: never a panic.
//! `PROPTEST_CASES` sets how many cases (256 by default; more in `scripts/fuzz.sh`).

use herald_receiver::intake::Refusal;
use herald_receiver::{generic, twilio, whatsapp};
use proptest::prelude::*;
use uuid::Uuid;

/// Fragments of the three bodies, glued at random.
fn body(words: Vec<&'static str>) -> impl Strategy<Value = Vec<u8>> {
    let fragment = prop_oneof![
        3 => prop::sample::select(words).prop_map(|s| s.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..24),
    ];
    prop::collection::vec(fragment, 0..50).prop_map(|parts| parts.concat())
}

fn json_words() -> Vec<&'static str> {
    vec![
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"object\"",
        "\"whatsapp_business_account\"",
        "\"entry\"",
        "\"changes\"",
        "\"value\"",
        "\"field\"",
        "\"messages\"",
        "\"statuses\"",
        "\"id\"",
        "\"wamid.X\"",
        "\"status\"",
        "\"sent\"",
        "\"delivered\"",
        "\"read\"",
        "\"failed\"",
        "\"timestamp\"",
        "\"1700000000\"",
        "\"-1\"",
        "\"99999999999999999999\"",
        "\"biz_opaque_callback_data\"",
        "\"herald-00000000000000000000000000000007-42\"",
        "\"errors\"",
        "\"code\"",
        "131026",
        "\"metadata\"",
        "\"phone_number_id\"",
        "\"1055\"",
        "\"reference\"",
        "\"error_code\"",
        "\"2026-11-30T10:00:00Z\"",
        "null",
        "true",
        "1e999",
        "\"\\u0000\"",
        "é",
        " ",
    ]
}

fn form_words() -> Vec<&'static str> {
    vec![
        "&",
        "=",
        "MessageSid",
        "SmsSid",
        "CallSid",
        "SM123",
        "CA123",
        "MessageStatus",
        "SmsStatus",
        "CallStatus",
        "delivered",
        "undelivered",
        "failed",
        "sent",
        "queued",
        "completed",
        "no-answer",
        "busy",
        "ringing",
        "in-progress",
        "ErrorCode",
        "30003",
        "Timestamp",
        "Mon%2C+30+Nov+2026+10%3A00%3A00+%2B0000",
        "RawDlrDoneDate",
        "2611301000",
        "SequenceNumber",
        "7",
        "%",
        "%zz",
        "%00",
        "+",
        "é",
    ]
}

fn refusal_is_clear(refusal: &Refusal) {
    if let Refusal::BadRequest(reason) = refusal {
        assert!(!reason.is_empty(), "a 400 without a reason");
        assert!(
            reason.chars().count() <= 600,
            "an unbounded reason: {reason}"
        );
    }
}

proptest! {
    #[test]
    fn fuzz_twilio_callbacks(
        body in body(form_words()),
        reference in prop::option::of(any::<String>()),
        seq in prop::option::of(any::<i32>()),
    ) {
        let params = match twilio::form(&body) {
            Ok(params) => params,
            Err(refusal) => {
                prop_assert!(body.len() > twilio::MAX_BODY, "a form within the bound refused");
                refusal_is_clear(&refusal);
                return Ok(());
            }
        };
        match twilio::receipt(Uuid::nil(), &params, reference.as_deref(), seq) {
            Ok(Some(receipt)) => prop_assert!(!receipt.message_id.is_empty()),
            Ok(None) => {}
            Err(refusal) => refusal_is_clear(&refusal),
        }
    }

    #[test]
    fn fuzz_whatsapp_notifications(body in body(json_words())) {
        match whatsapp::statuses(Uuid::nil(), &body) {
            Ok(statuses) => {
                for status in statuses.read {
                    prop_assert!(!status.receipt.message_id.is_empty());
                }
            }
            Err(refusal) => refusal_is_clear(&refusal),
        }
    }

    #[test]
    fn fuzz_generic_receipts(body in body(json_words())) {
        match generic::receipts(Uuid::nil(), &body) {
            Ok(read) => {
                for receipt in read.receipts {
                    prop_assert!(!receipt.message_id.is_empty());
                }
            }
            Err(refusal) => refusal_is_clear(&refusal),
        }
    }

    #[test]
    fn fuzz_any_bytes_as_any_webhook(body in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(params) = twilio::form(&body) {
            let _ = twilio::receipt(Uuid::nil(), &params, None, None);
        }
        let _ = whatsapp::statuses(Uuid::nil(), &body);
        let _ = generic::receipts(Uuid::nil(), &body);
    }
}
