//! The worker's two writes around each provider call, batched.
//!
//! `begin` takes a lease on recipients (`queued → sending`, attempts + 1, `sent_via` = the
//! message's provider) only if the message still matches the row's `dispatch_seq` and the
//! campaign is running; anything else (finished, stale, re-dispatched) is answered `None` and
//! its message is acked unsent. Messages of a
//! paused campaign, or of one inside its quiet hours, hand their recipient back to `pending`
//! (the scheduler releases it again later, with no attempt spent); of a cancelled one to
//! `cancelled`; of one past its expiry to `expired`. So a message already in the queue when
//! a campaign is paused, reaches its quiet hours or expires is never sent.
//! `record` writes the outcome, only while the dispatch is still the recipient's (see [`record`]),
//! and pauses a campaign whose provider refused the account (see [`Decision::Halted`]).
//!
//! These statements must look recipients up by primary key, and the planner does not always
//! see it: a generic plan is blind to the array's size (it guesses 10 rows), and statistics
//! taken before a big campaign was loaded make walking that campaign's index look cheap
//! (measured: 22 ms per lease statement of 40 rows, 60 ms for 250, instead of about 2 ms).
//! So each is planned afresh for each batch (not a cached prepared statement) and reads the
//! rows through a lookup the planner cannot reorder.

use crate::outcome::Decision;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

/// One message's claim on a recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dispatch {
    pub recipient_id: i64,
    pub seq: i32,
    /// The provider the message goes to (the campaign's primary or its overflow): its
    /// timeout sizes the lease.
    pub provider: Uuid,
}

/// A lease this worker now holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begun {
    /// The attempt's number, attempts that said nothing about the recipient not counted.
    pub attempts: u32,
    /// An earlier attempt whose outcome is unknown: that request may have been sent, so the
    /// worker looks it up before sending again.
    pub unknown: Option<UnknownAttempt>,
    /// The revision of the message's provider when the lease was taken: a cached copy of
    /// the provider older than this is read again (its credentials were rotated).
    pub provider_revision: i32,
}

/// An attempt whose request may have been sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownAttempt {
    /// When it began (its request was made after).
    pub since: DateTime<Utc>,
    /// The provider it went to.
    pub via: Uuid,
}

/// Begins attempts; answers, per dispatch, the lease if this worker now holds it, or `None`
/// if the message must not be sent.
///
/// Only a `queued` recipient is leased. One still `sending` under an expired lease is the
/// sweeper's to judge (its request may have been sent): its message is acked unsent.
pub async fn begin(
    pool: &PgPool,
    dispatches: &[Dispatch],
    lease_grace: Duration,
) -> Result<Vec<Option<Begun>>, sqlx::Error> {
    let sorted = by_recipient(dispatches, |d| d.recipient_id);
    let ids: Vec<i64> = sorted.iter().map(|d| d.recipient_id).collect();
    let seqs: Vec<i32> = sorted.iter().map(|d| d.seq).collect();
    let providers: Vec<Uuid> = sorted.iter().map(|d| d.provider).collect();
    #[allow(clippy::type_complexity)]
    let rows: Vec<(i64, i32, i32, Option<DateTime<Utc>>, Option<Uuid>, i32)> = sqlx::query_as(
        "WITH m AS (SELECT * FROM unnest($1::bigint[], $2::int[], $4::uuid[]) AS m(id, seq, provider)),
         -- One primary-key lookup per message, whatever the statistics say (OFFSET 0 keeps
         -- the planner from merging it into a join that walks a campaign's index instead).
         current AS MATERIALIZED (
             SELECT x.* FROM m CROSS JOIN LATERAL (
                 SELECT r.id, r.dispatch_seq AS seq, r.state, r.campaign_id, m.provider,
                        r.expires_at AS own_expiry
                 FROM recipients r WHERE r.id = m.id AND r.dispatch_seq = m.seq OFFSET 0 FOR UPDATE
             ) x
         ),
         -- Each message's campaign by its primary key, whatever the statistics say: joined
         -- plainly, a plan made while few campaigns were running walks every running
         -- campaign (`campaigns_active`) once per message, seen after ten thousand started.
         with_campaign AS MATERIALIZED (
             -- A transactional message's own expiry counts beside its stream's (LEAST skips NULLs).
             SELECT k.*, c.status, least(c.expires_at, k.own_expiry) AS expires_at,
                    c.quiet_start, c.quiet_end, c.time_zone
             FROM current k CROSS JOIN LATERAL (
                 SELECT c.status, c.expires_at, c.quiet_start, c.quiet_end, c.time_zone
                 FROM campaigns c WHERE c.id = k.campaign_id OFFSET 0
             ) c
             WHERE k.state = 'queued'
         ),
         -- The lease covers the provider the message goes to: an overflow provider's
         -- timeout may be longer than the primary's.
         startable AS MATERIALIZED (
             SELECT k.id, k.seq, k.state, k.provider, p.timeout_ms, p.revision
             FROM with_campaign k JOIN providers p ON p.id = k.provider
             WHERE k.status = 'running'
               AND (k.expires_at IS NULL OR k.expires_at > now())
               AND NOT herald_in_quiet_hours(k.quiet_start, k.quiet_end, k.time_zone, now())
         ),
         -- The state is compared with the row as read above, not with a constant, so no
         -- partial index on state looks like a shortcut to the planner; the comparison is
         -- re-checked against any newer version of the row, so a concurrent change wins.
         begun AS (
             UPDATE recipients r
             SET state = 'sending', attempts = r.attempts + 1, updated_at = now(), sent_via = s.provider,
                 attempted_at = now(),
                 lease_until = now() + make_interval(secs => s.timeout_ms / 1000.0 + $3)
             FROM startable s
             WHERE r.id = s.id AND r.dispatch_seq = s.seq AND r.state = s.state
             RETURNING r.id, r.dispatch_seq, r.attempts - r.throttles AS attempts,
                       r.outcome_unknown_at, r.unknown_via, s.revision
         ),
         parkable AS MATERIALIZED (
             SELECT k.id, k.seq, k.state,
                    CASE WHEN k.status = 'cancelled' THEN 'cancelled'
                         WHEN k.expires_at <= now() THEN 'expired'
                         ELSE 'pending' END AS final_state
             FROM with_campaign k
             WHERE (k.status IN ('paused', 'cancelled')
                    OR k.expires_at <= now()
                    OR herald_in_quiet_hours(k.quiet_start, k.quiet_end, k.time_zone, now()))
         ),
         parked AS (
             UPDATE recipients r
             SET state = p.final_state, queued_at = NULL, updated_at = now()
             FROM parkable p
             WHERE r.id = p.id AND r.dispatch_seq = p.seq AND r.state = p.state
             RETURNING r.id
         )
         SELECT id, dispatch_seq, attempts, outcome_unknown_at, unknown_via, revision FROM begun",
    )
    .bind(&ids)
    .bind(&seqs)
    .bind(lease_grace.as_secs_f64())
    .bind(&providers)
    .fetch_all(pool)
    .await?;
    let begun: HashMap<(i64, i32), Begun> = rows
        .into_iter()
        .map(|(id, seq, attempts, since, via, revision)| {
            let lease = Begun {
                attempts: u32::try_from(attempts).unwrap_or(0),
                unknown: since
                    .zip(via)
                    .map(|(since, via)| UnknownAttempt { since, via }),
                provider_revision: revision,
            };
            ((id, seq), lease)
        })
        .collect();
    Ok(dispatches
        .iter()
        .map(|d| begun.get(&(d.recipient_id, d.seq)).copied())
        .collect())
}

/// An outcome to record.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub dispatch: Dispatch,
    /// The provider the message went to (a campaign's primary or its overflow).
    pub provider: Uuid,
    pub decision: Decision,
}

/// Records outcomes in one statement (and marks each campaign's first send).
///
/// An outcome lands while its dispatch is the recipient's current one and the recipient is
/// still `sending`, or was taken back by the sweeper while this outcome could not be written
/// (`unknown`, or `pending` for a provider that retries): what this worker learnt is newer
/// than the sweeper's guess. Anything else means someone else owns the recipient now, or a
/// receipt already settled it as sent: the outcome is ignored.
///
/// A send whose receipts arrived first, under a message id not yet recorded (parked), takes
/// their status here. A [`Decision::Halted`] outcome pauses its campaign, if it is running,
/// with the provider's answer as the reason.
pub async fn record(pool: &PgPool, outcomes: &[Outcome]) -> Result<(), sqlx::Error> {
    let outcomes = by_recipient(outcomes, |o| o.dispatch.recipient_id);
    let mut ids = Vec::with_capacity(outcomes.len());
    let mut seqs = Vec::with_capacity(outcomes.len());
    let mut states = Vec::with_capacity(outcomes.len());
    let mut message_ids: Vec<Option<String>> = Vec::with_capacity(outcomes.len());
    let mut errors: Vec<Option<String>> = Vec::with_capacity(outcomes.len());
    let mut delays: Vec<Option<f64>> = Vec::with_capacity(outcomes.len());
    let mut throttles: Vec<i32> = Vec::with_capacity(outcomes.len());
    let mut pauses: Vec<Option<String>> = Vec::with_capacity(outcomes.len());
    let providers: Vec<Uuid> = outcomes.iter().map(|o| o.provider).collect();
    for outcome in outcomes {
        ids.push(outcome.dispatch.recipient_id);
        seqs.push(outcome.dispatch.seq);
        let row = Row::of(&outcome.decision);
        // Attempts that say nothing about the recipient are not counted against it.
        throttles.push(i32::from(matches!(
            outcome.decision,
            Decision::Throttled { .. } | Decision::Deferred { .. } | Decision::Halted { .. }
        )));
        pauses.push(match &outcome.decision {
            Decision::Halted { error } => Some(error.clone()),
            _ => None,
        });
        states.push(row.state);
        message_ids.push(row.message_id);
        errors.push(row.error);
        delays.push(row.delay.map(|d| d.as_secs_f64()));
    }
    let first_sends: Vec<Option<f64>> = sqlx::query_scalar(
        "WITH o AS (
             SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::text[], $6::float8[], $7::int[], $8::uuid[], $10::text[])
                 AS o(id, seq, state, message_id, error, delay, throttled, provider, pause)
         ),
         -- As in `begin`: primary-key lookups the planner cannot reorder, and the state
         -- compared with the row as read, never with a constant.
         leased AS MATERIALIZED (
             SELECT o.*, x.state AS was FROM o CROSS JOIN LATERAL (
                 SELECT r.state FROM recipients r WHERE r.id = o.id AND r.dispatch_seq = o.seq OFFSET 0 FOR UPDATE
             ) x
             WHERE x.state IN ('sending', 'unknown', 'pending')
         ),
         -- Receipts parked under this send's message id (served by a partial index that
         -- holds only parked receipts, so this costs next to nothing when there are none).
         parked AS MATERIALIZED (
             SELECT l.id, p.status, p.rank, p.error_code FROM leased l CROSS JOIN LATERAL (
                 SELECT p.status, p.rank, p.error_code FROM receipts p
                 WHERE l.state = 'sent' AND l.message_id IS NOT NULL
                   AND p.provider_id = l.provider AND p.message_id = l.message_id
                   AND p.recipient_id IS NULL
                 ORDER BY p.rank DESC LIMIT 1
             ) p
         ),
         adopted AS (
             UPDATE receipts p SET recipient_id = l.id
             FROM parked k JOIN leased l ON l.id = k.id
             WHERE p.provider_id = l.provider AND p.message_id = l.message_id
               AND p.recipient_id IS NULL
         ),
         recorded AS (
             UPDATE recipients r
             SET state = o.state,
                 provider_message_id = coalesce(o.message_id, r.provider_message_id),
                 throttles = r.throttles + o.throttled,
                 last_error = o.error,
                 next_attempt_at = CASE WHEN o.delay IS NULL THEN r.next_attempt_at
                                        ELSE now() + make_interval(secs => o.delay) END,
                 -- An unknown outcome is dated from when its attempt began: the lookup
                 -- before any resend searches from then (the outcome may be written long
                 -- after, once a database outage is over).
                 outcome_unknown_at = CASE WHEN o.state = 'unknown' THEN coalesce(r.outcome_unknown_at, r.attempted_at, now())
                                           WHEN o.state = 'pending' THEN r.outcome_unknown_at END,
                 unknown_via = CASE WHEN o.state = 'unknown' THEN coalesce(r.unknown_via, o.provider)
                                    WHEN o.state = 'pending' THEN r.unknown_via END,
                 sent_at = CASE WHEN o.state = 'sent' THEN now() ELSE r.sent_at END,
                 sent_via = o.provider,
                 delivery_status = CASE WHEN k.rank > r.delivery_rank THEN k.status ELSE r.delivery_status END,
                 delivery_error = CASE WHEN k.rank > r.delivery_rank THEN k.error_code ELSE r.delivery_error END,
                 delivery_updated_at = CASE WHEN k.rank > r.delivery_rank THEN now() ELSE r.delivery_updated_at END,
                 delivery_rank = greatest(r.delivery_rank, k.rank),
                 -- A call that was not placed holds no line, nor one whose final status came.
                 live_until = CASE WHEN o.state IN ('sent', 'unknown') AND coalesce(k.rank, 0) < $9
                                   THEN r.live_until END,
                 lease_until = NULL, queued_at = NULL, updated_at = now()
             FROM leased o LEFT JOIN parked k ON k.id = o.id
             WHERE r.id = o.id AND r.dispatch_seq = o.seq AND r.state = o.was
             RETURNING r.campaign_id, r.state, o.pause
         ),
         -- Only the campaigns a send or a pause may change.
         touched AS (
             SELECT campaign_id, bool_or(state = 'sent') AS sent, max(pause) AS pause
             FROM recorded WHERE state = 'sent' OR pause IS NOT NULL
             GROUP BY campaign_id
         )
         -- One update per campaign, for its first send and for a pause: two updates of one
         -- row in a statement would keep only one of them.
         UPDATE campaigns c
         SET first_sent_at = CASE WHEN c.first_sent_at IS NULL AND t.sent THEN now() ELSE c.first_sent_at END,
             status = CASE WHEN t.pause IS NOT NULL AND c.status = 'running' THEN 'paused' ELSE c.status END,
             pause_reason = CASE WHEN t.pause IS NOT NULL AND c.status = 'running' THEN t.pause ELSE c.pause_reason END
         FROM touched t
         WHERE c.id = t.campaign_id
           AND ((c.first_sent_at IS NULL AND t.sent) OR (t.pause IS NOT NULL AND c.status = 'running'))
         -- now() is the statement's transaction's time: equal only for a first send set here.
         RETURNING CASE WHEN t.sent AND c.first_sent_at = now()
                        THEN extract(epoch FROM c.first_sent_at - c.started_at)::float8 END",
    )
    .bind(&ids)
    .bind(&seqs)
    .bind(&states)
    .bind(&message_ids)
    .bind(&errors)
    .bind(&delays)
    .bind(&throttles)
    .bind(&providers)
    .bind(herald_shared::delivery::FINAL_RANK)
    .bind(&pauses)
    .fetch_all(pool)
    .await?;
    // The statement that records a campaign's first send is the one place that knows it.
    herald_shared::ops::metrics::first_sends(first_sends.into_iter().flatten());
    Ok(())
}

/// `items` in recipient order. Every statement that updates several recipients (these, the
/// receipts') locks them in that order, up front (`FOR UPDATE` in the lookups), so two of
/// them never wait on each other in a cycle, whatever join the planner picks for the update.
fn by_recipient<T>(items: &[T], id: impl Fn(&T) -> i64) -> Vec<&T> {
    let mut sorted: Vec<&T> = items.iter().collect();
    sorted.sort_by_key(|item| id(item));
    sorted
}

/// What a decision writes: the state, the provider's message id, the error, and when the
/// recipient is next due (a retry's backoff, or the end of an unknown outcome's window).
struct Row {
    state: &'static str,
    message_id: Option<String>,
    error: Option<String>,
    delay: Option<Duration>,
}

impl Row {
    fn of(decision: &Decision) -> Self {
        let row = |state, message_id, error: Option<&str>, delay| Row {
            state,
            message_id,
            error: error.map(str::to_owned),
            delay,
        };
        match decision {
            Decision::Sent {
                provider_message_id,
            } => row("sent", provider_message_id.clone(), None, None),
            Decision::Retry { error, delay }
            | Decision::Throttled { error, delay }
            | Decision::Deferred { error, delay } => {
                row("pending", None, Some(error), Some(*delay))
            }
            // Due again at once: its campaign is paused, so nothing claims it before resume.
            Decision::Halted { error } => row("pending", None, Some(error), Some(Duration::ZERO)),
            Decision::Failed { error } => row("failed", None, Some(error), None),
            Decision::Expired => row(
                "expired",
                None,
                Some("the campaign expired before it could be sent"),
                None,
            ),
            Decision::Unknown { error, window } => row(
                "unknown",
                None,
                Some(&format!("{error}; outcome unknown, waiting for a receipt")),
                Some(*window),
            ),
        }
    }
}
