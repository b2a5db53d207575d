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
//! Every statement that joins `recipients` to an `unnest` of ids also says `r.id = ANY($1)`:
//! without it the planner, blind to the array's size, may hash-join against a partial index
//! full of dead entries from finished recipients and scan it whole (measured: 83 ms per
//! statement instead of about 1 ms), while `= ANY` pins it to primary-key lookups.

use crate::outcome::Decision;
use sqlx::PgPool;
use std::collections::HashMap;
use std::time::Duration;

/// One message's claim on a recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dispatch {
    pub recipient_id: i64,
    pub seq: i32,
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
    let rows: Vec<(i64, i32, i32)> = sqlx::query_as(
        "WITH m AS (SELECT * FROM unnest($1::bigint[], $2::int[]) AS m(id, seq)),
         begun AS (
             UPDATE recipients r
             SET state = 'sending', attempts = r.attempts + 1, updated_at = now(),
                 lease_until = now() + make_interval(secs => p.timeout_ms / 1000.0 + $3)
             FROM m, campaigns c, providers p
             WHERE r.id = ANY($1) AND r.id = m.id AND r.dispatch_seq = m.seq
               AND c.id = r.campaign_id AND p.id = c.provider_id AND c.status = 'running'
               AND (c.expires_at IS NULL OR c.expires_at > now())
               AND NOT herald_in_quiet_hours(c.quiet_start, c.quiet_end, c.time_zone, now())
               AND (r.state = 'queued' OR (r.state = 'sending' AND r.lease_until < now()))
             RETURNING r.id, r.dispatch_seq, r.attempts - r.throttles AS attempts
         ),
         parked AS (
             UPDATE recipients r
             SET state = CASE WHEN c.status = 'cancelled' THEN 'cancelled'
                              WHEN c.expires_at <= now() THEN 'expired'
                              ELSE 'pending' END,
                 queued_at = NULL, updated_at = now()
             FROM m, campaigns c
             WHERE r.id = ANY($1) AND r.id = m.id AND r.dispatch_seq = m.seq AND r.state = 'queued'
               AND c.id = r.campaign_id
               AND (c.status IN ('paused', 'cancelled')
                    OR c.expires_at <= now()
                    OR herald_in_quiet_hours(c.quiet_start, c.quiet_end, c.time_zone, now()))
             RETURNING r.id
         )
         SELECT id, dispatch_seq, attempts FROM begun",
    )
    .bind(&ids)
    .bind(&seqs)
    .bind(lease_grace.as_secs_f64())
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
            Decision::Throttled { error, delay } => (
                "pending",
                None,
                Some(error.clone()),
                Some(delay.as_secs_f64()),
            ),
        };
        throttles.push(i32::from(matches!(
            outcome.decision,
            Decision::Throttled { .. }
        )));
        states.push(state);
        message_ids.push(message_id);
        errors.push(error);
        delays.push(delay);
    }
    sqlx::query(
        "WITH recorded AS (
             UPDATE recipients r
             SET state = o.state,
                 provider_message_id = coalesce(o.message_id, r.provider_message_id),
                 throttles = r.throttles + o.throttled,
                 last_error = o.error,
                 next_attempt_at = CASE WHEN o.delay IS NULL THEN r.next_attempt_at
                                        ELSE now() + make_interval(secs => o.delay) END,
                 sent_at = CASE WHEN o.state = 'sent' THEN now() ELSE r.sent_at END,
                 lease_until = NULL, queued_at = NULL, updated_at = now()
             FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::text[], $6::float8[], $7::int[])
                  AS o(id, seq, state, message_id, error, delay, throttled)
             WHERE r.id = ANY($1) AND r.id = o.id AND r.dispatch_seq = o.seq AND r.state = 'sending'
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
    .execute(pool)
    .await?;
    Ok(())
}
