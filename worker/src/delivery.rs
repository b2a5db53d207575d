//! One delivery, from decode to ack: the per-message path.
//!
//! decode → begin (lease, batched) → provider call (bounded by the provider's in-flight cap,
//! with its timeout; on a send slot if the provider is rate-limited) → decide → record
//! (batched) → ack. Acks only after the outcome is committed; if it cannot be recorded the
//! delivery goes back to the queue.

use crate::attempts::{Dispatch, Outcome};
use crate::batch::Batcher;
use crate::breaker::{Admission, Breakers, Health};
use crate::in_flight::InFlight;
use crate::on_time::OnTime;
use crate::outcome::{self, CallResult, Decision};
use crate::pacing::{Pacer, Reservation};
use crate::provider_call;
use crate::providers::{Provider, Providers};
use herald_shared::queue::message::DispatchMessage;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What every delivery task shares.
#[derive(Clone)]
pub struct Context {
    pub begin: Batcher<Dispatch, Result<Option<u32>, String>>,
    pub record: Batcher<Outcome, Result<(), String>>,
    pub providers: Providers,
    pub pacer: Pacer,
    pub on_time: OnTime,
    pub in_flight: InFlight,
    pub breakers: Breakers,
    pub http: reqwest::Client,
    /// The part of a lease beyond the provider's timeout (see the worker's config).
    pub lease_grace: Duration,
}

/// Kept between the latest start of a request and the end of its lease's grace.
const LEASE_MARGIN: Duration = Duration::from_secs(1);

pub async fn handle(ctx: Context, delivery: Delivery) {
    let message = match DispatchMessage::decode(&delivery.data) {
        Ok(message) => message,
        Err(error) => {
            tracing::error!(%error, delivery_tag = delivery.delivery_tag, "undecodable message; dead-lettering it");
            settle(delivery.reject(BasicRejectOptions { requeue: false }).await);
            return;
        }
    };
    let span = tracing::info_span!(
        "delivery",
        tenant_id = %message.tenant_id,
        campaign_id = %message.campaign_id,
        recipient_id = message.recipient_id,
        seq = message.seq,
    );
    tracing::Instrument::instrument(process(ctx, delivery, message), span).await;
}

async fn process(ctx: Context, delivery: Delivery, message: DispatchMessage) {
    let dispatch = Dispatch {
        recipient_id: message.recipient_id,
        seq: message.seq,
        provider: message.provider_id,
    };
    let attempt = match ctx.begin.call(dispatch).await {
        Ok(Ok(Some(attempt))) => attempt,
        Ok(Ok(None)) => {
            // Finished, re-dispatched, paused or cancelled: never a second send.
            tracing::debug!(
                redelivered = delivery.redelivered,
                "message no longer current; acked unsent"
            );
            settle(delivery.ack(BasicAckOptions::default()).await);
            return;
        }
        Ok(Err(error)) => {
            return requeue(delivery, &format!("cannot begin attempt: {error}")).await;
        }
        Err(stopped) => return requeue(delivery, &stopped.to_string()).await,
    };

    let leased_at = Instant::now();
    let decision = match ctx.providers.get(message.provider_id).await {
        Ok(provider) => {
            // Waiting for room under the in-flight cap or for a send slot must not outlast
            // the lease: past it the recipient may be dispatched again, and a request sent
            // then would be a second send. Missing the deadline hands the recipient back.
            let deadline = leased_at + ctx.lease_grace.saturating_sub(LEASE_MARGIN);
            let ready =
                tokio::time::timeout_at(deadline.into(), ctx.in_flight.acquire(provider.id)).await;
            match ready {
                Ok(_permit) => send(&ctx, &provider, &message, attempt, deadline).await,
                Err(_) => Decision::Deferred {
                    error: "no room to send before the lease ran out".into(),
                    delay: Duration::ZERO,
                },
            }
        }
        Err(error) => {
            // Without its provider's policy the attempt cannot be made; try again later.
            Decision::Retry {
                error: error.to_string(),
                delay: Duration::from_secs(30),
            }
        }
    };
    match &decision {
        Decision::Sent { .. } => tracing::debug!(attempt, "sent"),
        Decision::Retry { error, delay } => {
            tracing::info!(attempt, %error, ?delay, "transient failure; will retry")
        }
        Decision::Failed { error } => tracing::info!(attempt, %error, "failed"),
        Decision::Expired => tracing::info!(attempt, "campaign expired before sending"),
        Decision::Deferred { error, delay } => {
            tracing::debug!(%error, ?delay, "recipient waits; no attempt spent")
        }
        Decision::Throttled { error, delay } => {
            tracing::info!(attempt, %error, ?delay, "provider throttled us; slowing it down");
            if let Err(error) = ctx.pacer.throttled(message.provider_id, Some(*delay)).await {
                tracing::warn!(%error, "could not record the throttle");
            }
        }
    }

    let outcome = Outcome {
        dispatch,
        provider: message.provider_id,
        decision,
    };
    match ctx.record.call(outcome).await {
        Ok(Ok(())) => settle(delivery.ack(BasicAckOptions::default()).await),
        Ok(Err(error)) => requeue(delivery, &format!("cannot record outcome: {error}")).await,
        Err(stopped) => requeue(delivery, &stopped.to_string()).await,
    }
}

/// The request itself, under the in-flight permit the caller holds: unless the campaign
/// has expired meanwhile or the provider's breaker holds requests back.
async fn send(
    ctx: &Context,
    provider: &Arc<Provider>,
    message: &DispatchMessage,
    attempt: u32,
    deadline: Instant,
) -> Decision {
    // The wait for room under the in-flight cap can be long with a slow provider: check the
    // expiry again now, not only when the lease was taken. (A send slot comes at most a few
    // seconds later.)
    if message
        .expires_at
        .is_some_and(|at| at <= chrono::Utc::now())
    {
        return Decision::Expired;
    }
    let probe = match ctx.breakers.admit(provider.id) {
        Admission::Wait(until) => return deferred(until),
        admission => admission == Admission::Probe,
    };
    let result = match provider.pacing {
        None => provider_call::send(&ctx.http, provider, message).await,
        Some(spacing) => match on_a_slot(ctx, provider, message, spacing, deadline).await {
            Ok(result) => result,
            Err(error) => {
                if probe {
                    ctx.breakers.probe_not_sent(provider.id);
                }
                return Decision::Deferred {
                    error,
                    delay: Duration::ZERO,
                };
            }
        },
    };
    let health = result.health();
    ctx.breakers.record(provider.id, health, probe).await;
    match ctx.breakers.open_until(provider.id) {
        // Failing while the provider is known to be down says nothing about the recipient:
        // it waits, its attempt not counted.
        Some(until) if health == Health::Failing => deferred(until),
        _ => outcome::decide(result, attempt, &provider.retry, rand::random::<f64>()),
    }
}

/// A rate-limited provider's request, made on a send slot: reserved only now, with the
/// lease held, so that nothing but the wait stands between reservation and slot (reserved
/// before the lease, slots were missed whenever the lease statement took longer than the
/// pacer's lead time). The wait must end before `deadline`, the end of the lease less a
/// margin; an error means nothing was sent.
async fn on_a_slot(
    ctx: &Context,
    provider: &Arc<Provider>,
    message: &DispatchMessage,
    spacing: Duration,
    deadline: Instant,
) -> Result<CallResult, String> {
    let reservation = Reservation {
        provider: provider.id,
        spacing,
    };
    loop {
        let slot = tokio::time::timeout_at(deadline.into(), ctx.pacer.slot(reservation))
            .await
            .map_err(|_| "no send slot before the lease ran out".to_owned())??;
        if slot > deadline {
            return Err("no send slot before the lease ran out".into());
        }
        if let Some(result) = ctx
            .on_time
            .send_at(slot, provider.clone(), message.clone())
            .await
        {
            return Ok(result);
        }
        tracing::debug!("missed a send slot; taking another");
    }
}

/// The recipient waits for the provider's cool-down to end.
fn deferred(until: std::time::Instant) -> Decision {
    Decision::Deferred {
        error: "the provider is failing; its circuit breaker is open".into(),
        delay: until.saturating_duration_since(std::time::Instant::now()),
    }
}

/// Hands a delivery back to the queue, so another attempt (here or elsewhere) picks it up.
async fn requeue(delivery: Delivery, why: &str) {
    tracing::warn!(why, "returning delivery to the queue");
    // A short pause keeps a database outage from becoming a hot redelivery loop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    settle(
        delivery
            .nack(BasicNackOptions {
                requeue: true,
                multiple: false,
            })
            .await,
    );
}

/// Acks on a channel that has since closed fail; the broker has requeued those deliveries,
/// and their redelivery is recognised as finished work.
fn settle(result: Result<bool, lapin::Error>) {
    if let Err(error) = result {
        tracing::debug!(%error, "could not settle delivery (channel closed?)");
    }
}
