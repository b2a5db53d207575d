//! Provider APIs. Each adapter turns a dispatch message into the exact HTTP request its API
//! documents ([`build`]) and the API's answer into a [`CallResult`] ([`interpret`]). Both
//! are pure functions of the provider's configuration and their input; the I/O (and the
//! timeout) is in [`crate::provider_call`].
//!
//! - [`generic`]: a generic HTTP JSON API (`kind = "http"`), optionally with a body template
//!   and extra headers.
//! - [`twilio`]: Twilio Programmable Messaging and Voice (`twilio_sms`, `twilio_voice`).
//! - [`whatsapp`]: Meta's WhatsApp Cloud API (`whatsapp`).

pub mod generic;
pub mod twilio;
pub mod whatsapp;

use crate::outcome::CallResult;
use chrono::{DateTime, Utc};
use herald_shared::provider_config::ProviderConfig;
use herald_shared::queue::message::DispatchMessage;
use std::fmt;
use std::time::Duration;

/// Most characters of a provider's error text kept in `last_error`.
pub const ERROR_TEXT_LIMIT: usize = 300;

/// One request, fully described: every adapter's requests are POSTs.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: reqwest::Method,
    pub url: String,
    /// In the order they are sent.
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
    /// Carries a secret: never printed, and marked sensitive for the HTTP stack.
    pub sensitive: bool,
}

impl Header {
    pub fn new(name: &str, value: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            value: value.into(),
            sensitive: false,
        }
    }

    pub fn secret(name: &str, value: impl Into<String>) -> Self {
        Self {
            sensitive: true,
            ..Self::new(name, value)
        }
    }
}

impl HttpRequest {
    pub fn post(url: String, headers: Vec<Header>, body: Vec<u8>) -> Self {
        Self {
            method: reqwest::Method::POST,
            url,
            headers,
            body,
        }
    }

    /// The value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }
}

// By hand, so that an Authorization header never reaches a log line.
impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|h| {
                let value = if h.sensitive {
                    "<redacted>"
                } else {
                    h.value.as_str()
                };
                (h.name.as_str(), value)
            })
            .collect();
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .finish()
    }
}

/// What came back, as far as the adapters care.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub status: u16,
    /// `Retry-After`, if the provider sent one.
    pub retry_after: Option<Duration>,
    pub body: &'a [u8],
}

/// How an error answer is to be treated: each adapter maps its API's codes to one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The provider asks to slow down; nothing is wrong with the recipient.
    Throttled,
    /// The provider will not send to this recipient again so soon (WhatsApp's pair rate
    /// limit): the recipient waits; the provider's pace and health are not at issue.
    RecipientBusy,
    /// The same request may succeed later.
    Transient,
    /// The provider says it is down or overloaded: nothing was sent, no attempt charged.
    Unavailable,
    /// The provider failed while handling the request, or a gateway lost its answer (500,
    /// 502, 504 and the other 5xx but 503): it may have been sent.
    Ambiguous,
    /// The provider refuses our credentials or configuration: no recipient can succeed.
    Misconfigured,
    /// This request will never succeed.
    Permanent,
    /// The recipient opted out: no message to it will succeed on this channel.
    OptedOut,
}

impl ErrorClass {
    pub fn into_result(self, reason: String, retry_after: Option<Duration>) -> CallResult {
        match self {
            ErrorClass::Throttled => CallResult::Throttled {
                reason,
                retry_after,
            },
            ErrorClass::RecipientBusy => CallResult::RecipientBusy {
                reason,
                retry_after,
            },
            ErrorClass::Transient => CallResult::Transient {
                reason,
                retry_after,
            },
            ErrorClass::Unavailable => CallResult::Unavailable {
                reason,
                retry_after,
            },
            ErrorClass::Ambiguous => CallResult::Unknown {
                reason,
                retry_after,
            },
            ErrorClass::Misconfigured => CallResult::Misconfigured { reason },
            ErrorClass::Permanent => CallResult::Permanent { reason },
            ErrorClass::OptedOut => CallResult::OptedOut { reason },
        }
    }
}

/// The request for `message`, or the final result when the message cannot be sent through
/// this API at all (say, inline TwiML over Twilio's size limit). `callback` is where the
/// provider should post this message's receipts, where its API takes a URL per request
/// (WhatsApp's webhook is set once per app; its receipts echo the reference instead).
pub fn build(
    config: &ProviderConfig,
    message: &DispatchMessage,
    callback: Option<&str>,
) -> Result<HttpRequest, CallResult> {
    match config {
        ProviderConfig::Http(c) => Ok(generic::build(c, message, callback)),
        ProviderConfig::TwilioSms(c) => Ok(twilio::build_message(
            c,
            message,
            callback,
            chrono::Utc::now(),
        )),
        ProviderConfig::TwilioVoice(c) => twilio::build_call(c, message, callback),
        ProviderConfig::WhatsApp(c) => whatsapp::build(c, message),
    }
}

/// How to find out whether a request whose answer was lost created a message: the request
/// that lists it, for the APIs that can (Twilio). `None`: this API cannot tell.
pub fn lookup(config: &ProviderConfig, message: &DispatchMessage) -> Option<HttpRequest> {
    match config {
        ProviderConfig::TwilioSms(c) => Some(twilio::lookup_message(c, message)),
        ProviderConfig::TwilioVoice(c) => Some(twilio::lookup_call(c, message)),
        ProviderConfig::Http(_) | ProviderConfig::WhatsApp(_) => None,
    }
}

/// A message in a [`lookup`]'s answer that may be this recipient's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The provider's id of it.
    pub sid: String,
    /// Its text is the recipient's (always, for a call).
    pub same_text: bool,
}

/// The messages in a [`lookup`]'s answer to this recipient, created within `window`.
pub fn found_in_lookup(
    config: &ProviderConfig,
    answer: &Answer<'_>,
    message: &DispatchMessage,
    window: &std::ops::RangeInclusive<DateTime<Utc>>,
) -> Result<Vec<Candidate>, String> {
    let found = match config {
        ProviderConfig::TwilioSms(_) | ProviderConfig::TwilioVoice(_) => {
            twilio::find_in_lookup(answer, message, window)
        }
        ProviderConfig::Http(_) | ProviderConfig::WhatsApp(_) => Ok(Vec::new()),
    };
    let secrets = config.secrets();
    found
        .and_then(|candidates| {
            // An id Herald cannot store may be the message sought: no answer, as for any
            // listed message that cannot be judged.
            candidates
                .into_iter()
                .map(|c| match message_id(&c.sid) {
                    Some(sid) => Ok(Candidate { sid, ..c }),
                    None => Err(format!(
                        "the provider listed a message id Herald cannot store ({}); whether \
                         it was sent cannot be told",
                        clip(&c.sid)
                    )),
                })
                .collect()
        })
        .map_err(|reason| printable(&scrub(reason, &secrets)))
}

/// `callback` with the message's reference (and dispatch) added to its query, so a receipt
/// names its recipient even when it arrives before the send's answer. Added before any
/// fragment (Twilio's connection overrides, `#rc=3`, live there): a fragment is never sent.
pub fn callback_with_reference(callback: &str, message: &DispatchMessage) -> String {
    let (base, fragment) = match callback.split_once('#') {
        Some((base, fragment)) => (base, Some(fragment)),
        None => (callback, None),
    };
    let separator = if base.contains('?') { '&' } else { '?' };
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("ref", &message.idempotency_key())
        .append_pair("seq", &message.seq.to_string())
        .finish();
    match fragment {
        Some(fragment) => format!("{base}{separator}{query}#{fragment}"),
        None => format!("{base}{separator}{query}"),
    }
}

/// What the provider's answer means. Reasons are scrubbed of the provider's secrets, in
/// case an API echoes one back; what the provider wrote is kept only as far as it is
/// printable (PostgreSQL refuses a NUL, and a provider, perhaps a tenant's own endpoint,
/// must not be able to make an outcome unwritable).
pub fn interpret(config: &ProviderConfig, answer: &Answer<'_>) -> CallResult {
    let secrets = config.secrets();
    let result = match config {
        ProviderConfig::Http(_) => generic::interpret(answer),
        ProviderConfig::TwilioSms(_) | ProviderConfig::TwilioVoice(_) => twilio::interpret(answer),
        ProviderConfig::WhatsApp(_) => whatsapp::interpret(answer),
    };
    match result.map_reason(|reason| printable(&scrub_cut(scrub(reason, &secrets), &secrets))) {
        CallResult::Accepted {
            provider_message_id,
        } => CallResult::Accepted {
            provider_message_id: provider_message_id.as_deref().and_then(message_id),
        },
        other => other,
    }
}

/// A provider's message id as Herald keeps it: trimmed, 1 to 256 characters, none of them
/// a control character (PostgreSQL's text takes no NUL); anything else is no usable id. The
/// receiver takes a receipt's id by the same rule, so the two meet: a generic provider's id
/// the worker dropped (past 128 characters, or not ASCII, as it used to) left every receipt
/// without a reference parked until it was an orphan.
pub fn message_id(id: &str) -> Option<String> {
    let id = id.trim();
    (!id.is_empty() && id.chars().count() <= 256 && !id.chars().any(char::is_control))
        .then(|| id.to_owned())
}

/// `text` with control characters turned into spaces.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Whether `scrub` replaces `secret`: very short secrets would blank out ordinary words;
/// no real credential is that short.
fn scrubbed_secret(secret: &str) -> bool {
    secret.len() >= 4
}

/// Replaces what is left of a secret an adapter's clip ([`clip`]) cut in two: its first
/// part (four bytes or more) just before the clip's mark. The scrub of the whole reason
/// misses it, and an adapter reads the answer as it came (a secret as short as a word must
/// not change what a code or an id is read from).
fn scrub_cut(text: String, secrets: &[&str]) -> String {
    if !text.contains('…') {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find('…') {
        let before = &rest[..at];
        let cut = secrets
            .iter()
            .filter(|s| scrubbed_secret(s))
            .filter_map(|secret| {
                secret
                    .char_indices()
                    .map(|(i, _)| i)
                    .filter(|&i| i >= 4)
                    .rev()
                    .find(|&i| before.ends_with(&secret[..i]))
            })
            .max()
            .unwrap_or(0);
        out.push_str(&before[..before.len() - cut]);
        if cut > 0 {
            out.push_str("<redacted>");
        }
        out.push('…');
        rest = &rest[at + '…'.len_utf8()..];
    }
    out.push_str(rest);
    out
}

/// Replaces every occurrence of a secret in `text`.
pub fn scrub(text: String, secrets: &[&str]) -> String {
    secrets
        .iter()
        .filter(|s| scrubbed_secret(s))
        .fold(text, |text, secret| {
            if text.contains(secret) {
                text.replace(secret, "<redacted>")
            } else {
                text
            }
        })
}

/// At most [`ERROR_TEXT_LIMIT`] characters of `text`, marked when cut.
pub fn clip(text: &str) -> String {
    let mut clipped: String = text.chars().take(ERROR_TEXT_LIMIT).collect();
    if clipped.len() < text.len() {
        clipped.push('…');
    }
    clipped
}

/// The longest `Retry-After` taken at its word. A provider's answer sets when a recipient
/// is due again and, for a paced provider, when the whole fleet may next call it: a value
/// of years (or one past what PostgreSQL's timestamps hold, which would fail the whole
/// outcome statement) would stop it for good. A provider still unwilling after an hour
/// says so again.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3_600);

/// `Retry-After` as seconds or as an HTTP date (RFC 9110 §10.2.3), relative to `now`, at
/// most [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    let wait = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        // The IMF-fixdate, and the obsolete RFC 850 and asctime forms a recipient must
        // still read.
        let at: DateTime<Utc> = httpdate::parse_http_date(value).ok()?.into();
        // A date in the past means "now".
        (at - now).to_std().unwrap_or_default()
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use herald_shared::domain::Channel;
    use herald_shared::queue::message::FORMAT_VERSION;
    use uuid::Uuid;

    /// The message every adapter test sends: recipient 42 of campaign …07.
    pub fn message() -> DispatchMessage {
        DispatchMessage {
            v: FORMAT_VERSION,
            recipient_id: 42,
            seq: 3,
            tenant_id: Uuid::from_u128(1),
            campaign_id: Uuid::from_u128(7),
            provider_id: Uuid::from_u128(9),
            channel: Channel::Sms,
            to: "+15551234567".into(),
            body: "Hi Ada & <Bob>, 100% \"ready\"?".into(),
            expires_at: None,
            variables: serde_json::Map::new(),
        }
    }

    pub const KEY: &str = "herald-00000000000000000000000000000007-42";

    pub fn answer(status: u16, body: &str) -> Answer<'_> {
        Answer {
            status,
            retry_after: None,
            body: body.as_bytes(),
        }
    }

    #[test]
    fn the_key_is_what_the_tests_expect() {
        assert_eq!(message().idempotency_key(), KEY);
    }

    #[test]
    fn the_reference_goes_in_the_query_before_any_fragment() {
        let m = message();
        assert_eq!(
            callback_with_reference("https://r.example/cb", &m),
            format!("https://r.example/cb?ref={KEY}&seq=3")
        );
        assert_eq!(
            callback_with_reference("https://r.example/cb?t=1", &m),
            format!("https://r.example/cb?t=1&ref={KEY}&seq=3")
        );
        assert_eq!(
            callback_with_reference("https://r.example/cb?t=1#rc=3&rt=2000", &m),
            format!("https://r.example/cb?t=1&ref={KEY}&seq=3#rc=3&rt=2000")
        );
        assert_eq!(
            callback_with_reference("https://r.example/cb#rc=3", &m),
            format!("https://r.example/cb?ref={KEY}&seq=3#rc=3")
        );
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let now = DateTime::parse_from_rfc2822("Wed, 21 Oct 2015 07:28:00 GMT")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after(" 3 ", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed Oct 21 07:28:30 2015", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", now), None);
        // Years, or past what a timestamp holds: an hour.
        assert_eq!(
            parse_retry_after("10000000000000", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn secrets_are_scrubbed_and_never_debug_printed() {
        assert_eq!(
            scrub("bad token s3cr3t!".into(), &["s3cr3t", "ab"]),
            "bad token <redacted>!"
        );
        let request = HttpRequest::post(
            "https://x.example".into(),
            vec![
                Header::secret("Authorization", "Bearer s3cr3t"),
                Header::new("Accept", "application/json"),
            ],
            b"{}".to_vec(),
        );
        let shown = format!("{request:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("application/json"));
    }

    #[test]
    fn a_secret_echoed_where_an_error_text_is_clipped_leaves_no_part_of_it() {
        let token = "t0k3n-secret-value";
        let config = herald_shared::provider_config::parse(
            "twilio_sms",
            "http://127.0.0.1:9",
            &serde_json::json!({"from": "+15005550006"}),
            &serde_json::json!({"account_sid": format!("AC{}", "0".repeat(32)), "auth_token": token}),
        )
        .unwrap();
        // The token straddles the clip: scrubbed after it, its first part was kept.
        let message = format!("{}{token} was refused", "x".repeat(ERROR_TEXT_LIMIT - 5));
        let body = serde_json::json!({"code": 21211, "message": message}).to_string();
        let result = interpret(&config, &tests::answer(400, &body));
        let CallResult::Permanent { reason } = result else {
            panic!("{result:?}");
        };
        assert!(!reason.contains(&token[..5]), "{reason}");
        assert!(
            reason.starts_with("twilio 21211 (HTTP 400): xxx"),
            "{reason}"
        );
    }

    #[test]
    fn what_a_provider_writes_cannot_make_an_outcome_unwritable() {
        let config = herald_shared::provider_config::parse(
            "http",
            "http://127.0.0.1:9/v1",
            &serde_json::json!({}),
            &serde_json::json!({}),
        )
        .unwrap();
        let error = interpret(&config, &tests::answer(400, "bad\u{0}number\r\n"));
        assert_eq!(
            error,
            CallResult::Permanent {
                reason: "HTTP 400: bad number  ".into()
            }
        );
        let accepted = interpret(&config, &tests::answer(200, r#"{"id":"ok\u0000id"}"#));
        assert_eq!(
            accepted,
            CallResult::Accepted {
                provider_message_id: None
            }
        );
        assert_eq!(message_id(" sim_1 ").as_deref(), Some("sim_1"));
        assert_eq!(message_id(&"x".repeat(256)), Some("x".repeat(256)));
        assert_eq!(message_id(&"x".repeat(257)), None);
        assert_eq!(message_id("msg é 1").as_deref(), Some("msg é 1"));
        assert_eq!(message_id("a\u{0}b"), None);
    }

    #[test]
    fn long_error_texts_are_clipped() {
        let long = "x".repeat(ERROR_TEXT_LIMIT + 10);
        let clipped = clip(&long);
        assert_eq!(clipped.chars().count(), ERROR_TEXT_LIMIT + 1);
        assert!(clipped.ends_with('…'));
        assert_eq!(clip("short"), "short");
    }
}
