//! The sweeper's side of the state machine, run by the leading scheduler every tick (the
//! lease recovery beside the tick, in its housekeeping): nothing stays claimed, leased or
//! waiting forever.
//!
//! - A recipient `queued` for longer than `requeue_after` may have lost its message (the
//!   scheduler died between claim and publish, or the broker lost it): it goes back to
//!   `pending`. If its old message still exists, the bumped `dispatch_seq` at the next claim
//!   makes it stale, and workers drop it unsent. A campaign's first attempts claimed by
//!   range (still `pending`) whose claim is that old move the campaign's cursor back below
//!   them instead. So do first attempts a worker parked (a paused campaign's) or the
//!   scheduler released whose campaign's row was held then: the move they owe is made at
//!   the next sweep.
//! - A recipient `sending` past its lease lost its worker mid-call, maybe after the provider
//!   took the request: it waits in `unknown` for a receipt, as if the answer had been lost
//!   (`pending` at once, while attempts are left, only for a provider whose policy is
//!   `retry`, which is then asked again itself). The provider is the one the attempt went
//!   to (`sent_via`), not the campaign's primary.
//! - A recipient `unknown` past its provider's window goes back to `pending`: the worker
//!   that gets it looks the earlier request up (where the API can) before sending again.
//! - A waiting recipient of a cancelled or expired campaign ends where `herald_held_state`
//!   says (`cancelled`, `expired`).
//! - A transactional message still waiting past its own expiry becomes `expired`.

use sqlx::PgPool;
use std::time::Duration;

/// Most rows one sweep statement touches, so a huge backlog is recovered over a few ticks
/// instead of in one long transaction.
const SWEEP_LIMIT: i64 = 10_000;

pub async fn requeue_stale_claims(
    pool: &PgPool,
    requeue_after: Duration,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE recipients r SET state = 'pending', queued_at = NULL, updated_at = now()
         FROM (SELECT id FROM recipients
               WHERE state = 'queued' AND queued_at < now() - make_interval(secs => $1)
               LIMIT $2 FOR UPDATE SKIP LOCKED) stale
         WHERE r.id = stale.id",
        requeue_after.as_secs_f64(),
        SWEEP_LIMIT,
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Campaigns whose cursor a sweep moved back, by why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rewound {
    /// A range claim too old with first attempts still waiting: its message was lost.
    pub lost: u64,
    /// Only first attempts a worker's lease parked or the scheduler's release handed back
    /// while someone else held the campaign's row, owed a move back since.
    pub owed: u64,
}

/// Moves campaigns' cursors back below first attempts that wait where no claim looks:
///
/// - a range claim older than `requeue_after` whose first attempts are still waiting (its
///   message may be lost, as with a stale `queued` row above);
/// - a move back owed by a lease or release that found the campaign's row held
///   ([`super::lease::begin`], [`super::claim::release`]), whatever its age: only below
///   the range it handed back (earlier first attempts' messages may still be queued).
///
/// The next claims hand them out again (a message that was not lost after all then finds
/// its recipient taken).
pub async fn rewind_stale_first_claims(
    pool: &PgPool,
    requeue_after: Duration,
) -> Result<Rewound, sqlx::Error> {
    let rows = sqlx::query_scalar!(
        r#"WITH stale AS MATERIALIZED (
             -- In one pass over the table (a row per campaign and tick: it has no index). A
             -- campaign's stale range claims as one range: a running campaign has claims of
             -- every tick, and one lookup each would be one per tick and campaign. Moves
             -- owed, whatever their age, by the range each handed back.
             SELECT campaign_id, coalesce(owed_from, 0) AS from_id,
                    max(through) AS through, owed_from IS NOT NULL AS owed
             FROM first_claims
             WHERE owed_from IS NOT NULL OR claimed_at < now() - make_interval(secs => $1)
             GROUP BY campaign_id, owed_from
         ),
         -- The lowest first attempt each left waiting, if any (for a range claim almost
         -- always none: its message was taken).
         found AS MATERIALIZED (
             SELECT s.campaign_id, s.owed, x.id
             FROM stale s
             CROSS JOIN LATERAL (
                 SELECT id FROM recipients
                 WHERE campaign_id = s.campaign_id AND state = 'pending' AND attempts = 0
                   AND id BETWEEN s.from_id AND s.through
                 ORDER BY id LIMIT 1) x
         ),
         lowest AS MATERIALIZED (
             SELECT campaign_id, min(id) AS id, bool_and(owed) AS owed FROM found
             GROUP BY campaign_id
         ),
         -- Only campaigns to rewind are locked: in id order, as by every statement that
         -- writes several campaign rows; one held by someone else (an upload holds its
         -- campaign's row as long as it streams) keeps its rows for a later sweep rather
         -- than being waited for.
         cursors AS MATERIALIZED (
             SELECT c.id FROM campaigns c JOIN lowest l ON l.campaign_id = c.id
             WHERE c.claimed_through >= l.id
             ORDER BY c.id FOR NO KEY UPDATE OF c SKIP LOCKED
         ),
         -- A claim with nothing waiting is done with (no first attempt goes back to
         -- waiting once made); so is a rewound one, and one whose cursor is already below.
         swept AS (
             DELETE FROM first_claims
             WHERE (owed_from IS NOT NULL OR claimed_at < now() - make_interval(secs => $1))
               AND (campaign_id NOT IN (SELECT campaign_id FROM lowest)
                    OR campaign_id IN (SELECT id FROM cursors)
                    OR campaign_id IN (SELECT l.campaign_id FROM lowest l JOIN campaigns c
                                       ON c.id = l.campaign_id WHERE c.claimed_through < l.id))
         )
         UPDATE campaigns c SET claimed_through = l.id - 1
         FROM lowest l
         WHERE c.id = l.campaign_id AND c.id IN (SELECT id FROM cursors) AND c.claimed_through >= l.id
         RETURNING l.owed AS "owed!""#,
        requeue_after.as_secs_f64(),
    )
    .fetch_all(pool)
    .await?;
    let owed = rows.iter().filter(|&&owed| owed).count() as u64;
    Ok(Rewound {
        lost: rows.len() as u64 - owed,
        owed,
    })
}

pub async fn recover_expired_leases(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE recipients r
         -- A provider that deduplicates (`retry`) is asked again at once, while attempts
         -- are left; its last one, which may have been sent, waits for a receipt (then
         -- the lookup fails it, with no attempt left to resend).
         SET state = CASE WHEN p.unknown_outcome <> 'retry' OR r.attempts - r.throttles >= p.max_attempts
                          THEN 'unknown' ELSE 'pending' END,
             last_error = 'worker lease expired during attempt ' || r.attempts || ' (outcome unknown)',
             next_attempt_at = CASE WHEN p.unknown_outcome <> 'retry' OR r.attempts - r.throttles >= p.max_attempts
                                    THEN now() + make_interval(secs => p.unknown_window_ms / 1000.0)
                                    ELSE now() END,
             -- Dated from when the attempt began, at the provider it went to: the lookup
             -- before any resend searches there, from then; a provider that deduplicates
             -- (`retry`) is asked again itself, since no other knows the request's key. An
             -- earlier attempt not yet ruled out (its worker died between the lease and the
             -- ruling) is kept: nothing was sent since.
             outcome_unknown_at = coalesce(r.outcome_unknown_at, r.attempted_at, now()),
             unknown_via = coalesce(r.unknown_via, r.sent_via, c.provider_id),
             -- An attempt was made (counted): a run of deferrals before it is over.
             deferred_since = NULL,
             lease_until = NULL, updated_at = now()
         FROM campaigns c, providers p
         -- By primary key, as an array: joined to the expired rows instead, the prepared
         -- statement's generic plan (which cannot know the limit) hashed the whole table
         -- every tick, 24 ms to find nothing.
         WHERE r.id = ANY (ARRAY(SELECT id FROM recipients
                                 WHERE state = 'sending' AND lease_until < now()
                                 ORDER BY lease_until LIMIT $1 FOR UPDATE SKIP LOCKED))
           AND c.id = r.campaign_id AND p.id = coalesce(r.sent_via, c.provider_id)",
        SWEEP_LIMIT,
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Recipients whose outcome stayed unknown through their provider's window: due again now.
pub async fn retry_unknown_outcomes(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE recipients r SET state = 'pending', next_attempt_at = now(), updated_at = now()
         FROM (SELECT id FROM recipients
               WHERE state = 'unknown' AND next_attempt_at <= now()
               LIMIT $1 FOR UPDATE SKIP LOCKED) due
         WHERE r.id = due.id",
        SWEEP_LIMIT,
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Calls whose final status never came stop holding a line once their timeout passes
/// (the caps already ignore them; this keeps the index of live calls small).
pub async fn free_stale_lines(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE recipients r SET live_until = NULL
         FROM (SELECT id FROM recipients WHERE live_until < now()
               LIMIT $1 FOR UPDATE SKIP LOCKED) stale
         WHERE r.id = stale.id",
        SWEEP_LIMIT,
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Ends the waiting recipients (`pending`, first attempts or retries) of campaigns that
/// are past their expiry (→ `expired`) or cancelled (→ `cancelled`), a campaign's first
/// attempts claimed by range among them. Recipients `queued` are ended by the worker that
/// receives their message; those in flight finish. One an earlier request of which may
/// have been sent says so in its error (`herald_ended_unsent_error`), as every statement
/// ending a recipient unsent does.
pub async fn end_waiting_recipients(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        // Each ended campaign's waiting recipients through the two indexes that hold only
        // waiting ones (first attempts, retries; the orders keep the planner on them):
        // joined plainly, the planner scanned every recipient in the table for them, every
        // tick (150 ms with 800,000, to find none), and a campaign's own index would walk
        // its finished recipients too.
        "WITH ended AS (
             SELECT c.id, herald_held_state(c.status, c.expires_at, now()) AS final_state
             FROM campaigns c
             -- Not a draft's: its recipients wait for its start, whatever its expiry. Nor a
             -- cancelled one's that is settled (nothing of it is left to end): the campaigns
             -- not settled, as `campaigns_unsettled` holds them.
             WHERE (c.status IN ('scheduled', 'running', 'paused')
                    OR (c.status = 'cancelled' AND c.settled_at IS NULL))
               AND herald_held_state(c.status, c.expires_at, now()) <> 'pending'
         ), fresh AS (
             SELECT x.id FROM ended e CROSS JOIN LATERAL (
                 SELECT id FROM recipients
                 WHERE campaign_id = e.id AND state = 'pending' AND attempts = 0
                 ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) x
             LIMIT $1
         ), retries AS (
             SELECT x.id FROM ended e CROSS JOIN LATERAL (
                 SELECT id FROM recipients
                 WHERE campaign_id = e.id AND state = 'pending' AND attempts > 0
                 ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) x
             -- Both together stay within the one limit.
             LIMIT greatest(0, $1 - (SELECT count(*) FROM fresh))
         )
         UPDATE recipients r
         SET state = e.final_state, queued_at = NULL, updated_at = now(),
             last_error = herald_ended_unsent_error(r.outcome_unknown_at, r.last_error)
         FROM ended e
         -- By primary key, as in the claim.
         WHERE r.id = ANY (ARRAY(SELECT id FROM fresh UNION ALL SELECT id FROM retries))
           AND e.id = r.campaign_id",
        SWEEP_LIMIT,
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// How long a transactional message may wait in a stream its provider's refusal paused
/// before it ends `expired`: as long as its idempotency key is kept. A stream paused so
/// starts again only when the provider's credentials change, and some refusals (a redirect,
/// an endpoint inside the network) no new credentials mend: without an end, its messages
/// would wait for ever, counted against the tenant's quota of waiting messages.
pub const HELD_MESSAGE_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// Ends, `expired`, the transactional messages that a paused stream has held for
/// [`HELD_MESSAGE_MAX_AGE`] (since their acceptance or the pause, whichever came later).
/// Each stream's oldest waiting messages are looked at (ids grow with acceptance), at most
/// [`SWEEP_LIMIT`] in all a call.
pub async fn expire_held_messages(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "WITH held AS (
             SELECT c.id, c.paused_at FROM campaigns c
             WHERE c.kind = 'messages' AND c.status = 'paused'
               AND (c.paused_at IS NULL OR c.paused_at < now() - make_interval(secs => $2))
         ), oldest AS (
             SELECT x.id FROM held h CROSS JOIN LATERAL (
                 SELECT id FROM recipients
                 WHERE campaign_id = h.id AND state = 'pending' AND attempts = 0
                 ORDER BY id LIMIT $1) x
             UNION ALL
             SELECT x.id FROM held h CROSS JOIN LATERAL (
                 SELECT id FROM recipients
                 WHERE campaign_id = h.id AND state = 'pending' AND attempts > 0
                 ORDER BY next_attempt_at LIMIT $1) x
         ), due AS (
             SELECT r.id FROM oldest o
             JOIN messages m ON m.recipient_id = o.id
             JOIN recipients r ON r.id = o.id
             WHERE m.created_at < now() - make_interval(secs => $2)
             LIMIT $1
             FOR UPDATE OF r SKIP LOCKED
         )
         UPDATE recipients r
         SET state = 'expired', queued_at = NULL, updated_at = now(),
             last_error = CASE WHEN r.outcome_unknown_at IS NULL
                               THEN 'held for a day in a stream its provider refused; not sent'
                               ELSE herald_ended_unsent_error(r.outcome_unknown_at,
                                        'held for a day in a stream its provider refused') END
         FROM due d WHERE r.id = d.id AND r.state = 'pending'",
        SWEEP_LIMIT,
        HELD_MESSAGE_MAX_AGE.as_secs_f64(),
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Recipients still waiting past their own expiry: transactional messages, and recipients
/// whose address was erased while they were in flight (a campaign's others expire with
/// their campaign, above).
pub async fn expire_messages(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE recipients r SET state = 'expired', updated_at = now(),
             last_error = herald_ended_unsent_error(r.outcome_unknown_at, r.last_error)
         FROM (SELECT id FROM recipients
               WHERE state = 'pending' AND expires_at <= now()
               LIMIT $1 FOR UPDATE SKIP LOCKED) w
         WHERE r.id = w.id",
        SWEEP_LIMIT,
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
