//! Posting transactional messages' status events to their tenants' webhooks.
//!
//! Every worker takes due events from the store (`herald_store::webhooks`: an outbox the
//! database fills in the transaction that changed each message), posts each signed with its
//! tenant's secret, and marks it delivered on a 2xx answer; any other answer, or none within
//! [`TIMEOUT`], posts it again later ([`RETRIES`]) until the event is [`GIVE_UP_AFTER`] old
//! (from when it happened, or was recovered: `POST …/webhook/recover`), then it is abandoned,
//! posted or not. At least once: a worker that dies mid-post leaves the event to be
//! taken again after [`HOLD`], and an endpoint whose answer was lost gets the same event (the
//! same `id`) again. Outcomes are written a round's worth at a time, each fenced by the
//! attempt it settles, so a late one changes nothing once another worker took the event.
//!
//! One tenant's endpoint cannot hold back another's: a worker posts at most [`PER_TENANT`]
//! events of a tenant at once, out of [`IN_FLIGHT`], and each round takes the oldest due
//! events of every tenant with events waiting, a few each. An endpoint whose posts are
//! answered only 5xx, 408 or 429, or not at all, is probed, not flooded: its events wait
//! ([`ENDPOINT_PAUSE`], growing with how long it has been failing), then one post goes, until
//! it answers as a working endpoint does ([`endpoint_by_answer`]); a dead endpoint costs the
//! fleet a post now and then, not a place per waiting event. Webhook URLs are the tenant's:
//! they leave through the client that reaches only public addresses and the operator's allowed
//! networks, as tenants' providers do, no redirect is followed, and no error logged or
//! stored names the URL (it may carry the tenant's own token).

use crate::egress::Egress;
use herald_shared::backoff::RetryPolicy;
use herald_shared::db::within;
use herald_shared::ops::metrics as metrics_names;
use herald_shared::sealed::Keyring;
use herald_shared::signature;
use herald_shared::status_event::{self, MessageStatus, StatusEvent, TestEvent};
use herald_store::webhooks::{self, DueEvent, Endpoint, Settlement};
use serde_json::Value;
use sqlx::PgPool;
use std::collections::HashMap;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

/// Posts one worker has in flight at once.
pub const IN_FLIGHT: usize = 64;
/// Of those, at most this many to one tenant's endpoint.
pub const PER_TENANT: i32 = 8;
/// How long an endpoint may take to answer.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a taken event is this worker's before another may take it (past [`TIMEOUT`]).
pub const HOLD: Duration = Duration::from_secs(60);
/// How old an event may get while its posts fail before it is given up.
pub const GIVE_UP_AFTER: chrono::TimeDelta = chrono::TimeDelta::hours(24);
/// How often a worker looks for due events when the last look found none.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How soon it looks again when the last look found some: a tenant's events go as fast as
/// its endpoint answers (up to [`PER_TENANT`] a look), not [`PER_TENANT`] a second.
const BUSY_POLL: Duration = Duration::from_millis(20);
/// The most of an endpoint's refusal read (it is only logged and shown).
const ANSWER_KEPT: usize = 200;
/// The most of an endpoint's 2xx answer read (and dropped) before its connection is reused.
const ANSWER_DRAINED: usize = 64 * 1024;
/// How long a failing endpoint's events wait before the next post to it (a probe): as long
/// again as it has been failing, at least the first and at most the second.
pub const ENDPOINT_PAUSE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(300));
/// How long a probe keeps the other workers from probing the same endpoint: past
/// [`TIMEOUT`], so that one probe at a time is in flight unless its worker died.
const PROBE_HOLD: Duration = Duration::from_secs(15);
/// How often a worker gives up the events a day old that are still waiting.
const STALE_LOOK: Duration = Duration::from_secs(10);
/// Events one statement gives up at most.
const STALE_BATCH: i64 = 10_000;

/// When a failed post is tried again: after 1–2 s, doubling (with jitter) up to an hour (a
/// post every 30 to 60 minutes once the event is about an hour old), until
/// [`GIVE_UP_AFTER`].
pub const RETRIES: RetryPolicy = RetryPolicy {
    max_attempts: u32::MAX,
    base: Duration::from_secs(2),
    cap: Duration::from_secs(3600),
};

/// Posts due events until `shutdown`, then lets the posts in flight finish (within
/// [`TIMEOUT`], and the worker's `drain` time) and records them.
pub async fn run(
    pool: PgPool,
    egress: Egress,
    keyring: Keyring,
    drain: Duration,
    shutdown: CancellationToken,
) {
    let mut posts: JoinSet<Settlement> = JoinSet::new();
    let mut tenants: HashMap<tokio::task::Id, Uuid> = HashMap::new();
    let mut per_tenant: HashMap<Uuid, i32> = HashMap::new();
    let mut settled: Vec<Settlement> = Vec::new();
    let mut next_look = Instant::now();
    let mut next_stale_look = Instant::now();
    while !shutdown.is_cancelled() {
        if !settled.is_empty() {
            record(&pool, &mut settled).await;
        }
        if Instant::now() >= next_stale_look {
            next_stale_look = Instant::now() + STALE_LOOK;
            give_up_stale(&pool).await;
        }
        if posts.len() < IN_FLIGHT && Instant::now() >= next_look {
            let room = IN_FLIGHT - posts.len();
            let busy: Vec<(Uuid, i32)> = per_tenant.iter().map(|(t, n)| (*t, *n)).collect();
            let taken = within(webhooks::take_due(
                &pool,
                room as i64,
                PER_TENANT,
                &busy,
                HOLD,
                PROBE_HOLD,
            ))
            .await;
            let found = taken.unwrap_or_else(|error| {
                tracing::warn!(%error, "cannot take status events now");
                Vec::new()
            });
            next_look = Instant::now()
                + if found.is_empty() {
                    IDLE_POLL
                } else {
                    BUSY_POLL
                };
            for event in found {
                let tenant = event.tenant_id;
                *per_tenant.entry(tenant).or_default() += 1;
                let (egress, keyring) = (egress.clone(), keyring.clone());
                let span = tracing::info_span!("status_event", tenant_id = %tenant,
                    message_id = event.message_id.map(tracing::field::display),
                    kind = %event.kind, event_id = %event.public_id, attempt = event.attempts);
                let task = posts
                    .spawn(async move { post(&egress, &keyring, event).await }.instrument(span));
                tenants.insert(task.id(), tenant);
            }
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(done) = posts.join_next_with_id() => {
                finished(done, &mut tenants, &mut per_tenant, &mut settled);
                // Every post ended by now, recorded in one statement.
                while let Some(done) = posts.try_join_next_with_id() {
                    finished(done, &mut tenants, &mut per_tenant, &mut settled);
                }
                // A place came free: its tenant's next events (they were left at the last
                // look, at its cap) go soon, not after an idle second.
                next_look = next_look.min(Instant::now() + BUSY_POLL);
            }
            () = tokio::time::sleep_until(next_look), if posts.len() < IN_FLIGHT => {}
        }
    }
    // Posts in flight may have reached their endpoints: let them end, so that their events
    // are not posted again by the next worker after the hold; and their outcomes written,
    // all within the worker's drain (its pool closes after).
    let deadline = Instant::now() + drain;
    let drained = tokio::time::timeout(drain.min(TIMEOUT + Duration::from_secs(1)), async {
        while let Some(done) = posts.join_next_with_id().await {
            finished(done, &mut tenants, &mut per_tenant, &mut settled);
        }
    })
    .await;
    if drained.is_err() {
        posts.shutdown().await;
    }
    if tokio::time::timeout_at(deadline, record(&pool, &mut settled))
        .await
        .is_err()
    {
        tracing::warn!(
            "the drain ended before status events' posts were recorded: they are posted again"
        );
    }
}

/// Gives up the events still waiting [`GIVE_UP_AFTER`] after they happened or were recovered
/// (a batch at a time while batches come back full, for a second at most).
async fn give_up_stale(pool: &PgPool) {
    let started = Instant::now();
    loop {
        let given_up = within(webhooks::abandon_stale(
            pool,
            GIVE_UP_AFTER.to_std().unwrap_or(Duration::MAX),
            STALE_BATCH,
        ))
        .await;
        match given_up {
            Ok(0) => return,
            Ok(n) => {
                metrics::counter!(metrics_names::WEBHOOK_POSTS, "outcome" => "abandoned")
                    .increment(n);
                tracing::info!(events = n, "status events a day old given up unposted");
                if n < STALE_BATCH as u64 || started.elapsed() >= Duration::from_secs(1) {
                    return;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot give up stale status events now");
                return;
            }
        }
    }
}

/// Writes the outcomes `settled` holds, and forgets them (one not written is posted again
/// after the hold: at least once).
async fn record(pool: &PgPool, settled: &mut Vec<Settlement>) {
    match within(webhooks::settle(pool, settled, ENDPOINT_PAUSE)).await {
        Ok(disabled) => {
            for tenant_id in disabled {
                tracing::warn!(
                    %tenant_id,
                    "status webhook disabled: its endpoint answered 410 Gone; \
                     nothing is posted to it until it is set again"
                );
            }
        }
        Err(error) => {
            tracing::warn!(%error, events = settled.len(), "cannot record status events' posts now");
        }
    }
    settled.clear();
}

/// A post ended (or its task did): its tenant has a place free, and its outcome waits to be
/// written.
fn finished(
    done: Result<(tokio::task::Id, Settlement), tokio::task::JoinError>,
    tenants: &mut HashMap<tokio::task::Id, Uuid>,
    per_tenant: &mut HashMap<Uuid, i32>,
    settled: &mut Vec<Settlement>,
) {
    let id = match done {
        Ok((id, settlement)) => {
            settled.push(settlement);
            id
        }
        // Its event is taken again after the hold.
        Err(error) => error.id(),
    };
    if let Some(tenant) = tenants.remove(&id)
        && let Some(n) = per_tenant.get_mut(&tenant)
    {
        *n -= 1;
        if *n <= 0 {
            per_tenant.remove(&tenant);
        }
    }
}

/// The body of `event`'s post.
pub fn body(event: &DueEvent) -> Result<Vec<u8>, String> {
    let message_id = match (event.kind.as_str(), event.message_id) {
        (status_event::WEBHOOK_TEST, _) => {
            let payload = TestEvent {
                id: event.public_id,
                kind: status_event::WEBHOOK_TEST.to_owned(),
                occurred_at: event.occurred_at,
                tenant_id: event.tenant_id,
            };
            return Ok(serde_json::to_vec(&payload).unwrap_or_default());
        }
        (status_event::MESSAGE_STATUS, Some(message_id)) => message_id,
        // The schema's check allows neither: a release newer than this worker's wrote it.
        (kind, _) => {
            return Err(format!(
                "an event of a kind this worker cannot post: {kind}"
            ));
        }
    };
    let payload = StatusEvent {
        id: event.public_id,
        kind: status_event::MESSAGE_STATUS.to_owned(),
        occurred_at: event.occurred_at,
        message: MessageStatus {
            id: message_id,
            tenant_id: event.tenant_id,
            state: event.state.clone(),
            delivery_status: event.delivery_status.clone(),
            last_error: event.last_error.clone(),
            delivery_error: event.delivery_error.clone(),
            provider_message_id: event.provider_message_id.clone(),
        },
    };
    Ok(serde_json::to_vec(&payload).unwrap_or_default())
}

/// Whether an event whose age counts from `aged_from` (when it happened, or was recovered)
/// and whose `attempts`-th post just failed is posted again, and when: `None` once it is
/// [`GIVE_UP_AFTER`] old.
pub fn retry_in(
    aged_from: chrono::DateTime<chrono::Utc>,
    attempts: i32,
    now: chrono::DateTime<chrono::Utc>,
    unit: f64,
) -> Option<Duration> {
    (now - aged_from < GIVE_UP_AFTER)
        .then(|| RETRIES.delay(u32::try_from(attempts).unwrap_or(1), unit))
}

/// What an endpoint's answer says of it: up when it answered as a working endpoint does
/// (a 2xx, or a refusal of this one event, which the event's own retries deal with), down
/// when it is failing or asks Herald to slow down (5xx, 408, 429), gone when it says it is
/// for good (410: its webhook is disabled until the tenant sets it again).
pub fn endpoint_by_answer(status: reqwest::StatusCode) -> Endpoint {
    if status == reqwest::StatusCode::GONE {
        Endpoint::Gone
    } else if status.is_server_error()
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
    {
        Endpoint::Down
    } else {
        Endpoint::Up
    }
}

/// Posts `event` once; how it went.
async fn post(egress: &Egress, keyring: &Keyring, event: DueEvent) -> Settlement {
    let (failure, endpoint) = match attempt(egress, keyring, &event).await {
        Ok(()) => {
            metrics::counter!(metrics_names::WEBHOOK_POSTS, "outcome" => "delivered").increment(1);
            (None, Endpoint::Up)
        }
        Err((failure, endpoint)) => {
            // A probe's event goes back among the others soon: the endpoint's pause spaces
            // the posts to it, and the event's own retries would otherwise grow through an
            // outage it was never posted in but as a probe.
            let attempts = if event.probe { 1 } else { event.tries };
            let retry = retry_in(
                event.aged_from,
                attempts,
                chrono::Utc::now(),
                rand::random::<f64>(),
            );
            let outcome = if retry.is_some() {
                "failed"
            } else {
                "abandoned"
            };
            metrics::counter!(metrics_names::WEBHOOK_POSTS, "outcome" => outcome).increment(1);
            tracing::info!(%failure, outcome, "status event not delivered");
            (Some((failure, retry)), endpoint)
        }
    };
    Settlement {
        id: event.id,
        attempts: event.attempts,
        failure,
        endpoint,
        webhook_version: event.webhook_version,
        probe: event.probe,
    }
}

/// A sealed secret's text.
fn secret(keyring: &Keyring, tenant: Uuid, stored: &Value) -> Result<String, String> {
    keyring
        .open(tenant, stored)
        .map_err(|error| format!("the webhook's secret cannot be opened: {error}"))?
        .get("secret")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| "the webhook's secret is missing".to_owned())
}

/// One post of `event`: `Err` says why it did not count as delivered, and what that says of
/// the endpoint.
async fn attempt(
    egress: &Egress,
    keyring: &Keyring,
    event: &DueEvent,
) -> Result<(), (String, Endpoint)> {
    // Herald's own side failed, before any post: nothing learnt of the endpoint.
    let unknown = |why: String| (why, Endpoint::Unknown);
    let mut secrets = vec![secret(keyring, event.tenant_id, &event.secret).map_err(unknown)?];
    // The replaced secret signs too while it may; one no key opens any more is left out.
    if let Some(previous) = &event.previous_secret
        && let Ok(previous) = secret(keyring, event.tenant_id, previous)
    {
        secrets.push(previous);
    }
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let url =
        url::Url::parse(&event.url).map_err(|error| unknown(format!("not a URL: {error}")))?;
    let client = egress
        .for_tenant(&url)
        .map_err(|inside| unknown(inside.to_string()))?;
    let body = body(event).map_err(unknown)?;
    let timestamp = chrono::Utc::now().timestamp();
    let answer = client
        .post(url)
        .timeout(TIMEOUT)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(
            signature::EVENT_SIGNATURE_HEADER,
            signature::event(&secrets, timestamp, &body),
        )
        .body(body)
        .send()
        .await
        .map_err(|error| {
            // An address the egress policy refuses is Herald's refusal, not the endpoint's.
            if let Some(refused) = crate::egress::refusal(&error) {
                return unknown(refused);
            }
            // Never the error's own text: it names the URL.
            let cause = crate::provider_call::without_url(&error);
            let why = if error.is_timeout() {
                format!("no answer within {} s", TIMEOUT.as_secs())
            } else if error.is_connect() {
                format!("cannot connect: {cause}")
            } else {
                format!("request failed: {cause}")
            };
            (why, Endpoint::Down)
        })?;
    let status = answer.status();
    let mut answer = answer;
    if status.is_success() {
        // Read to its end (a short one, as endpoints answer), so that its connection can
        // carry the next post rather than be closed; only so much of a long one.
        let mut read = 0;
        while read < ANSWER_DRAINED
            && let Ok(Some(chunk)) = answer.chunk().await
        {
            read += chunk.len();
        }
        return Ok(());
    }
    // Only the start is kept: an endpoint's answer could be any size.
    let mut kept = Vec::new();
    while kept.len() < ANSWER_KEPT
        && let Ok(Some(chunk)) = answer.chunk().await
    {
        kept.extend_from_slice(&chunk);
    }
    kept.truncate(ANSWER_KEPT);
    // Stored and shown: no NUL (PostgreSQL's text cannot hold one, and the outcome would go
    // unwritten) and no terminal escapes.
    let text = crate::adapters::printable(&String::from_utf8_lossy(&kept));
    Err((
        format!("answered {status}: {}", text.trim()),
        endpoint_by_answer(status),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeDelta, Utc};

    #[test]
    fn a_failed_post_is_tried_again_sooner_first_and_given_up_after_a_day() {
        let now = Utc::now();
        let first = retry_in(now, 1, now, 0.0).unwrap();
        assert_eq!(first, Duration::from_secs(1));
        assert!(retry_in(now, 1, now, 0.999).unwrap() < Duration::from_secs(2));
        // Capped at an hour, however many posts failed.
        let late = retry_in(now - TimeDelta::hours(20), 40, now, 0.999).unwrap();
        assert!(late <= Duration::from_secs(3600), "{late:?}");
        // A day old: given up.
        assert_eq!(retry_in(now - TimeDelta::hours(24), 3, now, 0.5), None);
    }

    #[test]
    fn an_endpoint_is_down_when_it_fails_or_asks_to_slow_down_gone_when_it_says_so() {
        use reqwest::StatusCode;
        for status in [
            StatusCode::OK,
            StatusCode::NO_CONTENT,
            StatusCode::BAD_REQUEST,
            StatusCode::UNAUTHORIZED,
            StatusCode::NOT_FOUND,
            StatusCode::FOUND,
        ] {
            assert_eq!(endpoint_by_answer(status), Endpoint::Up, "{status}");
        }
        assert_eq!(endpoint_by_answer(StatusCode::GONE), Endpoint::Gone);
        for status in [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::BAD_GATEWAY,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::REQUEST_TIMEOUT,
            StatusCode::TOO_MANY_REQUESTS,
        ] {
            assert_eq!(endpoint_by_answer(status), Endpoint::Down, "{status}");
        }
    }
}
