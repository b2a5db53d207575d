//! The scheduler's side of the state machine: claiming due recipients (`pending → queued`)
//! and handing back what could not be published.
//!
//! A claim moves recipients `pending → queued` and bumps their `dispatch_seq` (the fencing
//! token the message carries) in one statement with `FOR UPDATE SKIP LOCKED`, and commits
//! before anything is published: a worker never sees a message whose claim is not visible.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// One claimed recipient, ready to become a message.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub campaign_id: Uuid,
    pub id: i64,
    pub dispatch_seq: i32,
    pub address: String,
    pub variables: sqlx::types::Json<Map<String, Value>>,
    /// A transactional message's own expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

/// What a claim asks of one campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    pub campaign_id: Uuid,
    pub count: i64,
    /// Whether the campaign has retries due (if not, they are not looked for).
    pub retries: bool,
}

/// Claims, in one statement, up to `count` due recipients of each campaign of `plan`: per
/// campaign, retries whose time has come first (looked for only where the plan says some
/// are due), then first attempts in id order. One statement for a whole lane's plan, however
/// many campaigns it spans: a tick with ten thousand small campaigns costs a few statements,
/// not ten thousand.
pub async fn claim(pool: &PgPool, plan: &[Wanted]) -> Result<Vec<Claimed>, sqlx::Error> {
    if plan.is_empty() {
        return Ok(Vec::new());
    }
    let campaigns: Vec<Uuid> = plan.iter().map(|w| w.campaign_id).collect();
    let counts: Vec<i64> = plan.iter().map(|w| w.count).collect();
    let retries: Vec<bool> = plan.iter().map(|w| w.retries).collect();
    sqlx::query_as(
        "WITH plan AS (
             SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::bool[]) AS p(campaign_id, n, retries)
         ), retries AS (
             SELECT picked.id, p.campaign_id
             FROM plan p CROSS JOIN LATERAL (
                 SELECT id FROM recipients
                 -- Only where retries wait: one index probe fewer per campaign otherwise.
                 WHERE p.retries AND campaign_id = p.campaign_id AND state = 'pending' AND attempts > 0
                   AND next_attempt_at <= now() AND (expires_at IS NULL OR expires_at > now())
                 ORDER BY next_attempt_at LIMIT p.n
                 FOR UPDATE SKIP LOCKED) picked
         ), fresh AS (
             SELECT picked.id
             FROM plan p
             LEFT JOIN (SELECT campaign_id, count(*) AS taken FROM retries GROUP BY campaign_id) t
                    USING (campaign_id)
             CROSS JOIN LATERAL (
                 SELECT id FROM recipients
                 WHERE campaign_id = p.campaign_id AND state = 'pending' AND attempts = 0
                   -- A transactional message past its own expiry waits for the sweeper.
                   AND (expires_at IS NULL OR expires_at > now())
                 ORDER BY id LIMIT greatest(0, p.n - coalesce(t.taken, 0))
                 FOR UPDATE SKIP LOCKED) picked
         )
         -- By primary key, as an array: joined to the picked rows instead, a plan of
         -- thousands of rows hashed the whole table (a sequential scan of every recipient,
         -- 90 ms of a 190 ms claim with 200,000 in the table, and seconds with millions).
         UPDATE recipients r
         SET state = 'queued', dispatch_seq = r.dispatch_seq + 1, queued_at = now(), updated_at = now()
         WHERE r.id = ANY (ARRAY(SELECT id FROM retries UNION ALL SELECT id FROM fresh))
         RETURNING r.campaign_id, r.id, r.dispatch_seq, r.address, r.variables, r.expires_at",
    )
    .bind(&campaigns)
    .bind(&counts)
    .bind(&retries)
    // Planned with the arrays in hand (see `release`).
    .persistent(false)
    .fetch_all(pool)
    .await
}

/// Hands claimed recipients back to `pending` when their publish was not confirmed. Only rows
/// still holding the given dispatch are touched.
pub async fn release(pool: &PgPool, claims: &[(i64, i32)]) -> Result<u64, sqlx::Error> {
    let (ids, seqs): (Vec<i64>, Vec<i32>) = claims.iter().copied().unzip();
    let done = sqlx::query!(
        "UPDATE recipients r SET state = 'pending', queued_at = NULL, updated_at = now()
         FROM unnest($1::bigint[], $2::int[]) AS c(id, seq)
         WHERE r.id = ANY($1) AND r.id = c.id AND r.dispatch_seq = c.seq AND r.state = 'queued'",
        &ids,
        &seqs,
    )
    // Planned with the array in hand, like the worker's statements (see `lease`).
    .persistent(false)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Fails a claimed recipient whose message cannot be built (its variables do not fit the
/// template); retrying would not help.
pub async fn fail_unrenderable(
    pool: &PgPool,
    id: i64,
    seq: i32,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE recipients SET state = 'failed', last_error = $3, queued_at = NULL, updated_at = now()
         WHERE id = $1 AND dispatch_seq = $2 AND state = 'queued'",
        id,
        seq,
        error,
    )
    .execute(pool)
    .await?;
    Ok(())
}
