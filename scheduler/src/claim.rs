//! Reading what is due and claiming it, atomically, in PostgreSQL.
//!
//! A claim moves recipients `pending → queued` and bumps their `dispatch_seq` (the fencing
//! token the message carries) in one statement with `FOR UPDATE SKIP LOCKED`, and commits
//! before anything is published: a worker never sees a message whose claim is not visible.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// A running campaign and how many of its recipients are due now (capped at its batch size).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ActiveCampaign {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub tenant_weight: i32,
    pub campaign_weight: i32,
    pub provider_id: Uuid,
    /// Takes what the primary provider's lane cannot (see the scheduler's tick).
    pub overflow_provider_id: Option<Uuid>,
    /// The primary provider's circuit breaker is open: everything goes to the overflow.
    pub primary_open: bool,
    /// The overflow provider's circuit breaker is open.
    pub overflow_open: bool,
    /// Planned in its overflow's lane first, its primary taking the rest: the overflow is
    /// further behind its committed volume (`commitments`). Never set by the query.
    #[sqlx(default)]
    pub overflow_first: bool,
    pub channel: String,
    pub template: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub due: i64,
    /// Some of the due recipients are retries (a claim looks for them first).
    pub retries: bool,
    /// A tenant's stream of transactional messages (served before its campaigns).
    pub transactional: bool,
}

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

/// Makes `scheduled` campaigns whose start time has come `running`; returns their ids. A
/// campaign started for later counts as started at its start time (one started now already
/// has its `started_at`, from the start request).
pub async fn activate_due_campaigns(pool: &PgPool) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE campaigns SET status = 'running', started_at = coalesce(started_at, start_at)
         WHERE status = 'scheduled' AND start_at <= now()
         RETURNING id, tenant_id",
    )
    .fetch_all(pool)
    .await
}

/// Running campaigns with due recipients, leaving out those inside their quiet hours, past
/// their expiry, or whose providers' circuit breakers are all open. The counts stop at the
/// batch size or `budget` (the scheduler's most per tick), whichever is smaller, so each
/// costs at most that many index entries however large the campaign. With `through`, only
/// campaigns whose primary or overflow provider is one of those (a wake's lanes): their
/// counts are all that is paid for.
pub async fn active_campaigns(
    pool: &PgPool,
    budget: u32,
    through: Option<&[Uuid]>,
) -> Result<Vec<ActiveCampaign>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.id, c.tenant_id, t.weight AS tenant_weight, c.weight AS campaign_weight,
                c.provider_id, c.overflow_provider_id, c.channel, c.template, c.expires_at,
                c.provider_id = ANY(b.open) AS primary_open,
                coalesce(c.overflow_provider_id = ANY(b.open), false) AS overflow_open,
                d.due, d.retries > 0 AS retries,
                c.kind = 'messages' AS transactional
         FROM campaigns c JOIN tenants t ON t.id = c.tenant_id
         -- The providers whose circuit breakers are open, read once: asked per campaign
         -- (`herald_breaker_open`), a third of the query's 100 ms with 10,000 campaigns.
         CROSS JOIN (SELECT array(SELECT provider_id FROM provider_pacing
                                  WHERE open_until > now()) AS open) b
         CROSS JOIN LATERAL (
             SELECT least(c.batch_size,
                          -- A tenant with a cap on live calls: no more calls than free lines.
                          CASE WHEN c.channel = 'voice' AND t.max_live_calls IS NOT NULL THEN
                              greatest(0, t.max_live_calls - (
                                  SELECT count(*) FROM recipients r JOIN campaigns lc ON lc.id = r.campaign_id
                                  WHERE r.live_until > now() AND lc.tenant_id = t.id))
                          END,
                          n.retries + n.fresh) AS due,
                    n.retries
             FROM (SELECT (SELECT count(*) FROM (SELECT 1 FROM recipients r
                                                 WHERE r.campaign_id = c.id AND r.state = 'pending'
                                                   AND r.attempts > 0 AND r.next_attempt_at <= now()
                                                 ORDER BY r.next_attempt_at
                                                 LIMIT least(c.batch_size, $1)) due_retries) AS retries,
                          (SELECT count(*) FROM (SELECT 1 FROM recipients r
                                                 WHERE r.campaign_id = c.id AND r.state = 'pending'
                                                   AND r.attempts = 0
                                                 -- The index's order: with few campaigns the
                                                 -- generic plan expects a third of the table
                                                 -- to match and scans all of it (200–300 ms
                                                 -- a tick, seen beside two 400,000-recipient
                                                 -- campaigns); sorted, only the index pays.
                                                 ORDER BY r.id
                                                 LIMIT least(c.batch_size, $1)) fresh) AS fresh
                   OFFSET 0) n
             -- Counted once per campaign: without the fence the planner repeats the counts
             -- for the `due > 0` filter (with 10,000 campaigns, 40,000 index scans a tick).
             OFFSET 0
         ) d
         WHERE c.status = 'running'
           AND ($2::uuid[] IS NULL OR c.provider_id = ANY($2) OR c.overflow_provider_id = ANY($2))
           AND (c.expires_at IS NULL OR c.expires_at > now())
           AND NOT herald_in_quiet_hours(c.quiet_start, c.quiet_end, c.time_zone, now())
           -- A provider whose circuit breaker is open is left alone until it closes.
           AND (NOT c.provider_id = ANY(b.open)
                OR (c.overflow_provider_id IS NOT NULL AND NOT c.overflow_provider_id = ANY(b.open)))
           AND d.due > 0
         ORDER BY c.tenant_id, c.id",
    )
    .bind(i64::from(budget))
    .bind(through)
    .fetch_all(pool)
    .await
}

/// The pace (requests per second) of each of `providers` that has a rate limit.
pub async fn provider_paces(
    pool: &PgPool,
    providers: &[Uuid],
) -> Result<Vec<(Uuid, f64)>, sqlx::Error> {
    let rows: Vec<(Uuid, i32, i32)> = sqlx::query_as(
        "SELECT id, rate_limit, rate_window_ms FROM providers
         WHERE id = ANY($1) AND rate_limit IS NOT NULL",
    )
    .bind(providers)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, limit, window_ms)| {
            let window = std::time::Duration::from_millis(u64::try_from(window_ms).unwrap_or(1000));
            (
                id,
                herald_shared::rate_limit::per_second(u32::try_from(limit).unwrap_or(1), window),
            )
        })
        .collect())
}

/// Lines still free of each of `providers` that caps its live calls (calls placed and not
/// yet ended, fleet-wide).
pub async fn free_lines(
    pool: &PgPool,
    providers: &[Uuid],
) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT p.id, p.max_live_calls - (SELECT count(*) FROM recipients r
                                          WHERE r.live_until > now() AND r.sent_via = p.id)
         FROM providers p WHERE p.id = ANY($1) AND p.max_live_calls IS NOT NULL",
    )
    .bind(providers)
    .fetch_all(pool)
    .await
}

/// Every provider's commitment (few providers carry one), with this month's sends.
pub async fn commitments(
    pool: &PgPool,
) -> Result<Vec<(Uuid, crate::commitments::Commitment)>, sqlx::Error> {
    let rows: Vec<(Uuid, i32, i64, f64)> = sqlx::query_as(
        "SELECT provider_id, monthly_commitment, sent_this_month, month_elapsed
         FROM provider_commitments",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, monthly, sent, elapsed)| {
            (
                id,
                crate::commitments::Commitment {
                    monthly: i64::from(monthly),
                    sent,
                    elapsed,
                },
            )
        })
        .collect())
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
    let done = sqlx::query(
        "UPDATE recipients r SET state = 'pending', queued_at = NULL, updated_at = now()
         FROM unnest($1::bigint[], $2::int[]) AS c(id, seq)
         WHERE r.id = ANY($1) AND r.id = c.id AND r.dispatch_seq = c.seq AND r.state = 'queued'",
    )
    .bind(&ids)
    .bind(&seqs)
    // Planned with the array in hand, like the worker's statements (see worker `attempts`).
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
    sqlx::query(
        "UPDATE recipients SET state = 'failed', last_error = $3, queued_at = NULL, updated_at = now()
         WHERE id = $1 AND dispatch_seq = $2 AND state = 'queued'",
    )
    .bind(id)
    .bind(seq)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// The database's clock, so every process measures time against one source.
pub async fn now(pool: &PgPool) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar("SELECT now()").fetch_one(pool).await
}
