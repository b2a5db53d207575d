//! Posting transactional messages' status events to their tenants' webhooks.
//!
//! Every worker takes due events from the store (`herald_store::webhooks`: an outbox the
//! database fills in the transaction that changed each message), posts each signed with its
//! tenant's secret, and marks it delivered on a 2xx answer; any other answer, or none within
//! [`TIMEOUT`], posts it again later ([`RETRIES`]: for about a day, then it is abandoned).
//! At least once: a worker that dies mid-post leaves the event to be taken again after
//! [`HOLD`], and an endpoint whose answer was lost gets the same event (the same `id`) again.
//!
//! One tenant's endpoint cannot hold back another's: a worker posts at most [`PER_TENANT`]
//! events of a tenant at once, out of [`IN_FLIGHT`], and each round takes the oldest due
//! events of every tenant with a webhook, a few each. Webhook URLs are the tenant's: they
//! leave through the client that reaches only public addresses and the operator's allowed
//! networks, as tenants' providers do, and no redirect is followed.

use crate::egress::Egress;
use herald_shared::backoff::RetryPolicy;
use herald_shared::db::within;
use herald_shared::ops::metrics as metrics_names;
use herald_shared::sealed::Keyring;
use herald_shared::signature;
use herald_shared::status_event::{self, MessageStatus, StatusEvent};
use herald_store::webhooks::{self, DueEvent};
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
/// How often a worker looks for due events when the last look found fewer than it had room for.
const POLL: Duration = Duration::from_secs(1);
/// The most of an endpoint's answer read (it is only logged).
const ANSWER_KEPT: usize = 200;

/// When a failed post is tried again: after 1–2 s, doubling up to an hour, 30 posts in all
/// (about a day), then the event is abandoned.
pub const RETRIES: RetryPolicy = RetryPolicy {
    max_attempts: 30,
    base: Duration::from_secs(2),
    cap: Duration::from_secs(3600),
};

/// Posts due events until `shutdown` (events in flight then are posted again by whichever
/// worker takes them after [`HOLD`]).
pub async fn run(pool: PgPool, egress: Egress, keyring: Keyring, shutdown: CancellationToken) {
    let mut posts: JoinSet<Uuid> = JoinSet::new();
    let mut per_tenant: HashMap<Uuid, i32> = HashMap::new();
    let mut next_look = Instant::now();
    loop {
        if posts.len() < IN_FLIGHT && Instant::now() >= next_look {
            let room = IN_FLIGHT - posts.len();
            let busy: Vec<(Uuid, i32)> = per_tenant.iter().map(|(t, n)| (*t, *n)).collect();
            let taken = within(webhooks::take_due(
                &pool,
                room as i64,
                PER_TENANT,
                &busy,
                HOLD,
            ))
            .await;
            let found = match taken {
                Ok(events) => events,
                Err(error) => {
                    tracing::warn!(%error, "cannot take status events now");
                    Vec::new()
                }
            };
            next_look = if found.len() == room {
                Instant::now()
            } else {
                Instant::now() + POLL
            };
            for event in found {
                *per_tenant.entry(event.tenant_id).or_default() += 1;
                let (pool, egress, keyring) = (pool.clone(), egress.clone(), keyring.clone());
                let span = tracing::info_span!("status_event", tenant_id = %event.tenant_id,
                    message_id = %event.message_id, event_id = event.id, attempt = event.attempts);
                posts.spawn(
                    async move {
                        let tenant = event.tenant_id;
                        post(&pool, &egress, &keyring, event).await;
                        tenant
                    }
                    .instrument(span),
                );
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => {
                posts.shutdown().await;
                return;
            }
            Some(done) = posts.join_next() => {
                if let Ok(tenant) = done
                    && let Some(n) = per_tenant.get_mut(&tenant)
                {
                    *n -= 1;
                    if *n <= 0 {
                        per_tenant.remove(&tenant);
                    }
                }
            }
            () = tokio::time::sleep_until(next_look), if posts.len() < IN_FLIGHT => {}
        }
    }
}

/// The body of `event`'s post.
pub fn body(event: &DueEvent) -> Vec<u8> {
    let payload = StatusEvent {
        id: event.id,
        kind: status_event::MESSAGE_STATUS.to_owned(),
        occurred_at: event.occurred_at,
        message: MessageStatus {
            id: event.message_id,
            tenant_id: event.tenant_id,
            state: event.state.clone(),
            delivery_status: event.delivery_status.clone(),
            error: event.error.clone(),
            provider_message_id: event.provider_message_id.clone(),
        },
    };
    serde_json::to_vec(&payload).unwrap_or_default()
}

/// Posts `event` once and records how it went.
async fn post(pool: &PgPool, egress: &Egress, keyring: &Keyring, event: DueEvent) {
    let failure = match attempt(egress, keyring, &event).await {
        Ok(()) => {
            metrics::counter!(metrics_names::WEBHOOK_POSTS, "outcome" => "delivered").increment(1);
            if let Err(error) = within(webhooks::delivered(pool, event.id)).await {
                // Posted again after the hold: at least once.
                tracing::warn!(%error, "status event delivered, not recorded");
            }
            return;
        }
        Err(failure) => failure,
    };
    let attempts = u32::try_from(event.attempts).unwrap_or(u32::MAX);
    let retry_in = RETRIES
        .allows_another(attempts)
        .then(|| RETRIES.delay(attempts, rand::random::<f64>()));
    let outcome = if retry_in.is_some() {
        "failed"
    } else {
        "abandoned"
    };
    metrics::counter!(metrics_names::WEBHOOK_POSTS, "outcome" => outcome).increment(1);
    tracing::info!(%failure, outcome, "status event not delivered");
    if let Err(error) = within(webhooks::failed(pool, event.id, &failure, retry_in)).await {
        tracing::warn!(%error, "status event's failure not recorded");
    }
}

/// One post of `event`: `Err` says why it did not count as delivered.
async fn attempt(egress: &Egress, keyring: &Keyring, event: &DueEvent) -> Result<(), String> {
    let secret = keyring
        .open(event.tenant_id, &event.secret)
        .map_err(|error| format!("the webhook's secret cannot be opened: {error}"))?;
    let secret = secret
        .get("secret")
        .and_then(|s| s.as_str())
        .ok_or("the webhook's secret is missing")?
        .to_owned();
    let url = url::Url::parse(&event.url).map_err(|error| format!("not a URL: {error}"))?;
    let client = egress
        .for_tenant(&url)
        .map_err(|inside| inside.to_string())?;
    let body = body(event);
    let timestamp = chrono::Utc::now().timestamp();
    let answer = client
        .post(url)
        .timeout(TIMEOUT)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(
            signature::EVENT_SIGNATURE_HEADER,
            signature::event(&secret, timestamp, &body),
        )
        .body(body)
        .send()
        .await
        .map_err(|error| {
            crate::egress::refusal(&error).unwrap_or_else(|| {
                if error.is_timeout() {
                    format!("no answer within {} s", TIMEOUT.as_secs())
                } else if error.is_connect() {
                    format!("cannot connect: {error}")
                } else {
                    format!("request failed: {error}")
                }
            })
        })?;
    let status = answer.status();
    if status.is_success() {
        return Ok(());
    }
    // Only the start is kept: an endpoint's answer could be any size.
    let mut kept = Vec::new();
    let mut answer = answer;
    while kept.len() < ANSWER_KEPT
        && let Ok(Some(chunk)) = answer.chunk().await
    {
        kept.extend_from_slice(&chunk);
    }
    kept.truncate(ANSWER_KEPT);
    let text = String::from_utf8_lossy(&kept);
    Err(format!("answered {status}: {}", text.trim()))
}
