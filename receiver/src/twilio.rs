//! Twilio's status callbacks: form posts for messages (`MessageSid`, `MessageStatus`,
//! `ErrorCode`, …) and calls (`CallSid`, `CallStatus`, `Timestamp`, `SequenceNumber`, …),
//! signed with `X-Twilio-Signature`. The callback URL Herald gave with each request carries
//! the recipient's reference (`?ref=herald-{campaign}-{recipient}&seq=…`), and Twilio signs
//! the URL with its query, so the reference is as trustworthy as the status.

use crate::intake::{Refusal, clip, text};
use chrono::{DateTime, NaiveDateTime, Utc};
use herald_shared::delivery::DeliveryStatus;
use herald_shared::queue::message::parse_reference;
use herald_store::receipts::Receipt;
use uuid::Uuid;

/// The largest status callback taken (read, and parsed): Twilio's are a few kilobytes (some
/// thirty fields). The form is parsed, and checked against every URL its signature may
/// cover, before anyone is known to have sent it: a body of 4 MiB of `a&a&…` made two
/// million fields, a few hundred megabytes a request.
pub const MAX_BODY: usize = 64 * 1024;

/// The form's fields, in order (repeated names kept: they are all signed), if it is no
/// larger than [`MAX_BODY`].
pub fn form(body: &[u8]) -> Result<Vec<(String, String)>, Refusal> {
    if body.len() > MAX_BODY {
        return Err(Refusal::TooLarge(
            "a Twilio status callback is a few kilobytes",
        ));
    }
    Ok(form_urlencoded::parse(body).into_owned().collect())
}

/// The receipt a callback carries; `Ok(None)` for a status Herald does not track (an
/// inbound message's `received`, say), which is acknowledged and dropped.
pub fn receipt(
    provider_id: Uuid,
    params: &[(String, String)],
    reference: Option<&str>,
    seq: Option<i32>,
) -> Result<Option<Receipt>, Refusal> {
    let get = |name: &str| field(params, name);
    let missing = |field: &str| Refusal::BadRequest(format!("{field} is required"));
    let (message_id, raw_status, status, provider_time) = if let Some(raw) = get("CallStatus") {
        let sid = get("CallSid").ok_or_else(|| missing("CallSid"))?;
        let time = get("Timestamp")
            .and_then(|t| DateTime::parse_from_rfc2822(t).ok())
            .map(|t| t.with_timezone(&Utc));
        (sid, raw, DeliveryStatus::from_twilio_call(raw), time)
    } else {
        let raw = get("MessageStatus")
            .or_else(|| get("SmsStatus"))
            .ok_or_else(|| missing("MessageStatus"))?;
        let sid = get("MessageSid")
            .or_else(|| get("SmsSid"))
            .ok_or_else(|| missing("MessageSid"))?;
        let time = get("RawDlrDoneDate").and_then(dlr_done_date);
        (sid, raw, DeliveryStatus::from_twilio_message(raw), time)
    };
    let Some(status) = status else {
        return Ok(None);
    };
    // Named as the callback named them: a call's or a message's.
    let (sid_field, status_field) = if get("CallStatus").is_some() {
        ("CallSid", "CallStatus")
    } else {
        ("MessageSid", "MessageStatus")
    };
    Ok(Some(Receipt {
        provider_id,
        message_id: text(sid_field, message_id.trim(), 64)?,
        reference: reference.and_then(parse_reference),
        seq,
        status,
        raw_status: text(status_field, raw_status, 64)?,
        error_code: get("ErrorCode").map(|c| clip(c, 32)),
        error_message: get("ErrorMessage")
            .or_else(|| get("ChannelStatusMessage"))
            .map(|m| clip(m, 500)),
        provider_time,
    }))
}

/// The first field called `name`, spaces around it trimmed, if it is not empty.
fn field<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// What an inbound message says of its sender's consent to SMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consent {
    /// Replied STOP (or another opt-out keyword): Twilio refuses it from now on.
    OptedOut { address: String, keyword: String },
    /// Replied START (or another opt-in keyword): Twilio sends to it again.
    OptedIn { address: String },
}

/// Twilio's default opt-out and opt-in keywords, honoured on every long code and toll-free
/// number: a message that is one of them alone (case and surrounding spaces aside).
const OPT_OUT_KEYWORDS: &[&str] = &[
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "REVOKE",
    "OPTOUT",
];
const OPT_IN_KEYWORDS: &[&str] = &["START", "YES", "UNSTOP"];

/// The consent an inbound SMS (a number's "a message comes in" webhook pointed at the
/// receiver) changes, if any. `OptOutType` is Twilio's own word where Advanced Opt-Out
/// runs (its keywords may be the sender's own, in any language); otherwise the body is
/// read as Twilio's default keywords are. A WhatsApp message (`From: whatsapp:+…`) says
/// nothing of SMS.
pub fn consent(params: &[(String, String)]) -> Option<Consent> {
    let get = |name: &str| field(params, name);
    let status = get("SmsStatus").or_else(|| get("MessageStatus"))?;
    let from = get("From")?;
    // E.164, as recipients are stored: a short code or a WhatsApp sender is no SMS recipient.
    let e164 = from
        .strip_prefix('+')
        .is_some_and(|d| (2..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()));
    if status != "received" || !e164 {
        return None;
    }
    let address = from.to_owned();
    let named = get("OptOutType").map(str::to_ascii_uppercase);
    // "Stop." and "stop!" are a STOP as people type it.
    let body = get("Body").map(|b| b.trim_end_matches(['.', '!']).trim().to_ascii_uppercase());
    let opted_out = |word: &Option<String>| {
        word.as_deref()
            .filter(|w| OPT_OUT_KEYWORDS.contains(w))
            .map(str::to_owned)
    };
    // An opt-out is read from the body too (listing one too many is the safe side); an
    // opt-in, through a Messaging Service, only as Twilio names it: the service's opt-in
    // keywords are its own (one that dropped YES, which "reply YES to confirm" asks for,
    // still refuses the number after a YES).
    if let Some(keyword) = opted_out(&named).or_else(|| opted_out(&body)) {
        return Some(Consent::OptedOut {
            address,
            keyword: clip(&keyword, 32),
        });
    }
    let opt_in = |word: &Option<String>| {
        word.as_deref()
            .is_some_and(|w| OPT_IN_KEYWORDS.contains(&w))
    };
    let service = get("MessagingServiceSid").is_some();
    if opt_in(&named) || (named.is_none() && !service && opt_in(&body)) {
        Some(Consent::OptedIn { address })
    } else {
        None
    }
}

/// The carrier's DLR done date, `YYMMDDhhmm` (UTC).
fn dlr_done_date(text: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(&format!("{text}00"), "%y%m%d%H%M%S")
        .ok()
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    const REF: &str = "herald-00000000000000000000000000000007-42";

    #[test]
    fn an_inbound_stop_or_start_changes_consent_and_nothing_else_does() {
        let inbound = |body: &str, opt_out_type: Option<&str>| {
            let mut p = params(&[
                ("MessageSid", "SM9"),
                ("SmsStatus", "received"),
                ("From", "+15551230001"),
                ("To", "+15005550006"),
                ("Body", body),
            ]);
            if let Some(kind) = opt_out_type {
                p.push(("OptOutType".into(), kind.into()));
            }
            consent(&p)
        };
        let stopped = Some(Consent::OptedOut {
            address: "+15551230001".into(),
            keyword: "STOP".into(),
        });
        assert_eq!(inbound(" stop ", None), stopped);
        // A sender's own keyword, which Advanced Opt-Out names for what it is.
        assert_eq!(inbound("ARRET", Some("STOP")), stopped);
        assert_eq!(
            inbound("Unstop", None),
            Some(Consent::OptedIn {
                address: "+15551230001".into()
            })
        );
        assert_eq!(inbound("Stop.", None), stopped);
        assert_eq!(inbound("please stop texting me", None), None);
        // Through a Messaging Service, an opt-in is Twilio's to name.
        let through_service = |body: &str, opt_out_type: Option<&str>| {
            let mut p = params(&[
                ("SmsStatus", "received"),
                ("From", "+15551230001"),
                ("MessagingServiceSid", "MG1"),
                ("Body", body),
            ]);
            if let Some(kind) = opt_out_type {
                p.push(("OptOutType".into(), kind.into()));
            }
            consent(&p)
        };
        assert_eq!(through_service("YES", None), None);
        assert_eq!(
            through_service("YES", Some("START")),
            Some(Consent::OptedIn {
                address: "+15551230001".into()
            })
        );
        assert_eq!(through_service("stop", None), stopped);
        assert_eq!(inbound("HELP", Some("HELP")), None);
        // A status callback, or a WhatsApp message, is no consent.
        let status = params(&[
            ("MessageSid", "SM9"),
            ("MessageStatus", "delivered"),
            ("From", "+15005550006"),
            ("Body", "STOP"),
        ]);
        assert_eq!(consent(&status), None);
        let whatsapp = params(&[
            ("SmsStatus", "received"),
            ("From", "whatsapp:+15551230001"),
            ("Body", "STOP"),
        ]);
        assert_eq!(consent(&whatsapp), None);
    }

    #[test]
    fn a_message_callback() {
        let p = params(&[
            ("MessageSid", "SM123"),
            ("SmsSid", "SM123"),
            ("MessageStatus", "undelivered"),
            ("SmsStatus", "undelivered"),
            ("ErrorCode", "30003"),
            ("RawDlrDoneDate", "2607301212"),
            ("AccountSid", "AC1"),
        ]);
        let receipt = receipt(Uuid::nil(), &p, Some(REF), Some(3))
            .unwrap()
            .unwrap();
        assert_eq!(receipt.message_id, "SM123");
        assert_eq!(receipt.status, DeliveryStatus::Undelivered);
        assert_eq!(receipt.reference, Some((Uuid::from_u128(7), 42)));
        assert_eq!(receipt.error_code.as_deref(), Some("30003"));
        assert_eq!(
            receipt.provider_time.unwrap().to_rfc3339(),
            "2026-07-30T12:12:00+00:00"
        );
    }

    #[test]
    fn a_bad_field_is_named_as_the_callback_named_it() {
        let call = params(&[("CallSid", "CA\u{1}"), ("CallStatus", "completed")]);
        let Err(Refusal::BadRequest(why)) = receipt(Uuid::nil(), &call, None, None) else {
            panic!("refused expected")
        };
        assert!(why.starts_with("CallSid"), "{why}");
        let message = params(&[("MessageSid", "SM\u{1}"), ("MessageStatus", "sent")]);
        let Err(Refusal::BadRequest(why)) = receipt(Uuid::nil(), &message, None, None) else {
            panic!("refused expected")
        };
        assert!(why.starts_with("MessageSid"), "{why}");
    }

    #[test]
    fn a_call_callback() {
        let p = params(&[
            ("CallSid", "CA9"),
            ("CallStatus", "no-answer"),
            ("Timestamp", "Thu, 30 Jul 2015 20:12:31 +0000"),
            ("SequenceNumber", "3"),
        ]);
        let receipt = receipt(Uuid::nil(), &p, None, None).unwrap().unwrap();
        assert_eq!(receipt.status, DeliveryStatus::NoAnswer);
        assert_eq!(receipt.reference, None);
        assert!(receipt.provider_time.is_some());
    }

    #[test]
    fn malformed_and_untracked_callbacks() {
        assert!(matches!(
            receipt(
                Uuid::nil(),
                &params(&[("MessageStatus", "sent")]),
                None,
                None
            ),
            Err(Refusal::BadRequest(_))
        ));
        assert!(matches!(
            receipt(Uuid::nil(), &params(&[("MessageSid", "SM1")]), None, None),
            Err(Refusal::BadRequest(_))
        ));
        assert_eq!(
            receipt(
                Uuid::nil(),
                &params(&[("MessageSid", "SM1"), ("MessageStatus", "received")]),
                None,
                None
            ),
            Ok(None)
        );
        // A reference that is not Herald's names nobody.
        let p = params(&[("MessageSid", "SM1"), ("MessageStatus", "sent")]);
        assert_eq!(
            receipt(Uuid::nil(), &p, Some("elsewhere-1"), None)
                .unwrap()
                .unwrap()
                .reference,
            None
        );
    }
}
