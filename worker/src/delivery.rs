//! One delivery, from decode to ack: the per-message path. A delivery (one AMQP message)
//! carries one or more dispatches of one lane; each goes this path on its own.
//!
//! decode → room under the provider's in-flight cap → begin (lease, batched) → *ack once
//! every dispatch of the delivery is leased or done* → [look up an earlier request whose
//! outcome is unknown] → provider call (with its timeout; holding a line if it is a call; on
//! a send slot if the provider is rate-limited) → decide → record (batched).
//!
//! A leased recipient is `sending`: should this worker die, the sweeper takes it back when
//! the lease ends (as `unknown`, if its request may have gone), and a redelivery of its
//! message would be acked unsent. So the delivery is acked once its dispatches are leased,
//! not once they are answered: a batch does not hold its prefetch slot until its slowest
//! request is back (with an exponential latency of mean 200 ms, a batch of 20 waited 3.6
//! times the mean for its slowest, and one worker sent half as much). Room under the cap is
//! taken before the lease, so a recipient is never `sending` while it waits for room, and the
//! prefetch bounds only the deliveries that wait for it. A delivery handed back (the worker
//! stopping while some of its recipients wait for room) is acked unsent for those already
//! leased when it comes back.

use crate::attempts::{self, Begun, Dispatch, Outcome, UnknownAttempt};
use crate::breaker::{Admission, Breakers, Health};
use crate::in_flight::InFlight;
use crate::live_calls;
use crate::on_time::OnTime;
use crate::outcome::{self, CallResult, Decision};
use crate::pacing::{self, Pacer, Reservation};
use crate::provider_call;
use crate::providers::{Provider, Providers};
use crate::recheck::{self, Recheck};
use crate::reconcile::{self, Silence, Verdict};
use futures::future::join_all;
use herald_shared::batch::Batcher;
use herald_shared::domain::UnknownOutcome;
use herald_shared::ops::metrics::PACING_SLOTS;
use herald_shared::queue::message::{self, DispatchMessage};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// What every delivery task shares.
#[derive(Clone)]
pub struct Context {
    pub pool: sqlx::PgPool,
    pub begin: Batcher<Dispatch, Option<Begun>>,
    pub record: Batcher<Outcome, bool>,
    pub providers: Providers,
    pub pacer: Pacer,
    pub on_time: OnTime,
    pub recheck: Recheck,
    pub in_flight: InFlight,
    pub breakers: Breakers,
    /// The HTTP clients for provider requests (see [`crate::egress`]).
    pub egress: crate::egress::Egress,
    /// The part of a lease beyond the provider's timeout (see the worker's config).
    pub lease_grace: Duration,
    /// Cancelled when the worker begins to stop: deliveries still waiting for room go back
    /// to the queue.
    pub stopping: CancellationToken,
    /// Outcomes answered but not yet written (as many as the worker's prefetch): an
    /// outcome that finds none free keeps its room under the provider's cap until it does,
    /// so that while the outcome statements fall behind (a contended or slow database)
    /// no more leases are taken and requests made, rather than answered work piling up in
    /// memory, to be lost with the process and looked up again after its leases run out.
    pub unwritten: Arc<tokio::sync::Semaphore>,
}

/// Kept between the latest start of a request and the end of its lease's grace (half the
/// grace where that is shorter, so that a short grace still leaves time to send).
const LEASE_MARGIN: Duration = Duration::from_secs(1);
/// How long after its lease was asked for a recipient's request may still start: the
/// lease's grace less a margin. Reading the provider's settings, a lookup and waiting for a
/// send slot must end by then.
fn send_window(lease_grace: Duration) -> Duration {
    lease_grace - LEASE_MARGIN.min(lease_grace / 2)
}

/// How long a call waits for a free line before its recipient goes back to wait.
const NO_LINE_DELAY: Duration = Duration::from_secs(1);
/// How long to wait before asking again when a reconciliation lookup failed.
const LOOKUP_RETRY: Duration = Duration::from_secs(30);

/// How a delivery ends, decided by each of its dispatches once it is taken (leased) or done
/// without a request; the delivery is settled by the least finished of them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Settle {
    /// Leased (this worker, or the sweeper, answers for it now) or not current: acked.
    Ack,
    /// Back to the queue (the worker is stopping before its lease was taken, or its cap for
    /// the provider was idled: `InFlight::idle`): nacked with requeue. Its dispatches already leased are acked unsent when it comes back (each
    /// hand-back counts towards the queue's delivery limit, like any redelivery).
    Requeue(String),
    /// Left unacked (a dispatch ended without saying how): it goes back to the queue with
    /// the channel.
    Hold,
}

pub async fn handle(ctx: Context, delivery: Delivery) {
    let messages = match message::decode_batch(&delivery.data) {
        Ok(messages) => messages,
        Err(error) => {
            tracing::error!(%error, delivery_tag = delivery.delivery_tag, "undecodable message; dead-lettering it");
            settle(delivery.reject(BasicRejectOptions { requeue: false })).await;
            return;
        }
    };
    let redelivered = delivery.redelivered;
    // The dispatches of one AMQP message go their own ways (each its room under the cap, its
    // lease, its request, its outcome); the message is settled once each is leased or done.
    let (takers, taken): (Vec<_>, Vec<_>) = messages.iter().map(|_| oneshot::channel()).unzip();
    let work = join_all(messages.into_iter().zip(takers).map(|(message, taker)| {
        let span = tracing::info_span!(
            "delivery",
            tenant_id = %message.tenant_id,
            campaign_id = %message.campaign_id,
            recipient_id = message.recipient_id,
            seq = message.seq,
        );
        tracing::Instrument::instrument(process(ctx.clone(), message, redelivered, taker), span)
    }));
    let settling = async move {
        let settled = join_all(taken)
            .await
            .into_iter()
            .map(|taken| taken.unwrap_or(Settle::Hold))
            .max();
        match settled {
            Some(Settle::Ack) | None => settle(delivery.ack(BasicAckOptions::default())).await,
            Some(Settle::Requeue(why)) => requeue(delivery, &why).await,
            Some(Settle::Hold) => {}
        }
    };
    // The task lasts until every request is answered and recorded: a worker that stops
    // drains them.
    futures::future::join(work, settling).await;
}

/// One dispatch's path; `taken` says how its delivery may be settled, as soon as that is
/// known (leased, or done without a request).
async fn process(
    ctx: Context,
    message: DispatchMessage,
    redelivered: bool,
    taken: oneshot::Sender<Settle>,
) {
    let dispatch = Dispatch::new(message.recipient_id, message.seq, message.provider_id);
    let received = Instant::now();
    // Room first: the recipient stays `queued` (and its message unacked) while it waits, so
    // a worker that dies meanwhile hands it on whole.
    let permit = tokio::select! {
        // A stopping worker takes no more leases, even where room is free.
        biased;
        () = ctx.stopping.cancelled() => {
            let _ = taken.send(Settle::Requeue("the worker is stopping".into()));
            return;
        }
        permit = ctx.in_flight.acquire(message.provider_id) => match permit {
            Some(permit) => permit,
            // No room here for as long as this worker's cap stays at zero: another worker's.
            None => {
                let _ = taken.send(Settle::Requeue("no room on this worker: its cap is idle".into()));
                return;
            }
        },
    };
    let roomed = Instant::now();
    step("room", received, roomed);
    let lease = match ctx.begin.call(dispatch).await {
        Ok(Some(lease)) => lease,
        Ok(None) => {
            // Finished, re-dispatched, paused, cancelled or suppressed: never a second send.
            tracing::debug!(redelivered, "message no longer current; acked unsent");
            let _ = taken.send(Settle::Ack);
            return;
        }
        // The batcher's task is gone (it lives as long as the worker): nothing was leased.
        Err(stopped) => {
            let _ = taken.send(Settle::Requeue(stopped.to_string()));
            return;
        }
    };
    let leased_at = Instant::now();
    step("lease", roomed, leased_at);
    // `sending` now: the message has done its work (see the module's note).
    let _ = taken.send(Settle::Ack);

    let attempt = lease.attempts;
    let (decision, through) = match ctx
        .providers
        .get_at_least(message.provider_id, lease.provider_revision)
        .await
    {
        // Nothing before the request may outlast the lease (reading the provider's settings
        // here, a lookup, a send slot): past it the sweeper takes the recipient back, and a
        // request sent then would race its judgement. Missing the deadline hands the
        // recipient back. The lease is timed by the database from its statement, which may
        // have run long before its answer came (a network that held the answer back): the
        // deadline counts from when the lease was asked for, which is earlier still.
        Ok(provider) => {
            let window = Window {
                lease_asked: roomed,
                deadline: roomed + send_window(ctx.lease_grace),
            };
            attempt_send(&ctx, &provider, &message, lease, window).await
        }
        Err(error) => {
            // Without its provider's policy the attempt cannot be made; nothing was sent.
            (error.wait(Duration::from_secs(30)), message.provider_id)
        }
    };
    // The room is for the request; the outcome's write waits for its batch without it, once
    // it has its place among those waiting. The semaphore is never closed.
    let writing = ctx.unwritten.clone().acquire_owned().await.ok();
    drop(permit);
    match &decision {
        Decision::Sent { .. } => tracing::debug!(attempt, "sent"),
        Decision::Found { via, .. } => {
            tracing::info!(attempt, provider_id = %via, "an earlier request had sent it")
        }
        Decision::Retry { error, delay } => {
            tracing::info!(attempt, %error, ?delay, "transient failure; will retry")
        }
        Decision::Resend { error, delay } => tracing::info!(
            attempt,
            provider_id = %through,
            %error,
            ?delay,
            "answer lost; will ask the same provider again with the same key"
        ),
        Decision::Failed { error } => tracing::info!(attempt, %error, "failed"),
        Decision::OptedOut { error } => tracing::info!(
            attempt,
            %error,
            "failed: the recipient opted out; its address goes on the suppression list"
        ),
        Decision::Expired => tracing::info!(attempt, "campaign expired before sending"),
        Decision::Deferred { error, delay } | Decision::Postponed { error, delay } => {
            tracing::debug!(%error, ?delay, "recipient waits; no attempt spent")
        }
        Decision::Unknown { error, window } => {
            tracing::info!(attempt, %error, ?window, "outcome unknown; waiting for a receipt")
        }
        Decision::Halted { error, .. } => tracing::warn!(
            provider_id = %through,
            %error,
            "the provider refused the account or answered a redirect; pausing the campaign"
        ),
        Decision::Throttled { error, delay } => {
            tracing::info!(attempt, %error, ?delay, "provider throttled us; slowing it down");
            if let Err(error) = ctx.pacer.throttled(through, Some(*delay)).await {
                tracing::warn!(%error, "could not record the throttle");
            }
        }
    }

    let answered = Instant::now();
    step("request", leased_at, answered);
    let label = decision.metric_label();
    let outcome = attempts::outcome(dispatch, through, &decision);
    let provider_id = outcome.provider;
    match ctx.record.call(outcome).await {
        Ok(gave_up) => {
            step("outcome", answered, Instant::now());
            let label = if gave_up {
                tracing::warn!(
                    attempt,
                    "put off longer than HERALD_WORKER_MAX_DEFERRAL_S with no attempt spent; failed"
                );
                "failed"
            } else {
                label
            };
            // Counted once written: the counters agree with the database.
            herald_shared::ops::metrics::message(
                &message.tenant_id,
                &message.campaign_id,
                &provider_id,
                label,
            );
        }
        // The batcher's task is gone: the recipient is still `sending`, which the sweeper
        // judges when the lease runs out.
        Err(stopped) => tracing::warn!(%stopped, "the outcome cannot be written"),
    }
    drop(writing);
}

/// Records how long a delivery spent in one step (see
/// [`WORKER_DELIVERY_STEP`](herald_shared::ops::metrics::WORKER_DELIVERY_STEP)).
fn step(step: &'static str, from: Instant, to: Instant) {
    metrics::histogram!(herald_shared::ops::metrics::WORKER_DELIVERY_STEP, "step" => step)
        .record(to.saturating_duration_since(from).as_secs_f64());
}

/// When a leased recipient's request may start.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// When the lease was asked for, before the database judged the campaign: a request
    /// leaving well after it asks whether its campaign may still send ([`crate::recheck`]).
    lease_asked: Instant,
    /// The latest start, the end of the lease less a margin.
    deadline: Instant,
}

/// The attempt, under the in-flight permit the caller holds: unless the campaign has
/// expired meanwhile, an earlier request turns out to have been sent, the provider's breaker
/// holds requests back or (a call) no line is free. Answers the decision and the provider
/// it concerns: the dispatch's, or the one an earlier request whose answer was lost went
/// to, when only that one can be asked again (see [`settle_unknown`]).
async fn attempt_send(
    ctx: &Context,
    provider: &Arc<Provider>,
    message: &DispatchMessage,
    lease: Begun,
    window: Window,
) -> (Decision, Uuid) {
    let deadline = window.deadline;
    if Instant::now() >= deadline {
        return (too_late(), provider.id);
    }
    // An earlier request that may have been sent is looked up first, expired or not: if it
    // was sent, the recipient was sent, not expired.
    let through = match lease.unknown {
        Some(unknown) => {
            match settle_unknown(ctx, provider, message, lease.attempts, unknown, deadline).await {
                Settled::Decided(decision) => return (decision, provider.id),
                Settled::SendThrough(through) => through,
            }
        }
        None => provider.clone(),
    };
    // The lease checked the expiry; reading the provider's settings (and a lookup) may have
    // taken a while since, so it is checked again at the last moment. (A send slot comes
    // at most a few seconds later.)
    if message
        .expires_at
        .is_some_and(|at| at <= chrono::Utc::now())
    {
        return (Decision::Expired, through.id);
    }
    let decision = request(ctx, &through, message, lease, window).await;
    (decision, through.id)
}

/// The request itself, through `provider`.
async fn request(
    ctx: &Context,
    provider: &Arc<Provider>,
    message: &DispatchMessage,
    lease: Begun,
    window: Window,
) -> Decision {
    let probe = match ctx.breakers.admit(provider.id) {
        Admission::Wait(until) => return deferred(until),
        admission => admission == Admission::Probe,
    };
    if live_calls::is_call(provider, message) {
        let line = live_calls::take(&ctx.pool, provider, message).await;
        if !matches!(line, Ok(true)) {
            if probe {
                ctx.breakers.probe_not_sent(provider.id);
            }
            let error = match line {
                Err(error) => format!("cannot take a line: {error}"),
                _ => "every line of the provider or the tenant is busy".to_owned(),
            };
            return Decision::Postponed {
                error,
                delay: NO_LINE_DELAY,
            };
        }
    }
    let may_leave = match provider.pacing {
        None => unpaced_may_leave(ctx, message, window).await,
        Some(spacing) => on_a_slot(ctx, provider, message, spacing, window).await,
    };
    let result = match may_leave {
        Ok(Leave::Now) => provider_call::send(&ctx.egress, provider, message).await,
        Ok(Leave::Sent(result)) => result,
        Err(instead) => {
            if probe {
                ctx.breakers.probe_not_sent(provider.id);
            }
            return instead;
        }
    };
    let health = result.health();
    ctx.breakers.record(provider.id, health, probe).await;
    match ctx.breakers.open_until(provider.id) {
        // Failing while the provider is known to be down says nothing about the recipient:
        // it waits, its attempt not counted. Not so a request that may have been sent: that
        // one waits for the truth like any other; nor a refused account, which must pause
        // the campaign whatever the breaker says.
        Some(until)
            if health == Health::Failing
                && !matches!(
                    result,
                    CallResult::Unknown { .. }
                        | CallResult::Misconfigured { .. }
                        | CallResult::Redirected { .. }
                ) =>
        {
            deferred(until)
        }
        _ => outcome::decide(
            result,
            lease.attempts,
            &provider.policy,
            rand::random::<f64>(),
        ),
    }
}

/// What became of an earlier request whose answer was lost, for the attempt at hand.
enum Settled {
    /// Decided without a new request: sent after all, failed, or try again later.
    Decided(Decision),
    /// Send again now, through this provider.
    SendThrough(Arc<Provider>),
}

/// An earlier request of this recipient may have been sent and no receipt said so within
/// the provider's window (or its provider deduplicates and was asked again at once). Asks
/// the provider it went to (which may not be the one this dispatch goes to: an overflow)
/// where it can tell, and applies that provider's policy. A provider that deduplicates by
/// key (`unknown_outcome = retry`) and cannot be asked is sent the request again itself,
/// whichever lane this dispatch came through: only it knows the key, and another provider
/// (a retry routed to the overflow while its breaker was open) would send a second message.
/// Its lost attempt is kept until an answer comes, so that a lease that runs out (the
/// lease names this dispatch's provider) or a resend that does not get through still
/// leads back to it.
async fn settle_unknown(
    ctx: &Context,
    current: &Arc<Provider>,
    message: &DispatchMessage,
    attempts: u32,
    unknown: UnknownAttempt,
    deadline: Instant,
) -> Settled {
    let earlier = if unknown.via == current.id {
        current.clone()
    } else {
        match ctx.providers.get(unknown.via).await {
            Ok(provider) => provider,
            Err(error) => {
                return Settled::Decided(error.wait(LOOKUP_RETRY));
            }
        }
    };
    let policy = &earlier.policy;
    let asks = reconcile::can_look_up(&earlier, message);
    // A lookup is a request like a send, and goes through the provider's breaker as one:
    // it waits while the breaker is open, may be the probe of a half-open one, and what it
    // gets (or does not) counts like a send's answer. Lookups alone (lost answers due
    // together, at a provider that is down) so open the breaker rather than each wait for
    // its own timeout. Where nothing is asked, a provider known to be down is not sent to
    // again either.
    let probe = if asks {
        match ctx.breakers.admit(earlier.id) {
            Admission::Wait(until) => return Settled::Decided(deferred(until)),
            admission => admission == Admission::Probe,
        }
    } else {
        if let Some(until) = ctx.breakers.open_until(earlier.id) {
            return Settled::Decided(deferred(until));
        }
        false
    };
    // A lookup is a request like a send, and a provider's rate limit counts both (Twilio's
    // are the account's): it waits for a send slot of its own. Unpaced, the lookups of many
    // lost answers whose window ended together went out at once, were refused 429 and
    // crowded out the sends.
    if let Some(spacing) = earlier.pacing
        && asks
        && !on_a_lookup_slot(ctx, &earlier, spacing, deadline).await
    {
        if probe {
            ctx.breakers.probe_not_sent(earlier.id);
        }
        return Settled::Decided(too_late());
    }
    // The lookup may take the lease up to its end less the margin (`deadline` is the latest
    // start of a request that may last the provider's timeout); a new request is then made
    // only if there is still time for it (below).
    let looked_up = tokio::time::timeout_at(
        (deadline + current.timeout).into(),
        reconcile::look_up(
            &ctx.egress,
            &ctx.pool,
            &earlier,
            message,
            unknown.since,
            ctx.lease_grace,
        ),
    )
    .await
    .unwrap_or_else(|_| {
        Err(reconcile::LookupFailed::no_answer(
            "the lookup did not answer in time".into(),
        ))
    });
    if asks {
        let health = match &looked_up {
            Ok(_) => Some(Health::Up),
            Err(failed) => failed.health,
        };
        match health {
            Some(health) => {
                ctx.breakers.record(earlier.id, health, probe).await;
            }
            None if probe => ctx.breakers.probe_not_sent(earlier.id),
            None => {}
        }
    }
    let verdict = match looked_up {
        Ok(verdict) => verdict,
        // A provider that did not answer, or answered that it is failing: the recipient
        // waits, no attempt spent (a provider that is down costs no recipient).
        Err(failed) if failed.passing => {
            if let Some(retry_after) = failed.throttled {
                // As a send's 429 does: the fleet slows down to the provider.
                if let Err(error) = ctx.pacer.throttled(earlier.id, retry_after).await {
                    tracing::warn!(%error, "could not record the throttle");
                }
            }
            return Settled::Decided(Decision::Deferred {
                error: format!(
                    "cannot tell yet whether an earlier request was sent: {}",
                    failed.reason
                ),
                delay: LOOKUP_RETRY,
            });
        }
        // Otherwise asking costs an attempt, so a lookup that keeps failing the same way
        // (revoked credentials, an endpoint without the list) ends the recipient rather
        // than loop for ever.
        Err(failed) => {
            let error = format!(
                "cannot tell whether an earlier request was sent: {}",
                failed.reason
            );
            return Settled::Decided(if policy.retry.allows_another(attempts) {
                Decision::Retry {
                    error,
                    delay: policy.retry.delay(attempts, rand::random::<f64>()),
                }
            } else {
                Decision::Failed { error }
            });
        }
    };
    tracing::info!(
        ?verdict,
        "looked up an earlier request whose outcome was unknown"
    );
    let cannot_tell = verdict == Verdict::CannotTell;
    match verdict {
        Verdict::Sent(provider_message_id) => {
            return Settled::Decided(Decision::Found {
                provider_message_id: Some(provider_message_id),
                via: earlier.id,
            });
        }
        Verdict::SentUnidentified { .. } => {
            return Settled::Decided(Decision::Found {
                provider_message_id: None,
                via: earlier.id,
            });
        }
        Verdict::Ambiguous { candidates } => {
            return Settled::Decided(Decision::Failed {
                error: format!(
                    "an earlier request may have been sent: the provider holds {candidates} \
                     message(s) to this address from that attempt's minutes, none with this text, \
                     and whether one is this one cannot be told; not sent again"
                ),
            });
        }
        Verdict::NotFound | Verdict::CannotTell => {}
    }
    if policy.unknown == UnknownOutcome::Fail {
        return Settled::Decided(Decision::Failed {
            error: "an earlier request may have been sent and no receipt came within the \
                    provider's window; not sent again (unknown_outcome = fail)"
                .into(),
        });
    }
    if attempts > policy.retry.max_attempts {
        return Settled::Decided(Decision::Failed {
            error: format!(
                "the outcome of attempt {} is unknown and no attempts are left",
                attempts - 1
            ),
        });
    }
    // A request asked again under its key long after (a campaign paused over a weekend)
    // would meet a provider that may have forgotten the key, and be sent as a new message.
    if cannot_tell
        && policy.unknown == UnknownOutcome::Retry
        && !reconcile::key_still_kept(unknown.since, chrono::Utc::now())
    {
        return Settled::Decided(Decision::Failed {
            error: format!(
                "an earlier request may have been sent (at {}), too long ago for its provider \
                 to be trusted to still know its idempotency key; not sent again",
                unknown.since.format("%Y-%m-%d %H:%M:%S UTC")
            ),
        });
    }
    // A provider that cannot be asked has only its receipts to say what became of the
    // request, and their silence means "not sent" only once they are heard of later
    // messages: a receiver that was down, or a webhook the provider retries, would
    // otherwise read as "not sent", and a second message go out.
    if cannot_tell
        && policy.unknown == UnknownOutcome::AwaitReceipt
        && let Some(waiting) = silence(ctx, &earlier, unknown).await
    {
        return waiting;
    }
    // The lookup took time from the lease: a request started past this point could outlive
    // it, and the sweeper would judge the recipient while it is in flight. What it found is
    // kept (below, as before a request), so that the next lease sends without asking again.
    if Instant::now() >= deadline {
        if !(cannot_tell && policy.unknown == UnknownOutcome::Retry) {
            let _ = herald_shared::db::within(
                herald_store::recipients::reconcile::rule_out_earlier_attempt(
                    &ctx.pool,
                    message.recipient_id,
                    message.seq,
                ),
            )
            .await;
        }
        return Settled::Decided(Decision::Postponed {
            error: "the lookup took the time left to send".into(),
            delay: Duration::ZERO,
        });
    }
    // Asked again with the same key, at the provider that knows it; the earlier attempt
    // stays the one to ask again (not ruled out): a resend that does not get through (a 503,
    // no line, a breaker) and is routed elsewhere later must still go there.
    if cannot_tell && policy.unknown == UnknownOutcome::Retry {
        return Settled::SendThrough(earlier);
    }
    // Recorded before the new request, so that a lost answer to it (or this worker's death
    // during it) is looked up where and when this request went, not the earlier one.
    let ruled_out = herald_shared::db::within(
        herald_store::recipients::reconcile::rule_out_earlier_attempt(
            &ctx.pool,
            message.recipient_id,
            message.seq,
        ),
    );
    match ruled_out.await {
        Ok(true) => Settled::SendThrough(current.clone()),
        // The lease is no longer this dispatch's (a receipt settled the recipient meanwhile,
        // or it was taken back), or the message's own expiry passed (its address erased):
        // nothing is sent, and the wait is recorded only if the row is still this
        // dispatch's (the retry it becomes ends `expired`).
        Ok(false) => Settled::Decided(Decision::Postponed {
            error: "the lease was lost before sending again".into(),
            delay: Duration::ZERO,
        }),
        Err(error) => Settled::Decided(Decision::Postponed {
            error: format!("cannot record the lookup's answer before sending again: {error}"),
            delay: LOOKUP_RETRY,
        }),
    }
}

/// What the receipts of `earlier`, a provider that cannot be asked, say of its request
/// whose answer was lost (`unknown`): `None` to send again (it has reported on a later
/// message, never on this one), else the recipient waits or is given up on. Their silence
/// means "not sent" only once they are heard of later messages: a receiver that was down,
/// or a webhook the provider retries, would otherwise read as "not sent", and a second
/// message go out.
async fn silence(ctx: &Context, earlier: &Provider, unknown: UnknownAttempt) -> Option<Settled> {
    // `since` is when the attempt began: its request may have gone out as late as the
    // lease allowed, and a message sent before it is no later message.
    let receipts = herald_shared::db::within(herald_store::recipients::reconcile::receipts_since(
        &ctx.pool,
        earlier.id,
        unknown.since,
        earlier.timeout + ctx.lease_grace + reconcile::REPORT_MARGIN,
    ))
    .await;
    // Both the wait and `since` are the database's clock's: a worker's clock ahead of it
    // would give up on the recipient early.
    let waited = receipts.as_ref().map_or(Duration::ZERO, |r| r.waited);
    let decision = match receipts.map(|r| {
        reconcile::after_silence(
            r.reported_on_later,
            r.refused_since || r.parked_since,
            r.waited,
            earlier.policy.window,
        )
    }) {
        Ok(Silence::SendAgain) => return None,
        Ok(Silence::Wait(delay)) => Decision::Postponed {
            error: "no receipt for an earlier request, and its provider's receipts may be \
                    held up (none yet for any later message, one of its webhooks refused \
                    since, which it sends again, or one of its receipts since matching no \
                    message Herald knows); not sent again until they are heard"
                .into(),
            delay,
        },
        Ok(Silence::GiveUp) => Decision::Failed {
            error: format!(
                "an earlier request may have been sent: its provider cannot be asked, \
                 and for {:?} ({} windows, at least {} minutes) its receipts said nothing \
                 that rules it out (none for any later message, one of its webhooks \
                 refused since the request, or one of its receipts since matching no message \
                 Herald knows); not sent again",
                waited,
                reconcile::SILENT_WINDOWS,
                reconcile::SILENT_AT_LEAST.as_secs() / 60
            ),
        },
        Err(error) => Decision::Postponed {
            error: format!("cannot read the provider's receipts now: {error}"),
            delay: LOOKUP_RETRY,
        },
    };
    Some(Settled::Decided(decision))
}

/// How a request that may be made leaves.
enum Leave {
    /// Now, from the caller.
    Now,
    /// Already made, on its send slot.
    Sent(CallResult),
}

/// An unpaced request's last checks before it leaves; `Err` with what it gets instead.
async fn unpaced_may_leave(
    ctx: &Context,
    message: &DispatchMessage,
    window: Window,
) -> Result<Leave, Decision> {
    // Taking a line, or the provider's settings read before, may have taken the time left
    // (a database that stopped answering): a request started past the deadline could
    // outlive the lease, and be sent again by another worker meanwhile.
    if Instant::now() >= window.deadline {
        return Err(too_late());
    }
    if recheck::must_ask(window.lease_asked, Instant::now()) {
        if let Some(instead) = ctx
            .recheck
            .ask(message.campaign_id, window.deadline)
            .await
            .instead()
        {
            return Err(instead);
        }
        if Instant::now() >= window.deadline {
            return Err(too_late());
        }
    }
    Ok(Leave::Now)
}

/// A rate-limited provider's request, made on a send slot: reserved only now, with the
/// lease held, so that nothing but the wait stands between reservation and slot (reserved
/// before the lease, slots were missed whenever the lease statement took longer than the
/// pacer's lead time). The slot must come before the window's deadline and the message's
/// expiry; a request whose slot lies well after its lease asks just before the slot whether
/// its campaign may still send. `Err` with what it gets instead; nothing was sent then.
async fn on_a_slot(
    ctx: &Context,
    provider: &Arc<Provider>,
    message: &DispatchMessage,
    spacing: Duration,
    window: Window,
) -> Result<Leave, Decision> {
    // On the database's clock, which judges the expiry; a request may leave up to
    // `on_time::LATE` after its slot.
    // The expiry, when it comes before the lease's deadline.
    let expiry = message
        .expires_at
        .map(|at| ctx.pacer.local_instant(at))
        .filter(|&at| at < window.deadline + crate::on_time::LATE);
    let deadline = expiry.map_or(window.deadline, |at| {
        at.checked_sub(crate::on_time::LATE).unwrap_or(at)
    });
    let no_slot_in_time = || match expiry {
        // Due again once expired, for the sweeper to end it so: released again before
        // then, it would find no slot either.
        Some(expiry) => Decision::Postponed {
            error: "no send slot before the expiry".into(),
            delay: expiry.saturating_duration_since(Instant::now()),
        },
        None => Decision::Postponed {
            error: pacing::TOO_LATE.into(),
            delay: Duration::ZERO,
        },
    };
    let reservation = Reservation {
        provider: provider.id,
        spacing,
        until: deadline,
    };
    loop {
        let slots = |result: &'static str| metrics::counter!(PACING_SLOTS, "provider" => provider.id.to_string(), "result" => result);
        let slot = match tokio::time::timeout_at(deadline.into(), ctx.pacer.slot(reservation)).await
        {
            Ok(Ok(slot)) if slot <= deadline => slot,
            Ok(Err(error)) if error != pacing::TOO_LATE => {
                // Not a busy provider but a failing reservation (the database, logged by the
                // pacer once a batch): counted apart, not taken for pace.
                slots("failed").increment(1);
                return Err(Decision::Postponed {
                    error,
                    delay: Duration::ZERO,
                });
            }
            _ => {
                slots("late").increment(1);
                return Err(no_slot_in_time());
            }
        };
        if recheck::must_ask(window.lease_asked, slot) {
            let ask_at = slot.checked_sub(recheck::ASK_BEFORE).unwrap_or(slot);
            tokio::time::sleep_until(ask_at.into()).await;
            let answer = ctx.recheck.ask(message.campaign_id, slot).await;
            let unused = answer.slot_result();
            if let Some(instead) = answer.instead() {
                slots(unused).increment(1);
                return Err(instead);
            }
        }
        slots("reserved").increment(1);
        if let Some(result) = ctx
            .on_time
            .send_at(slot, provider.clone(), message.clone())
            .await
        {
            return Ok(Leave::Sent(result));
        }
        slots("missed").increment(1);
        tracing::debug!("missed a send slot; taking another");
    }
}

/// Waits for a send slot of `provider` for a lookup, as a send does in [`on_a_slot`] (a slot
/// found already past is given up for another: used late, lookups would bunch up with the
/// sends behind them); `false` if none comes before `deadline`.
async fn on_a_lookup_slot(
    ctx: &Context,
    provider: &Provider,
    spacing: Duration,
    deadline: Instant,
) -> bool {
    let reservation = Reservation {
        provider: provider.id,
        spacing,
        until: deadline,
    };
    loop {
        let slot = match tokio::time::timeout_at(deadline.into(), ctx.pacer.slot(reservation)).await
        {
            Ok(Ok(slot)) if slot <= deadline => slot,
            _ => return false,
        };
        if Instant::now() <= slot + crate::on_time::LATE {
            tokio::time::sleep_until(slot.into()).await;
            return true;
        }
    }
}

/// The lease's time to start a request ran out before it could start; nothing was sent.
fn too_late() -> Decision {
    Decision::Postponed {
        error: "the lease ran out before the request could start".into(),
        delay: Duration::ZERO,
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
    settle(delivery.nack(BasicNackOptions {
        requeue: true,
        multiple: false,
    }))
    .await;
}

/// How long an ack, nack or reject may take to be handed to the connection. On a connection
/// that died (a broker cut off), lapin may never answer one: a delivery that waited on it
/// held its worker's drain to the drain timeout (seen once in CI).
const SETTLE_WITHIN: Duration = Duration::from_secs(5);

/// Acks on a channel that has since closed fail, or are never answered; the broker has
/// requeued those deliveries (or will, with the connection), and their redelivery is
/// recognised as finished work.
async fn settle(settling: impl std::future::Future<Output = Result<bool, lapin::Error>>) {
    match tokio::time::timeout(SETTLE_WITHIN, settling).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::debug!(%error, "could not settle delivery (channel closed?)"),
        Err(_) => tracing::debug!(
            waited = ?SETTLE_WITHIN,
            "the connection did not take the delivery's settlement (lost?); it returns to the queue with it"
        ),
    }
}
