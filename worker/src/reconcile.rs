//! Before a recipient whose earlier request may have been sent is sent again: ask the
//! provider that request went to whether it created a message, where its API can tell
//! (Twilio lists the account's messages and calls by recipient). The answer decides between
//! recording the earlier send and making a new attempt; no API Herald speaks would refuse a
//! second copy.

use crate::adapters::{self, Answer, Candidate};
use crate::breaker::Health;
use crate::provider_call;
use crate::providers::Provider;
use chrono::{DateTime, Utc};
use herald_shared::queue::message::DispatchMessage;
use sqlx::PgPool;
use std::time::Duration;

/// What the provider says of an earlier request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It created this message (its id): sent, nothing to resend.
    Sent(String),
    /// Several messages with its text, none recorded by another recipient: it was sent,
    /// but which of them is its own cannot be told (recorded without an id).
    SentUnidentified { candidates: usize },
    /// No such message: the earlier request did not get through.
    NotFound,
    /// Messages to its address, none with its text (a provider may store a text it
    /// re-encoded): whether one is its own cannot be told, so it is not sent again.
    Ambiguous { candidates: usize },
    /// The provider's API has no lookup.
    CannotTell,
}

/// The most of a lookup's answer read: a page of 50 messages is tens of kilobytes. One cut
/// off is not a list (the lookup fails, costing an attempt, never a resend).
const LOOKUP_ANSWER_LIMIT: usize = 1024 * 1024;

/// Slack for the provider's clock against the database's, either side of the window in which
/// the earlier request could have created its message.
const CLOCK_MARGIN: Duration = Duration::from_secs(60);

/// How long a provider that deduplicates requests by their idempotency key
/// (`unknown_outcome = retry`) is trusted to remember one. APIs that honour a key keep it
/// about a day (Stripe's are removed once at least 24 hours old); asked again after that,
/// the provider may take the key for a new request and send a second message. An hour
/// under the day leaves room for clocks apart.
pub const KEY_KEPT: chrono::TimeDelta = chrono::TimeDelta::hours(23);

/// Whether a request made at `since` may still be asked again under its key at `now`.
pub fn key_still_kept(since: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    now - since < KEY_KEPT
}

/// Why a lookup gave no verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupFailed {
    pub reason: String,
    /// The failure says nothing about the recipient (no answer, a 5xx or 429, the database
    /// out of reach): it waits, no attempt spent. One that would fail again the same way
    /// (refused credentials, an endpoint without the list, an answer that is no list) costs
    /// an attempt, so that it cannot loop for ever.
    pub passing: bool,
    /// The provider answered 429 (requests go to it faster than its rate limit allows),
    /// with its `Retry-After` if it said one.
    pub throttled: Option<Option<Duration>>,
    /// What the lookup's request said of the provider, for its circuit breaker (as a
    /// send's would); `None` if no request was made.
    pub health: Option<Health>,
}

impl LookupFailed {
    /// A request that got no answer (a timeout, a connection lost or refused): the
    /// provider is failing, and the recipient waits.
    pub fn no_answer(reason: String) -> Self {
        Self {
            reason,
            passing: true,
            throttled: None,
            health: Some(Health::Failing),
        }
    }

    /// An answer that could not be used for now (the database out of reach for the check
    /// that follows it): the provider is up, the recipient waits.
    fn passing(reason: String) -> Self {
        Self {
            health: Some(Health::Up),
            ..Self::no_answer(reason)
        }
    }

    /// A failure that would come again: the provider's answer is no list (`health` up), or
    /// no request could be made at all (`None`).
    fn lasting(reason: String, health: Option<Health>) -> Self {
        Self {
            reason,
            passing: false,
            throttled: None,
            health,
        }
    }
}

/// Whether `provider` can be asked about `message` ([`look_up`] makes a request).
pub fn can_look_up(provider: &Provider, message: &DispatchMessage) -> bool {
    adapters::lookup(&provider.config, message).is_some()
}

/// Looks up `message` as sent by `provider` in the attempt that began at `since`: its
/// request started within `started_within` of then (the lease's grace: after a wait for a
/// send slot or a line) and lasted at most the provider's timeout. The row holds the latest
/// attempt that may have been sent (the worker rules an earlier one out before sending
/// again), so the window ends there: searched to now, it would take other messages to the
/// same number for this one's.
pub async fn look_up(
    egress: &crate::egress::Egress,
    pool: &PgPool,
    provider: &Provider,
    message: &DispatchMessage,
    since: DateTime<Utc>,
    started_within: Duration,
) -> Result<Verdict, LookupFailed> {
    let Some(request) = adapters::lookup(&provider.config, message) else {
        return Ok(Verdict::CannotTell);
    };
    let margin = chrono::Duration::from_std(CLOCK_MARGIN).unwrap_or_default();
    let reach = chrono::Duration::from_std(started_within + provider.timeout).unwrap_or_default();
    let window = (since - margin)..=(since + reach + margin);
    let not_made = |reason| LookupFailed::lasting(reason, None);
    let headers = provider_call::header_map(&request).map_err(not_made)?;
    let url = url::Url::parse(&request.url)
        .map_err(|e| not_made(format!("the lookup's URL is not valid: {e}")))?;
    let client = egress
        .client(provider, &url)
        .map_err(|_| not_made("the provider's address may not be reached".to_owned()))?;
    let down = |e: reqwest::Error| {
        LookupFailed::no_answer(format!("lookup failed: {}", provider_call::without_url(&e)))
    };
    let response = client
        .request(request.method, url)
        .headers(headers)
        .timeout(provider.timeout)
        .send()
        .await
        .map_err(down)?;
    let status = response.status().as_u16();
    if status >= 500 || status == 429 {
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| adapters::parse_retry_after(v, chrono::Utc::now()));
        let reason = format!("lookup failed: the provider answered HTTP {status}");
        return Err(if status == 429 {
            LookupFailed {
                throttled: Some(retry_after),
                ..LookupFailed::passing(reason)
            }
        } else {
            LookupFailed::no_answer(reason)
        });
    }
    let body = provider_call::read_body(response, LOOKUP_ANSWER_LIMIT)
        .await
        .map_err(down)?;
    let answer = Answer {
        status,
        retry_after: None,
        body: &body,
    };
    // Refused credentials count against the provider, as a send's refused account does.
    let health = if matches!(status, 401 | 403) {
        Health::Failing
    } else {
        Health::Up
    };
    let candidates = adapters::found_in_lookup(&provider.config, &answer, message, &window)
        .map_err(|reason| LookupFailed::lasting(reason, Some(health)))?;
    let unclaimed = unclaimed(pool, message.recipient_id, candidates)
        .await
        .map_err(|e| LookupFailed::passing(format!("lookup failed: {e}")))?;
    Ok(judge(&unclaimed))
}

/// The candidates no other recipient has recorded as its own send (the same text to the same
/// number in the same minutes may be another campaign's message on a shared account).
async fn unclaimed(
    pool: &PgPool,
    recipient: i64,
    candidates: Vec<Candidate>,
) -> Result<Vec<Candidate>, sqlx::Error> {
    if candidates.is_empty() {
        return Ok(candidates);
    }
    let sids: Vec<&str> = candidates.iter().map(|c| c.sid.as_str()).collect();
    let claimed = herald_shared::db::within(herald_store::recipients::reconcile::taken_by_others(
        pool, recipient, &sids,
    ))
    .await?;
    Ok(candidates
        .into_iter()
        .filter(|c| !claimed.contains(&c.sid))
        .collect())
}

/// What `candidates` (the provider's messages to the recipient's address in the window,
/// none claimed by another recipient) say of its earlier request: the one with its text is
/// its own. Only none at all is `NotFound`: a message Herald cannot tell apart from its own
/// is never a reason to send again. Nor is one with another text taken as its own, even
/// alone (a provider may store a text it re-encoded): it may be another message to the same
/// number (a one-time code sent again), and taking it would hide it from that message's own
/// lookup, which would then find nothing and send it a second time.
pub fn judge(candidates: &[Candidate]) -> Verdict {
    let same: Vec<&Candidate> = candidates.iter().filter(|c| c.same_text).collect();
    match (same.as_slice(), candidates) {
        (_, []) => Verdict::NotFound,
        ([one], _) => Verdict::Sent(one.sid.clone()),
        ([], others) => Verdict::Ambiguous {
            candidates: others.len(),
        },
        (same, _) => Verdict::SentUnidentified {
            candidates: same.len(),
        },
    }
}

/// What the silence of a provider that cannot be looked up (`await_receipt`) says of a
/// request whose answer was lost, once its window has passed without a receipt for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Silence {
    /// The provider has reported on messages sent after that request, never on it, and no
    /// webhook of its was refused since: it did not get through, and is sent again.
    SendAgain,
    /// No report on any later message yet, or a webhook of the provider's refused since the
    /// request (which it sends again later, and which may hold its receipt): the provider's
    /// receipts may be held up (the receiver down or refusing, a webhook the provider
    /// retries, one not configured), and their silence says nothing. Asked again after this
    /// long, no attempt spent.
    Wait(Duration),
    /// As long as [`SILENT_WINDOWS`] windows without a word: not sent again.
    GiveUp,
}

/// How many of its windows a provider's receipts may stay silent on every later message
/// before a recipient whose request's answer was lost is failed rather than sent again...
pub const SILENT_WINDOWS: u32 = 10;
/// ...and never less than this: a window of a few seconds (or none) would give up at once.
pub const SILENT_AT_LEAST: Duration = Duration::from_secs(30 * 60);
/// The shortest wait between two looks at a silent provider's receipts.
pub const SILENT_STEP: Duration = Duration::from_secs(10);
/// How much later than the latest the lost request could have gone out a message the
/// provider reported on must have been sent (by the provider's clock) to count as later: its
/// clock against the database's.
pub const REPORT_MARGIN: Duration = Duration::from_secs(5);

/// [`Silence`] for a request made `waited` ago at a provider whose window is `window`,
/// given whether it has reported on a later message since, and whether a webhook of its
/// was refused since. Waiting is measured by the clock, not by checks: a recipient held
/// back meanwhile (quiet hours) may find the time passed.
pub fn after_silence(
    reported_on_later: bool,
    refused_since: bool,
    waited: Duration,
    window: Duration,
) -> Silence {
    let give_up = (window * SILENT_WINDOWS).max(SILENT_AT_LEAST);
    if reported_on_later && !refused_since {
        Silence::SendAgain
    } else if waited >= give_up {
        Silence::GiveUp
    } else {
        // A window at a time, never less than `SILENT_STEP` (a window of a few seconds
        // would cycle the recipient through the scheduler and a worker every few seconds
        // for half an hour), nor past the give-up point by more than a step.
        Silence::Wait(
            window
                .max(SILENT_STEP)
                .min(give_up - waited)
                .max(Duration::from_secs(1)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_trusted_for_less_than_a_day() {
        let since = DateTime::parse_from_rfc3339("2026-12-04T17:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let after = |hours: i64, minutes: i64| {
            since + chrono::TimeDelta::hours(hours) + chrono::TimeDelta::minutes(minutes)
        };
        assert!(key_still_kept(since, after(0, 0)));
        assert!(key_still_kept(since, after(22, 59)));
        assert!(!key_still_kept(since, after(23, 0)));
        assert!(!key_still_kept(since, after(64, 0)), "over a weekend");
    }

    #[test]
    fn silence_is_read_as_not_sent_only_once_later_messages_were_reported_on() {
        let window = Duration::from_secs(120);
        assert_eq!(
            after_silence(true, false, window, window),
            Silence::SendAgain,
            "receipts flow, none for it"
        );
        assert_eq!(
            after_silence(false, false, window, window),
            Silence::Wait(window),
            "receipts held up: no word either way"
        );
        assert_eq!(
            after_silence(false, false, window * 15 - Duration::from_secs(30), window),
            Silence::Wait(Duration::from_secs(30))
        );
        // Ten windows, but never under half an hour.
        assert_eq!(
            after_silence(false, false, window * 10, window),
            Silence::Wait(window)
        );
        assert_eq!(
            after_silence(false, false, window * 15, window),
            Silence::GiveUp
        );
        let hour = Duration::from_secs(3_600);
        assert_eq!(
            after_silence(false, false, hour * 10, hour),
            Silence::GiveUp
        );
        assert_eq!(
            after_silence(false, false, Duration::from_secs(60), Duration::ZERO),
            Silence::Wait(SILENT_STEP)
        );
        // Reported on later messages, however late: sent again.
        assert_eq!(
            after_silence(true, false, window * 50, window),
            Silence::SendAgain
        );
        // Unless a webhook of the provider's was refused since the request: it may have
        // held the receipt, which comes when the provider sends it again.
        assert_eq!(
            after_silence(true, true, window, window),
            Silence::Wait(window)
        );
        assert_eq!(
            after_silence(true, true, window * 15, window),
            Silence::GiveUp
        );
    }

    fn c(sid: &str, same_text: bool) -> Candidate {
        Candidate {
            sid: sid.into(),
            same_text,
        }
    }

    #[test]
    fn the_message_with_the_text_is_its_own() {
        assert_eq!(judge(&[]), Verdict::NotFound);
        assert_eq!(
            judge(&[c("a", false), c("b", true)]),
            Verdict::Sent("b".into())
        );
        // Another text, even alone, may be another message's.
        assert_eq!(
            judge(&[c("a", false)]),
            Verdict::Ambiguous { candidates: 1 }
        );
    }

    #[test]
    fn messages_it_cannot_tell_apart_from_its_own_are_never_not_found() {
        assert_eq!(
            judge(&[c("a", false), c("b", false)]),
            Verdict::Ambiguous { candidates: 2 }
        );
        assert_eq!(
            judge(&[c("a", true), c("b", true), c("c", false)]),
            Verdict::SentUnidentified { candidates: 2 }
        );
    }
}
