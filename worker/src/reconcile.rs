//! Before a recipient whose earlier request may have been sent is sent again: ask the
//! provider whether that request created a message, where its API can tell (Twilio lists
//! the account's messages and calls by recipient). The answer decides between recording the
//! earlier send and making a new attempt; no API Herald speaks would refuse a second copy.

use crate::adapters::{self, Answer};
use crate::provider_call;
use crate::providers::Provider;
use chrono::{DateTime, Utc};
use herald_shared::queue::message::DispatchMessage;
use std::time::Duration;

/// What the provider says of an earlier request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It created this message (its id, when the list gives one): sent, nothing to resend.
    Sent(Option<String>),
    /// No such message: the earlier request did not get through.
    NotFound,
    /// The provider's API has no lookup.
    CannotTell,
}

/// How far before the outcome became unknown the earlier request may have been created:
/// its request began at most a timeout and a lease grace earlier; the rest is margin for
/// the provider's clock.
const CLOCK_MARGIN: Duration = Duration::from_secs(60);

/// Looks up `message` as sent since shortly before `unknown_since`. `Err` when the lookup
/// itself failed (the recipient then waits and asks again later).
pub async fn look_up(
    client: &reqwest::Client,
    provider: &Provider,
    message: &DispatchMessage,
    unknown_since: DateTime<Utc>,
    lease_grace: Duration,
) -> Result<Verdict, String> {
    let Some(request) = adapters::lookup(&provider.config, message) else {
        return Ok(Verdict::CannotTell);
    };
    let before = provider.timeout + lease_grace + CLOCK_MARGIN;
    let since = unknown_since - chrono::Duration::from_std(before).unwrap_or_default();
    let headers = provider_call::header_map(&request)?;
    let response = client
        .request(request.method, &request.url)
        .headers(headers)
        .timeout(provider.timeout)
        .send()
        .await
        .map_err(|e| format!("lookup failed: {}", provider_call::without_url(&e)))?;
    let status = response.status().as_u16();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("lookup failed: {}", provider_call::without_url(&e)))?;
    let answer = Answer {
        status,
        retry_after: None,
        body: &body,
    };
    Ok(
        match adapters::found_in_lookup(&provider.config, &answer, message, since)? {
            Some(sid) => Verdict::Sent(Some(sid).filter(|s| !s.is_empty())),
            None => Verdict::NotFound,
        },
    )
}
