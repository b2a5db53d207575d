//! Recovery and completion: nothing stays claimed, leased or running forever.
//!
//! - A recipient `queued` for longer than `requeue_after` may have lost its message (the
//!   scheduler died between claim and publish, or the broker lost it): it goes back to
//!   `pending`. If its old message still exists, the bumped `dispatch_seq` at the next claim
//!   makes it stale, and workers drop it unsent.
//! - A recipient `sending` past its lease lost its worker mid-call: it goes back to `pending`
//!   (retried with the same idempotency key), or `failed` if that was its last attempt.
//! - Past a campaign's expiry, its recipients still waiting become `expired`.
//! - A cancelled campaign's recipients still waiting become `cancelled`.
//! - A running (or paused) campaign with no recipient left in a non-terminal state is
//!   `completed`.

use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

/// Most rows one sweep statement touches, so a huge backlog is recovered over a few ticks
/// instead of in one long transaction.
const SWEEP_LIMIT: i64 = 10_000;

pub async fn requeue_stale_claims(
    pool: &PgPool,
    requeue_after: Duration,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE recipients r SET state = 'pending', queued_at = NULL, updated_at = now()
         FROM (SELECT id FROM recipients
               WHERE state = 'queued' AND queued_at < now() - make_interval(secs => $1)
               LIMIT $2 FOR UPDATE SKIP LOCKED) stale
         WHERE r.id = stale.id",
    )
    .bind(requeue_after.as_secs_f64())
    .bind(SWEEP_LIMIT)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

pub async fn recover_expired_leases(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE recipients r
         SET state = CASE WHEN r.attempts - r.throttles >= p.max_attempts THEN 'failed' ELSE 'pending' END,
             last_error = 'worker lease expired during attempt ' || r.attempts || ' (outcome unknown)',
             next_attempt_at = now(), lease_until = NULL, updated_at = now()
         FROM (SELECT id FROM recipients
               WHERE state = 'sending' AND lease_until < now()
               LIMIT $1 FOR UPDATE SKIP LOCKED) expired,
              campaigns c, providers p
         WHERE r.id = expired.id AND c.id = r.campaign_id AND p.id = c.provider_id",
    )
    .bind(SWEEP_LIMIT)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Ends the waiting recipients (`pending`, first attempts or retries) of campaigns that
/// are past their expiry (→ `expired`) or cancelled (→ `cancelled`). Recipients already
/// queued are ended by the worker that receives their message; those in flight finish.
pub async fn end_waiting_recipients(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE recipients r
         SET state = w.final_state, queued_at = NULL, updated_at = now()
         FROM (SELECT r.id, CASE WHEN c.status = 'cancelled' THEN 'cancelled' ELSE 'expired' END AS final_state
               FROM campaigns c JOIN recipients r ON r.campaign_id = c.id AND r.state = 'pending'
               WHERE c.status = 'cancelled'
                  OR (c.status IN ('scheduled', 'running', 'paused') AND c.expires_at <= now())
               LIMIT $1 FOR UPDATE OF r SKIP LOCKED) w
         WHERE r.id = w.id",
    )
    .bind(SWEEP_LIMIT)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Drops send-rate samples nobody reads any more (the rate looks back a minute at most).
pub async fn trim_send_rate(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM campaign_sends_per_second WHERE second < now() - interval '10 minutes'",
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Completes running or paused campaigns whose recipients are all terminal, and scheduled
/// ones that expired before they started; returns their ids.
/// Each NOT EXISTS on recipients matches one partial index; recipients in flight are read
/// from the progress counters.
pub async fn complete_finished_campaigns(pool: &PgPool) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE campaigns c SET status = 'completed', completed_at = now()
         WHERE (c.status IN ('running', 'paused')
                OR (c.status = 'scheduled' AND c.expires_at <= now()))
           AND NOT EXISTS (SELECT 1 FROM recipients r WHERE r.campaign_id = c.id AND r.state = 'pending' AND r.attempts = 0)
           AND NOT EXISTS (SELECT 1 FROM recipients r WHERE r.campaign_id = c.id AND r.state = 'pending' AND r.attempts > 0)
           AND coalesce((SELECT sum(k.n) FROM campaign_counters k
                         WHERE k.campaign_id = c.id AND k.state = 'in_flight'), 0) = 0
         RETURNING c.id, c.tenant_id",
    )
    .fetch_all(pool)
    .await
}
