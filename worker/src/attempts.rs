//! The worker's two writes around each provider call, batched.
//!
//! `begin` takes a lease on recipients (`queued → sending`, attempts + 1) only if the message
//! still matches the row's `dispatch_seq` and the campaign is running; anything else (finished,
//! stale, re-dispatched) is answered `None` and its message is acked unsent. Messages of a
//! paused campaign, or of one inside its quiet hours, hand their recipient back to `pending`
//! (the scheduler releases it again later, with no attempt spent); of a cancelled one to
//! `cancelled`; of one past its expiry to `expired`. So a message already in the queue when
//! a campaign is paused, reaches its quiet hours or expires is never sent.
//! `record` writes the outcome, again only while the lease is ours.
//!
//! These statements must look recipients up by primary key, and the planner does not always
//! see it: a generic plan is blind to the array's size (it guesses 10 rows), and statistics
//! taken before a big campaign was loaded make walking that campaign's index look cheap
//! (measured: 22 ms per lease statement of 40 rows, 60 ms for 250, instead of about 2 ms).
//! So each is planned afresh for each batch (not a cached prepared statement) and reads the
//! rows through a lookup the planner cannot reorder.

use crate::outcome::Decision;
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

/// Begins attempts; answers, per dispatch, the attempt number if this worker now holds the
/// lease, or `None` if the message must not be sent.
pub async fn begin(
    pool: &PgPool,
    dispatches: &[Dispatch],
    lease_grace: Duration,
) -> Result<Vec<Option<u32>>, sqlx::Error> {
    let ids: Vec<i64> = dispatches.iter().map(|d| d.recipient_id).collect();
    let seqs: Vec<i32> = dispatches.iter().map(|d| d.seq).collect();
    let providers: Vec<Uuid> = dispatches.iter().map(|d| d.provider).collect();
    let rows: Vec<(i64, i32, i32)> = sqlx::query_as(
        "WITH m AS (SELECT * FROM unnest($1::bigint[], $2::int[], $4::uuid[]) AS m(id, seq, provider)),
         -- One primary-key lookup per message, whatever the statistics say (OFFSET 0 keeps
         -- the planner from merging it into a join that walks a campaign's index instead).
         current AS MATERIALIZED (
             SELECT x.* FROM m CROSS JOIN LATERAL (
                 SELECT r.id, r.dispatch_seq AS seq, r.state, r.lease_until, r.campaign_id,
                        m.provider
                 FROM recipients r WHERE r.id = m.id AND r.dispatch_seq = m.seq OFFSET 0
             ) x
         ),
         -- The lease covers the provider the message goes to: an overflow provider's
         -- timeout may be longer than the primary's.
         startable AS MATERIALIZED (
             SELECT k.id, k.seq, k.state, p.timeout_ms
             FROM current k JOIN campaigns c ON c.id = k.campaign_id JOIN providers p ON p.id = k.provider
             WHERE c.status = 'running'
               AND (c.expires_at IS NULL OR c.expires_at > now())
               AND NOT herald_in_quiet_hours(c.quiet_start, c.quiet_end, c.time_zone, now())
               AND (k.state = 'queued' OR (k.state = 'sending' AND k.lease_until < now()))
         ),
         -- The state is compared with the row as read above, not with a constant, so no
         -- partial index on state looks like a shortcut to the planner; the comparison is
         -- re-checked against any newer version of the row, so a concurrent change wins.
         begun AS (
             UPDATE recipients r
             SET state = 'sending', attempts = r.attempts + 1, updated_at = now(),
                 lease_until = now() + make_interval(secs => s.timeout_ms / 1000.0 + $3)
             FROM startable s
             WHERE r.id = s.id AND r.dispatch_seq = s.seq AND r.state = s.state
               AND (s.state = 'queued' OR r.lease_until < now())
             RETURNING r.id, r.dispatch_seq, r.attempts - r.throttles AS attempts
         ),
         parkable AS MATERIALIZED (
             SELECT k.id, k.seq, k.state,
                    CASE WHEN c.status = 'cancelled' THEN 'cancelled'
                         WHEN c.expires_at <= now() THEN 'expired'
                         ELSE 'pending' END AS final_state
             FROM current k JOIN campaigns c ON c.id = k.campaign_id
             WHERE k.state = 'queued'
               AND (c.status IN ('paused', 'cancelled')
                    OR c.expires_at <= now()
                    OR herald_in_quiet_hours(c.quiet_start, c.quiet_end, c.time_zone, now()))
         ),
         parked AS (
             UPDATE recipients r
             SET state = p.final_state, queued_at = NULL, updated_at = now()
             FROM parkable p
             WHERE r.id = p.id AND r.dispatch_seq = p.seq AND r.state = p.state
             RETURNING r.id
         )
         SELECT id, dispatch_seq, attempts FROM begun",
    )
    .bind(&ids)
    .bind(&seqs)
    .bind(lease_grace.as_secs_f64())
    .bind(&providers)
    .fetch_all(pool)
    .await?;
    let begun: HashMap<(i64, i32), i32> = rows
        .into_iter()
        .map(|(id, seq, attempts)| ((id, seq), attempts))
        .collect();
    Ok(dispatches
        .iter()
        .map(|d| {
            begun
                .get(&(d.recipient_id, d.seq))
                .map(|&a| u32::try_from(a).unwrap_or(0))
        })
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

/// Records outcomes in one statement (and marks each campaign's first send). Outcomes for
/// leases this worker no longer holds are ignored: someone else owns that recipient now.
pub async fn record(pool: &PgPool, outcomes: &[Outcome]) -> Result<(), sqlx::Error> {
    let mut ids = Vec::with_capacity(outcomes.len());
    let mut seqs = Vec::with_capacity(outcomes.len());
    let mut states = Vec::with_capacity(outcomes.len());
    let mut message_ids: Vec<Option<String>> = Vec::with_capacity(outcomes.len());
    let mut errors: Vec<Option<String>> = Vec::with_capacity(outcomes.len());
    let mut delays: Vec<Option<f64>> = Vec::with_capacity(outcomes.len());
    let mut throttles: Vec<i32> = Vec::with_capacity(outcomes.len());
    let providers: Vec<Uuid> = outcomes.iter().map(|o| o.provider).collect();
    for outcome in outcomes {
        ids.push(outcome.dispatch.recipient_id);
        seqs.push(outcome.dispatch.seq);
        let (state, message_id, error, delay) = match &outcome.decision {
            Decision::Sent {
                provider_message_id,
            } => ("sent", provider_message_id.clone(), None, None),
            Decision::Retry { error, delay } => (
                "pending",
                None,
                Some(error.clone()),
                Some(delay.as_secs_f64()),
            ),
            Decision::Failed { error } => ("failed", None, Some(error.clone()), None),
            Decision::Expired => (
                "expired",
                None,
                Some("the campaign expired before it could be sent".to_owned()),
                None,
            ),
            Decision::Throttled { error, delay } | Decision::Deferred { error, delay } => (
                "pending",
                None,
                Some(error.clone()),
                Some(delay.as_secs_f64()),
            ),
        };
        // Attempts that say nothing about the recipient are not counted against it.
        throttles.push(i32::from(matches!(
            outcome.decision,
            Decision::Throttled { .. } | Decision::Deferred { .. }
        )));
        states.push(state);
        message_ids.push(message_id);
        errors.push(error);
        delays.push(delay);
    }
    sqlx::query(
        "WITH o AS (
             SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::text[], $6::float8[], $7::int[], $8::uuid[])
                 AS o(id, seq, state, message_id, error, delay, throttled, provider)
         ),
         -- As in `begin`: primary-key lookups the planner cannot reorder, and the state
         -- compared with the row as read, never with a constant.
         leased AS MATERIALIZED (
             SELECT o.*, x.state AS was FROM o CROSS JOIN LATERAL (
                 SELECT r.state FROM recipients r WHERE r.id = o.id AND r.dispatch_seq = o.seq OFFSET 0
             ) x
             WHERE x.state = 'sending'
         ),
         recorded AS (
             UPDATE recipients r
             SET state = o.state,
                 provider_message_id = coalesce(o.message_id, r.provider_message_id),
                 throttles = r.throttles + o.throttled,
                 last_error = o.error,
                 next_attempt_at = CASE WHEN o.delay IS NULL THEN r.next_attempt_at
                                        ELSE now() + make_interval(secs => o.delay) END,
                 sent_at = CASE WHEN o.state = 'sent' THEN now() ELSE r.sent_at END,
                 sent_via = CASE WHEN o.state = 'sent' THEN o.provider ELSE r.sent_via END,
                 lease_until = NULL, queued_at = NULL, updated_at = now()
             FROM leased o
             WHERE r.id = o.id AND r.dispatch_seq = o.seq AND r.state = o.was
             RETURNING r.campaign_id, r.state
         )
         UPDATE campaigns c SET first_sent_at = now()
         WHERE c.first_sent_at IS NULL
           AND c.id IN (SELECT campaign_id FROM recorded WHERE state = 'sent')",
    )
    .bind(&ids)
    .bind(&seqs)
    .bind(&states)
    .bind(&message_ids)
    .bind(&errors)
    .bind(&delays)
    .bind(&throttles)
    .bind(&providers)
    .execute(pool)
    .await?;
    Ok(())
}
