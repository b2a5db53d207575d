//! Twilio's REST API (2010-04-01): Programmable Messaging and Voice.
//!
//! `POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json` (or `Calls.json`), body
//! `application/x-www-form-urlencoded`, HTTP Basic auth `AccountSid:AuthToken`; the `.json`
//! suffix selects JSON answers. Success is 201 with the resource (`sid` is the id); errors
//! are `{"code", "message", "more_info", "status"}`.

use super::{Answer, Candidate, ErrorClass, Header, HttpRequest, callback_with_reference, clip};
use crate::outcome::CallResult;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use herald_shared::domain::Channel;
use herald_shared::provider_config::{TwilioAccount, TwilioSmsConfig, TwilioVoiceConfig};
use herald_shared::queue::message::DispatchMessage;
use serde::Deserialize;
use std::ops::RangeInclusive;

/// Twilio ignores `Twiml` longer than this (4,000 characters).
pub const TWIML_LIMIT: usize = 4_000;

/// The longest `ValidityPeriod` Twilio takes (and its default): 10 hours, in seconds.
pub const MAX_VALIDITY_S: i64 = 36_000;

/// `ValidityPeriod` for a message that expires at `expires_at`, sent at `now`: Twilio
/// accepts a message at once and sends it when the sender's queue gets to it (a long code
/// sends one a second), so a campaign's expiry checked at Herald's request alone would let
/// a long queue send it hours late. Twilio drops what is still queued past this (reported
/// `failed`, 30001). At least a second (Twilio's least), at most its 10 hours.
pub fn validity_period(expires_at: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    (expires_at - now).num_seconds().clamp(1, MAX_VALIDITY_S)
}

/// `POST …/Messages.json`: To, From and/or MessagingServiceSid, Body, StatusCallback, and
/// `ValidityPeriod` when the message expires ([`validity_period`]).
pub fn build_message(
    config: &TwilioSmsConfig,
    message: &DispatchMessage,
    callback: Option<&str>,
    now: DateTime<Utc>,
) -> HttpRequest {
    let mut form = vec![("To", message_address(message))];
    if let Some(from) = &config.from {
        form.push(("From", from.clone()));
    }
    if let Some(service) = &config.messaging_service_sid {
        form.push(("MessagingServiceSid", service.clone()));
    }
    form.push(("Body", message.body.clone()));
    if let Some(callback) = callback {
        form.push(("StatusCallback", callback_with_reference(callback, message)));
    }
    if let Some(expires_at) = message.expires_at {
        form.push((
            "ValidityPeriod",
            validity_period(expires_at, now).to_string(),
        ));
    }
    request(&config.account, "Messages.json", &form, message)
}

/// The call progress events a call's status callback reports: every one, so that a call
/// whose placing timed out is known to exist from its first event, and the final one frees
/// its line.
pub const CALL_EVENTS: [&str; 4] = ["initiated", "ringing", "answered", "completed"];

/// `POST …/Calls.json`: To, From, then `Url` or inline `Twiml` speaking the body, and the
/// status callback with every progress event.
pub fn build_call(
    config: &TwilioVoiceConfig,
    message: &DispatchMessage,
    callback: Option<&str>,
) -> Result<HttpRequest, CallResult> {
    let mut form = vec![("To", message.to.clone()), ("From", config.from.clone())];
    match &config.url {
        Some(url) => form.push(("Url", url.clone())),
        None => {
            let twiml = twiml_say(&message.body);
            let length = twiml.chars().count();
            if length > TWIML_LIMIT {
                // Twilio would reject it; say why here, where the fix (a `url`) is known.
                return Err(CallResult::Permanent {
                    reason: format!(
                        "inline TwiML is {length} characters, Twilio takes at most {TWIML_LIMIT}; \
                         shorten the message or set the provider's settings.url"
                    ),
                });
            }
            form.push(("Twiml", twiml));
        }
    }
    if let Some(callback) = callback {
        form.push(("StatusCallback", callback_with_reference(callback, message)));
        form.extend(
            CALL_EVENTS
                .iter()
                .map(|event| ("StatusCallbackEvent", (*event).to_owned())),
        );
    }
    Ok(request(&config.account, "Calls.json", &form, message))
}

/// Twilio sends WhatsApp through the Messages API with `whatsapp:`-prefixed addresses; a
/// campaign on the WhatsApp channel gets the prefix unless its address has a channel already.
fn message_address(message: &DispatchMessage) -> String {
    if message.channel == Channel::Whatsapp && !message.to.contains(':') {
        format!("whatsapp:{}", message.to)
    } else {
        message.to.clone()
    }
}

fn request(
    account: &TwilioAccount,
    resource: &str,
    form: &[(&str, String)],
    message: &DispatchMessage,
) -> HttpRequest {
    let url = format!(
        "{}/2010-04-01/Accounts/{}/{resource}",
        account.base_url, account.account_sid
    );
    let (user, password) = account.basic_auth();
    let credentials = format!("{user}:{password}");
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
        .finish();
    let headers = vec![
        Header::secret(
            "Authorization",
            format!("Basic {}", STANDARD.encode(credentials)),
        ),
        Header::new("Content-Type", "application/x-www-form-urlencoded"),
        Header::new("Accept", "application/json"),
        // Twilio documents this header on the webhooks it sends, not as a REST API feature:
        // it does not stop a second message. It is sent anyway so that every request names
        // its recipient (Twilio ignores unknown headers; the simulator counts duplicates by it).
        Header::new("I-Twilio-Idempotency-Token", message.idempotency_key()),
    ];
    HttpRequest::post(url, headers, body.into_bytes())
}

/// `<Response><Say>{text}</Say></Response>`, the text XML-escaped.
pub fn twiml_say(text: &str) -> String {
    format!("<Response><Say>{}</Say></Response>", xml_escape(text))
}

/// Escapes XML's five special characters and drops the characters XML 1.0 forbids (C0
/// controls other than tab, newline and carriage return; U+FFFE, U+FFFF). Five replacements
/// do not justify an XML crate.
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c < ' ' || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

#[derive(Deserialize)]
struct Resource {
    sid: Option<String>,
}

#[derive(Deserialize)]
struct TwilioError {
    code: Option<i64>,
    message: Option<String>,
}

/// How Twilio's error codes are treated (see the provider reference).
pub fn class(status: u16, code: Option<i64>) -> ErrorClass {
    match (code, status) {
        // Too many concurrent requests; the sender's queue holds more than 10 h of messages.
        (Some(20429 | 21611), _) | (_, 429) => ErrorClass::Throttled,
        // Authentication failed: the account's credentials are wrong. Or the account's
        // setup is: no such account or resource at this base URL (20404), a `From` that is
        // not a valid number (21212). Every recipient would be refused alike: the campaign
        // stops rather than its audience failing. Not 21606 and 21659 (a `From` that cannot
        // send to this destination: a short code to another country), which depend on the
        // recipient: a campaign paused for one would be paused again at every resume.
        // So is an account that is not active (20005), test credentials (20008), a
        // `StatusCallback` Twilio refuses (21609), or a 403 naming no code (a proxy's or a
        // firewall's refusal of every request alike).
        (Some(20003 | 20005 | 20008 | 20404 | 21212 | 21609), _) | (_, 401) | (None, 403) => {
            ErrorClass::Misconfigured
        }
        // Invalid number, not a mobile number.
        (Some(21211 | 21614), _) => ErrorClass::Permanent,
        // The recipient replied STOP to this sender: refused until it replies START.
        (Some(21610), _) => ErrorClass::OptedOut,
        // Service unavailable: nothing was done. 20503 on another 5xx (a gateway's 504) may
        // come after the message was taken: ambiguous, below.
        (Some(20503), status) if status < 500 || status == 503 => ErrorClass::Unavailable,
        (_, 503) => ErrorClass::Unavailable,
        // Twilio failed while handling the request (20500 and other 5xx), or a gateway in
        // front of it lost its answer (502, 504): the create API takes no idempotency key,
        // so the message may exist and only a lookup can tell.
        (_, 500..) => ErrorClass::Ambiguous,
        (_, 408) => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

pub fn interpret(answer: &Answer<'_>) -> CallResult {
    if (200..300).contains(&answer.status) {
        // A 2xx means the resource exists even if its body cannot be read.
        let sid = serde_json::from_slice::<Resource>(answer.body)
            .ok()
            .and_then(|r| r.sid);
        return CallResult::Accepted {
            provider_message_id: sid,
        };
    }
    let error = serde_json::from_slice::<TwilioError>(answer.body).ok();
    let code = error.as_ref().and_then(|e| e.code);
    let reason = match (code, error.and_then(|e| e.message)) {
        (Some(code), Some(message)) => {
            format!("twilio {code} (HTTP {}): {}", answer.status, clip(&message))
        }
        (Some(code), None) => format!("twilio {code} (HTTP {})", answer.status),
        // Not Twilio's JSON (a proxy's error page, say): keep what came.
        (None, _) => format!(
            "twilio HTTP {}: {}",
            answer.status,
            clip(&String::from_utf8_lossy(answer.body))
        ),
    };
    class(answer.status, code).into_result(reason, answer.retry_after)
}

/// How many messages (or calls) a lookup asks for: the newest, one page.
const LOOKUP_PAGE: usize = 50;

/// Twilio's list of the account's messages (or calls) to the recipient, newest first: how
/// Herald finds out whether a request whose answer was lost created a message after all.
/// `GET …/Messages.json?To=…&From=…&PageSize=50` (`DateSent` is a whole day, and a message
/// still queued has none, so the date is compared here instead).
pub fn build_lookup(
    account: &TwilioAccount,
    calls: bool,
    to: &str,
    from: Option<&str>,
) -> HttpRequest {
    let resource = if calls { "Calls.json" } else { "Messages.json" };
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("To", to);
    if let Some(from) = from {
        query.append_pair("From", from);
    }
    query.append_pair("PageSize", &LOOKUP_PAGE.to_string());
    let url = format!(
        "{}/2010-04-01/Accounts/{}/{resource}?{}",
        account.base_url,
        account.account_sid,
        query.finish()
    );
    let (user, password) = account.basic_auth();
    let credentials = format!("{user}:{password}");
    HttpRequest {
        method: reqwest::Method::GET,
        url,
        headers: vec![
            Header::secret(
                "Authorization",
                format!("Basic {}", STANDARD.encode(credentials)),
            ),
            Header::new("Accept", "application/json"),
        ],
        body: Vec::new(),
    }
}

/// The lookup for one message of a Messaging (`calls = false`) or Voice provider.
pub fn lookup_message(config: &TwilioSmsConfig, message: &DispatchMessage) -> HttpRequest {
    build_lookup(
        &config.account,
        false,
        &message_address(message),
        config.from.as_deref(),
    )
}

pub fn lookup_call(config: &TwilioVoiceConfig, message: &DispatchMessage) -> HttpRequest {
    build_lookup(&config.account, true, &message.to, Some(&config.from))
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    messages: Vec<Listed>,
    #[serde(default)]
    calls: Vec<Listed>,
    /// Set when Twilio holds more (older) items than this page.
    #[serde(default)]
    next_page_uri: Option<String>,
}

#[derive(Deserialize)]
struct Listed {
    sid: Option<String>,
    to: Option<String>,
    body: Option<String>,
    date_created: Option<String>,
}

/// The messages (or calls) in a lookup's answer that may be this recipient's: to the same
/// address, created within `window`; each says whether its text is the recipient's too (a
/// call has none to compare). `Err` when the answer is not a list.
pub fn find_in_lookup(
    answer: &Answer<'_>,
    message: &DispatchMessage,
    window: &RangeInclusive<DateTime<Utc>>,
) -> Result<Vec<Candidate>, String> {
    if !(200..300).contains(&answer.status) {
        return Err(format!(
            "lookup answered HTTP {}: {}",
            answer.status,
            clip(&String::from_utf8_lossy(answer.body))
        ));
    }
    let page: Page = serde_json::from_slice(answer.body)
        .map_err(|e| format!("lookup answer is not a list: {e}"))?;
    let created = |item: &Listed| {
        item.date_created
            .as_deref()
            .and_then(|d| DateTime::parse_from_rfc2822(d).ok())
            .map(|d| d.with_timezone(&Utc))
    };
    // A full page that begins after the attempt's minutes may not reach back to them (a
    // busy number, or a lookup made days later): its earlier request may be on the next
    // page, so finding nothing here says nothing. Never a reason to send again.
    let listed = page.messages.len() + page.calls.len();
    let oldest = page
        .messages
        .iter()
        .chain(&page.calls)
        .filter_map(created)
        .min();
    // Full, or Twilio saying there is more (whatever the page holds): either way older
    // items exist.
    let more = listed >= LOOKUP_PAGE || page.next_page_uri.is_some();
    if more && oldest.is_none_or(|at| at > *window.start()) {
        return Err(format!(
            "the provider's newest {listed} messages to this address do not reach back to the \
             attempt's minutes; whether it was sent cannot be told"
        ));
    }
    let calls = page.messages.is_empty();
    let to = if calls {
        message.to.clone()
    } else {
        message_address(message)
    };
    // A listed message to this address that cannot be judged (no creation date Herald can
    // read, or no id) may be the one sought: skipped, it would read as "not sent", and the
    // recipient would be sent again. It makes the lookup answer nothing instead.
    let mut found = Vec::new();
    for item in page.messages.into_iter().chain(page.calls) {
        if item.to.as_deref() != Some(to.as_str()) {
            continue;
        }
        let Some(at) = created(&item) else {
            return Err(format!(
                "the provider listed a message to this address whose creation date cannot be \
                 read ({}); whether it was sent cannot be told",
                clip(item.date_created.as_deref().unwrap_or("none"))
            ));
        };
        if !window.contains(&at) {
            continue;
        }
        let Some(sid) = item.sid else {
            return Err(
                "the provider listed a message to this address without its id; whether \
                        it was sent cannot be told"
                    .to_owned(),
            );
        };
        found.push(Candidate {
            same_text: calls || item.body.as_deref() == Some(message.body.as_str()),
            sid,
        });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::tests::{KEY, answer, message};
    use herald_shared::provider_config::{ProviderConfig, parse};
    use serde_json::{Value, json};
    use std::time::Duration;

    const SID: &str = "AC0123456789abcdef0123456789abcdef";
    const MG: &str = "MG0123456789abcdef0123456789abcdef";

    fn credentials() -> Value {
        json!({"account_sid": SID, "auth_token": "t0k3n"})
    }

    fn sms(settings: Value) -> TwilioSmsConfig {
        match parse(
            "twilio_sms",
            "http://127.0.0.1:9/",
            &settings,
            &credentials(),
        )
        .unwrap()
        {
            ProviderConfig::TwilioSms(c) => c,
            other => panic!("{other:?}"),
        }
    }

    fn voice(settings: Value) -> TwilioVoiceConfig {
        match parse(
            "twilio_voice",
            "http://127.0.0.1:9",
            &settings,
            &credentials(),
        )
        .unwrap()
        {
            ProviderConfig::TwilioVoice(c) => c,
            other => panic!("{other:?}"),
        }
    }

    fn headers(request: &HttpRequest) -> Vec<(&str, &str)> {
        request
            .headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str()))
            .collect()
    }

    #[test]
    fn a_message_that_expires_is_dropped_from_twilios_queue_by_then() {
        let now = DateTime::parse_from_rfc3339("2026-12-06T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let expiring = DispatchMessage {
            expires_at: Some(now + chrono::TimeDelta::seconds(600)),
            ..message()
        };
        let request = build_message(&sms(json!({"from": "+15005550006"})), &expiring, None, now);
        let body = String::from_utf8(request.body).unwrap();
        assert!(body.ends_with("&ValidityPeriod=600"), "{body}");
        // Without an expiry Twilio's default (10 hours) stands.
        let request = build_message(&sms(json!({"from": "+15005550006"})), &message(), None, now);
        assert!(
            !String::from_utf8(request.body)
                .unwrap()
                .contains("ValidityPeriod")
        );
        assert_eq!(
            validity_period(now + chrono::TimeDelta::days(3), now),
            MAX_VALIDITY_S
        );
        assert_eq!(validity_period(now - chrono::TimeDelta::seconds(5), now), 1);
    }

    #[test]
    fn a_message_is_form_encoded_with_basic_auth() {
        let request = build_message(
            &sms(json!({"from": "+15005550006", "messaging_service_sid": MG})),
            &message(),
            Some("https://hooks.example/twilio?x=1"),
            Utc::now(),
        );
        assert_eq!(request.method, reqwest::Method::POST);
        assert_eq!(
            request.url,
            format!("http://127.0.0.1:9/2010-04-01/Accounts/{SID}/Messages.json")
        );
        // base64("AC0123456789abcdef0123456789abcdef:t0k3n")
        let auth = format!("Basic {}", STANDARD.encode(format!("{SID}:t0k3n")));
        assert_eq!(
            auth,
            "Basic QUMwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZjp0MGszbg=="
        );
        assert_eq!(
            headers(&request),
            [
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Accept", "application/json"),
                ("I-Twilio-Idempotency-Token", KEY),
            ]
        );
        assert!(request.headers[0].sensitive);
        assert_eq!(
            String::from_utf8(request.body).unwrap(),
            format!(
                "To=%2B15551234567&From=%2B15005550006&MessagingServiceSid={MG}\
                 &Body=Hi+Ada+%26+%3CBob%3E%2C+100%25+%22ready%22%3F\
                 &StatusCallback=https%3A%2F%2Fhooks.example%2Ftwilio%3Fx%3D1%26ref%3D{KEY}%26seq%3D3"
            )
        );
    }

    #[test]
    fn an_api_key_authenticates_instead_of_the_auth_token() {
        const SK: &str = "SK0123456789abcdef0123456789abcdef";
        let config = |credentials: Value| {
            parse(
                "twilio_sms",
                "http://127.0.0.1:9",
                &json!({"from": "+15005550006"}),
                &credentials,
            )
        };
        let Ok(ProviderConfig::TwilioSms(keyed)) =
            config(json!({"account_sid": SID, "api_key_sid": SK, "api_key_secret": "k3y-s3cr3t"}))
        else {
            panic!("an API key without an auth token is enough to send")
        };
        let request = build_message(&keyed, &message(), None, Utc::now());
        // The account stays in the path; the key and its secret are the Basic credentials.
        assert_eq!(
            request.url,
            format!("http://127.0.0.1:9/2010-04-01/Accounts/{SID}/Messages.json")
        );
        let auth = format!("Basic {}", STANDARD.encode(format!("{SK}:k3y-s3cr3t")));
        assert_eq!(request.header("Authorization"), Some(auth.as_str()));
        let lookup = lookup_message(&keyed, &message());
        assert_eq!(lookup.header("Authorization"), Some(auth.as_str()));
        // Receipts are signed with the auth token: without one, none can be checked.
        assert!(
            ProviderConfig::TwilioSms(keyed.clone())
                .receipts()
                .is_none()
        );
        let with_token = config(json!({"account_sid": SID, "auth_token": "t0k3n",
                                       "api_key_sid": SK, "api_key_secret": "k3y-s3cr3t"}))
        .unwrap();
        assert!(with_token.receipts().is_some());
        assert_eq!(with_token.secrets().len(), 2);

        let refused = |credentials: Value| {
            let mut fields: Vec<String> = config(credentials)
                .unwrap_err()
                .0
                .into_iter()
                .map(|p| p.field)
                .collect();
            fields.sort();
            fields
        };
        assert_eq!(
            refused(json!({"account_sid": SID, "api_key_sid": SK})),
            ["credentials.api_key_secret"]
        );
        assert_eq!(
            refused(json!({"account_sid": SID, "api_key_secret": "x"})),
            ["credentials.api_key_sid"]
        );
        assert_eq!(
            refused(json!({"account_sid": SID, "api_key_sid": "AC0123", "api_key_secret": "x"})),
            ["credentials.api_key_sid"]
        );
        assert_eq!(
            refused(json!({"account_sid": SID})),
            ["credentials.auth_token"]
        );
    }

    #[test]
    fn whatsapp_through_twilio_gets_the_channel_prefix() {
        let mut m = message();
        m.channel = Channel::Whatsapp;
        let request = build_message(
            &sms(json!({"from": "whatsapp:+15005550006"})),
            &m,
            None,
            Utc::now(),
        );
        let body = String::from_utf8(request.body).unwrap();
        assert!(
            body.starts_with("To=whatsapp%3A%2B15551234567&From=whatsapp%3A%2B15005550006&Body="),
            "{body}"
        );
    }

    #[test]
    fn a_call_speaks_the_body_through_inline_twiml_or_fetches_a_url() {
        let request =
            build_call(&voice(json!({"from": "+15005550006"})), &message(), None).unwrap();
        assert_eq!(
            request.url,
            format!("http://127.0.0.1:9/2010-04-01/Accounts/{SID}/Calls.json")
        );
        assert_eq!(request.header("I-Twilio-Idempotency-Token"), Some(KEY));
        let form: Vec<(String, String)> =
            form_urlencoded::parse(&request.body).into_owned().collect();
        assert_eq!(
            form,
            [
                ("To".into(), "+15551234567".into()),
                ("From".into(), "+15005550006".into()),
                (
                    "Twiml".into(),
                    "<Response><Say>Hi Ada &amp; &lt;Bob&gt;, 100% &quot;ready&quot;?</Say></Response>"
                        .into()
                ),
            ]
        );
        let with_url = build_call(
            &voice(json!({"from": "+15005550006", "url": "https://twiml.example/say"})),
            &message(),
            Some("https://hooks.example/calls"),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(with_url.body).unwrap(),
            format!(
                "To=%2B15551234567&From=%2B15005550006&Url=https%3A%2F%2Ftwiml.example%2Fsay\
                 &StatusCallback=https%3A%2F%2Fhooks.example%2Fcalls%3Fref%3D{KEY}%26seq%3D3\
                 &StatusCallbackEvent=initiated&StatusCallbackEvent=ringing\
                 &StatusCallbackEvent=answered&StatusCallbackEvent=completed"
            )
        );
    }

    #[test]
    fn oversized_twiml_is_refused_before_calling() {
        let mut m = message();
        m.body = "&".repeat(1_000); // 5,000 characters once escaped
        let result = build_call(&voice(json!({"from": "+15005550006"})), &m, None).unwrap_err();
        assert!(
            matches!(&result, CallResult::Permanent { reason } if reason.contains("settings.url")),
            "{result:?}"
        );
    }

    #[test]
    fn a_lost_answer_is_looked_up_by_recipient_sender_time_and_text() {
        let config = sms(json!({"from": "+15005550006"}));
        let request = lookup_message(&config, &message());
        assert_eq!(request.method, reqwest::Method::GET);
        assert_eq!(
            request.url,
            format!(
                "http://127.0.0.1:9/2010-04-01/Accounts/{SID}/Messages.json\
                 ?To=%2B15551234567&From=%2B15005550006&PageSize=50"
            )
        );
        assert!(request.headers[0].sensitive);
        let at = |t: &str| DateTime::parse_from_rfc2822(t).unwrap().with_timezone(&Utc);
        let window = at("Thu, 30 Jul 2015 20:12:00 +0000")..=at("Thu, 30 Jul 2015 20:13:00 +0000");
        let page = |items: Value| json!({"messages": items, "page": 0}).to_string();
        let item = |sid: &str, body: &str, created: &str| json!({"sid": sid, "to": "+15551234567", "body": body, "date_created": created});
        let text = "Hi Ada & <Bob>, 100% \"ready\"?";
        let listed = page(json!([
            item("SMlater", text, "Thu, 30 Jul 2015 20:14:00 +0000"),
            item("SMother", "another text", "Thu, 30 Jul 2015 20:12:50 +0000"),
            item("SMours", text, "Thu, 30 Jul 2015 20:12:31 +0000"),
            item("SMolder", text, "Thu, 30 Jul 2015 20:11:00 +0000"),
        ]));
        // Within the window: ours (same text) and another one; before and after it, none.
        assert_eq!(
            find_in_lookup(&answer(200, &listed), &message(), &window),
            Ok(vec![
                Candidate {
                    sid: "SMother".into(),
                    same_text: false
                },
                Candidate {
                    sid: "SMours".into(),
                    same_text: true
                },
            ])
        );
        assert!(find_in_lookup(&answer(401, "{}"), &message(), &window).is_err());
        assert!(find_in_lookup(&answer(200, "<html>"), &message(), &window).is_err());
        let calls = json!({"calls": [{"sid": "CA1", "to": "+15551234567",
                                      "date_created": "Thu, 30 Jul 2015 20:12:31 +0000"}]})
        .to_string();
        assert_eq!(
            find_in_lookup(&answer(200, &calls), &message(), &window),
            Ok(vec![Candidate {
                sid: "CA1".into(),
                same_text: true
            }])
        );
        // A full page of later messages does not reach back to the attempt: no answer.
        let later: Vec<Value> = (0..50)
            .map(|i| {
                item(
                    &format!("SM{i}"),
                    "later",
                    "Thu, 30 Jul 2015 20:14:00 +0000",
                )
            })
            .collect();
        let full = find_in_lookup(&answer(200, &page(json!(later))), &message(), &window);
        assert!(full.is_err_and(|e| e.contains("do not reach back")));
        // One that does, or a page that is not full, answers.
        let mut reaching = later.clone();
        reaching[49] = item("SMolder", text, "Thu, 30 Jul 2015 20:11:00 +0000");
        let reached = find_in_lookup(&answer(200, &page(json!(reaching))), &message(), &window);
        assert_eq!(reached, Ok(vec![]));
        let partial = find_in_lookup(&answer(200, &page(json!(later[..49]))), &message(), &window);
        assert_eq!(partial, Ok(vec![]));
        // Unless Twilio says more are listed: a short page with a next page is no answer.
        let mut short = serde_json::from_str::<Value>(&page(json!(later[..10]))).unwrap();
        short["next_page_uri"] = json!("/2010-04-01/Accounts/AC1/Messages.json?Page=1");
        let short = find_in_lookup(&answer(200, &short.to_string()), &message(), &window);
        assert!(short.is_err_and(|e| e.contains("do not reach back")));
        // A message to this address that cannot be judged answers nothing, not "not sent".
        let undated = page(json!([item("SMours", text, "yesterday")]));
        let undated = find_in_lookup(&answer(200, &undated), &message(), &window);
        assert!(undated.is_err_and(|e| e.contains("cannot be told")));
        let nameless = page(json!([{"to": "+15551234567", "body": text,
                                    "date_created": "Thu, 30 Jul 2015 20:12:31 +0000"}]));
        let nameless = find_in_lookup(&answer(200, &nameless), &message(), &window);
        assert!(nameless.is_err_and(|e| e.contains("cannot be told")));
        // One to another address is not this recipient's, whatever it holds.
        let elsewhere = page(json!([{"to": "+15550000000", "date_created": "soon"}]));
        assert_eq!(
            find_in_lookup(&answer(200, &elsewhere), &message(), &window),
            Ok(vec![])
        );
    }

    #[test]
    fn xml_escaping_drops_forbidden_characters() {
        assert_eq!(xml_escape("a'b\u{1}\nc\u{ffff}"), "a&apos;b\nc");
    }

    #[test]
    fn success_yields_the_sid() {
        assert_eq!(
            interpret(&answer(
                201,
                r#"{"sid":"SM0123456789abcdef0123456789abcdef","status":"queued"}"#
            )),
            CallResult::Accepted {
                provider_message_id: Some("SM0123456789abcdef0123456789abcdef".into())
            }
        );
    }

    fn error(status: u16, code: i64, message: &str) -> String {
        json!({"code": code, "message": message,
               "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status})
        .to_string()
    }

    #[test]
    fn error_codes_map_to_classes() {
        let invalid = error(
            400,
            21211,
            "The 'To' number +1555 is not a valid phone number.",
        );
        assert_eq!(
            interpret(&answer(400, &invalid)),
            CallResult::Permanent {
                reason:
                    "twilio 21211 (HTTP 400): The 'To' number +1555 is not a valid phone number."
                        .into()
            }
        );
        let throttled = error(429, 20429, "Too Many Requests");
        let with_retry_after = Answer {
            retry_after: Some(Duration::from_secs(1)),
            ..answer(429, &throttled)
        };
        assert_eq!(
            interpret(&with_retry_after),
            CallResult::Throttled {
                reason: "twilio 20429 (HTTP 429): Too Many Requests".into(),
                retry_after: Some(Duration::from_secs(1))
            }
        );
        let cases = [
            (401, Some(20003), ErrorClass::Misconfigured),
            (401, None, ErrorClass::Misconfigured),
            (400, Some(21614), ErrorClass::Permanent),
            (400, Some(21610), ErrorClass::OptedOut),
            (400, Some(21611), ErrorClass::Throttled),
            (429, None, ErrorClass::Throttled),
            // Twilio's internal error: the message may exist (a lookup tells).
            (500, Some(20500), ErrorClass::Ambiguous),
            (500, None, ErrorClass::Ambiguous),
            (507, None, ErrorClass::Ambiguous),
            (408, None, ErrorClass::Transient),
            (503, None, ErrorClass::Unavailable),
            (503, Some(20503), ErrorClass::Unavailable),
            (504, Some(20503), ErrorClass::Ambiguous),
            (500, Some(20503), ErrorClass::Ambiguous),
            (403, None, ErrorClass::Misconfigured),
            (403, Some(20005), ErrorClass::Misconfigured),
            (401, Some(20008), ErrorClass::Misconfigured),
            (400, Some(21609), ErrorClass::Misconfigured),
            (502, None, ErrorClass::Ambiguous),
            (504, None, ErrorClass::Ambiguous),
            (404, Some(20404), ErrorClass::Misconfigured),
            (400, Some(21212), ErrorClass::Misconfigured),
            (400, Some(21606), ErrorClass::Permanent),
            (400, Some(21659), ErrorClass::Permanent),
            (400, Some(21602), ErrorClass::Permanent),
        ];
        for (status, code, expected) in cases {
            assert_eq!(class(status, code), expected, "{status} {code:?}");
        }
        assert_eq!(
            interpret(&answer(502, "<html>bad gateway</html>")),
            CallResult::Unknown {
                reason: "twilio HTTP 502: <html>bad gateway</html>".into(),
                retry_after: None,
            }
        );
    }
}
