//! Before a recipient whose earlier request may have been sent is sent again: ask the
//! provider that request went to whether it created a message, where its API can tell
//! (Twilio lists the account's messages and calls by recipient). The answer decides between
//! recording the earlier send and making a new attempt; no API Herald speaks would refuse a
//! second copy.

use crate::adapters::{self, Answer, Candidate};
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
    /// No such message: the earlier request did not get through.
    NotFound,
    /// The provider's API has no lookup.
    CannotTell,
}

/// Slack for the provider's clock against the database's, either side of the window in which
/// the earlier request could have created its message.
const CLOCK_MARGIN: Duration = Duration::from_secs(60);

/// Looks up `message` as sent by `provider` in the window of the attempt that began at
/// `since` (its request was made then or within the provider's timeout after). `Err` when
/// the lookup itself failed.
pub async fn look_up(
    egress: &crate::egress::Egress,
    pool: &PgPool,
    provider: &Provider,
    message: &DispatchMessage,
    since: DateTime<Utc>,
) -> Result<Verdict, String> {
    let Some(request) = adapters::lookup(&provider.config, message) else {
        return Ok(Verdict::CannotTell);
    };
    let margin = chrono::Duration::from_std(CLOCK_MARGIN).unwrap_or_default();
    let timeout = chrono::Duration::from_std(provider.timeout).unwrap_or_default();
    let window = (since - margin)..=(since + timeout + margin);
    let headers = provider_call::header_map(&request)?;
    let url =
        url::Url::parse(&request.url).map_err(|e| format!("the lookup's URL is not valid: {e}"))?;
    let client = egress
        .client(provider, &url)
        .map_err(|_| "the provider's address may not be reached".to_owned())?;
    let response = client
        .request(request.method, url)
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
    let candidates = adapters::found_in_lookup(&provider.config, &answer, message, &window)?;
    let unclaimed = unclaimed(pool, message.recipient_id, candidates)
        .await
        .map_err(|e| format!("lookup failed: {e}"))?;
    Ok(choose(&unclaimed).map_or(Verdict::NotFound, Verdict::Sent))
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
    let claimed =
        herald_store::recipients::reconcile::taken_by_others(pool, recipient, &sids).await?;
    Ok(candidates
        .into_iter()
        .filter(|c| !claimed.contains(&c.sid))
        .collect())
}

/// The recipient's message among `candidates`: the one with its text, or else the only one
/// there is (a provider may store a text it re-encoded); none if that is still ambiguous.
pub fn choose(candidates: &[Candidate]) -> Option<String> {
    let same: Vec<&Candidate> = candidates.iter().filter(|c| c.same_text).collect();
    match (same.as_slice(), candidates) {
        ([one], _) => Some(one.sid.clone()),
        ([], [only]) => Some(only.sid.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(sid: &str, same_text: bool) -> Candidate {
        Candidate {
            sid: sid.into(),
            same_text,
        }
    }

    #[test]
    fn the_message_with_the_text_or_the_only_one() {
        assert_eq!(choose(&[]), None);
        assert_eq!(choose(&[c("a", false), c("b", true)]), Some("b".into()));
        assert_eq!(choose(&[c("a", false)]), Some("a".into()));
        assert_eq!(choose(&[c("a", false), c("b", false)]), None);
        assert_eq!(choose(&[c("a", true), c("b", true)]), None);
    }
}
