//! The scheduler's side of the state machine: claiming due recipients and handing back
//! what could not be published.
//!
//! Two kinds of claim, made in one statement and committed before anything is published (a
//! worker never sees a message whose claim is not visible):
//!
//! - **A campaign's first attempts by range.** Its audience is fixed once it runs, so its
//!   first attempts are handed out in id order and the campaign's `claimed_through` cursor
//!   says how far; the recipients themselves are read, not written. One row a campaign is
//!   written per claim, where a row a recipient used to be (with 10,000 small campaigns
//!   that was most of a tick). Such a recipient stays `pending` until its lease, and its
//!   message carries its unchanged `dispatch_seq`: the lease takes a `pending` row only
//!   while no attempt has been made, so of two messages for it only one is ever sent.
//!   The tick plans a campaign's first attempts from its row: the ids from past its cursor
//!   (or from its audience's lowest, `audience_from`, if that is higher) up to its
//!   audience's highest, `audience_through` (a bound, as other audiences' ids may lie
//!   between); a claim that finds fewer than it asked for has read all there are (as of
//!   its snapshot: one made first again later moves the cursor back), and moves the
//!   cursor to the bound.
//! - **Retries, and a transactional stream's messages, row by row** (`pending → queued`,
//!   `dispatch_seq` bumped: the fencing token the message carries), `FOR UPDATE SKIP
//!   LOCKED`. A stream gains rows while it runs, so a cursor could pass a message
//!   committed after a later one.

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
    /// As PostgreSQL writes the JSON object: read by the caller, row by row, so that one
    /// row it cannot read (see [`Claimed::read_variables`]) fails that recipient alone, not the
    /// claim of every campaign in the lane.
    pub variables: String,
    /// A transactional message's own expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

impl Claimed {
    /// The recipient's variables, or why they cannot be read (a number past a double's
    /// range, which PostgreSQL's `numeric` holds: no upload stores one, but a row is not
    /// trusted to be as the admin wrote it).
    pub fn read_variables(&self) -> Result<Map<String, Value>, String> {
        serde_json::from_str(&self.variables)
            .map_err(|e| format!("the recipient's variables cannot be read: {e}"))
    }
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
         ), first_wanted AS MATERIALIZED (
             SELECT p.campaign_id, greatest(0, p.n - coalesce(t.taken, 0)) AS n
             FROM plan p
             LEFT JOIN (SELECT campaign_id, count(*) AS taken FROM retries GROUP BY campaign_id) t
                    USING (campaign_id)
         ),
         -- Campaigns' cursors, locked against a worker or the sweeper rewinding one
         -- meanwhile (the rewind then applies to the cursor this claim leaves), in id order,
         -- as by every statement that writes several campaign rows: two never wait on each
         -- other in a cycle.
         cursors AS MATERIALIZED (
             SELECT c.id AS campaign_id, c.claimed_through, c.audience_through FROM campaigns c
             WHERE c.id = ANY($1) AND c.kind = 'campaign'
             ORDER BY c.id FOR NO KEY UPDATE
         ),
         -- A campaign's first attempts past its cursor, read and not written (nor locked:
         -- skipping a locked row would move the cursor past it).
         ranged AS MATERIALIZED (
             SELECT picked.*
             FROM cursors k JOIN first_wanted w USING (campaign_id)
             CROSS JOIN LATERAL (
                 SELECT campaign_id, id, dispatch_seq, address, variables::text AS variables, expires_at FROM recipients
                 WHERE campaign_id = k.campaign_id AND state = 'pending' AND attempts = 0
                   AND id > k.claimed_through
                 ORDER BY id LIMIT w.n) picked
         ),
         -- Past the last read; past the whole audience when fewer were found than asked
         -- for (none is left: the tick's bound for the campaign becomes 0, so it is no
         -- longer planned, and it may complete).
         advanced AS (
             UPDATE campaigns c SET claimed_through = r.through
             FROM (SELECT k.campaign_id,
                          CASE WHEN coalesce(g.found, 0) < w.n
                               THEN greatest(g.through, k.audience_through)
                               ELSE g.through END AS through
                   FROM cursors k JOIN first_wanted w USING (campaign_id)
                   LEFT JOIN (SELECT campaign_id, max(id) AS through, count(*) AS found
                              FROM ranged GROUP BY campaign_id) g USING (campaign_id)) r
             WHERE c.id = r.campaign_id AND r.through > c.claimed_through
             RETURNING c.id, r.through
         ), logged AS (
             INSERT INTO first_claims (campaign_id, through) SELECT id, through FROM advanced
         ),
         -- A stream of transactional messages claims its first attempts row by row.
         fresh AS (
             SELECT picked.id
             FROM first_wanted w
             JOIN campaigns s ON s.id = w.campaign_id AND s.kind = 'messages'
             CROSS JOIN LATERAL (
                 SELECT id FROM recipients
                 WHERE campaign_id = w.campaign_id AND state = 'pending' AND attempts = 0
                   -- A transactional message past its own expiry waits for the sweeper.
                   AND (expires_at IS NULL OR expires_at > now())
                 ORDER BY id LIMIT w.n
                 FOR UPDATE SKIP LOCKED) picked
         ), queued AS (
             -- By primary key, as an array: joined to the picked rows instead, a plan of
             -- thousands of rows hashed the whole table (a sequential scan of every
             -- recipient, 90 ms of a 190 ms claim with 200,000 in the table, and seconds
             -- with millions).
             UPDATE recipients r
             SET state = 'queued', dispatch_seq = r.dispatch_seq + 1, queued_at = now(), updated_at = now()
             WHERE r.id = ANY (ARRAY(SELECT id FROM retries UNION ALL SELECT id FROM fresh))
             RETURNING r.campaign_id, r.id, r.dispatch_seq, r.address, r.variables::text AS variables, r.expires_at
         )
         SELECT * FROM queued
         UNION ALL
         SELECT campaign_id, id, dispatch_seq, address, variables, expires_at FROM ranged",
    )
    .bind(&campaigns)
    .bind(&counts)
    .bind(&retries)
    // Planned with the arrays in hand (see `release`).
    .persistent(false)
    .fetch_all(pool)
    .await
}

/// Hands claimed recipients back when their publish was not confirmed: a queued one to
/// `pending` (only while it still holds the given dispatch), and a campaign's first attempts
/// claimed by range by moving its cursor back below the lowest of them. Counts what it
/// handed back now; a busy campaign's cursor move is recorded as owed and not counted.
pub async fn release(pool: &PgPool, claims: &[(i64, i32)]) -> Result<u64, sqlx::Error> {
    let (ids, seqs): (Vec<i64>, Vec<i32>) = claims.iter().copied().unzip();
    let done = sqlx::query_scalar!(
        r#"WITH c AS (SELECT * FROM unnest($1::bigint[], $2::int[]) AS c(id, seq)),
         released AS (
             UPDATE recipients r SET state = 'pending', queued_at = NULL, updated_at = now()
             FROM c
             WHERE r.id = ANY($1) AND r.id = c.id AND r.dispatch_seq = c.seq AND r.state = 'queued'
             RETURNING r.id
         ), waiting AS (
             SELECT r.campaign_id, min(r.id) AS lowest, max(r.id) AS highest, count(*) AS n
             FROM recipients r JOIN c ON c.id = r.id AND c.seq = r.dispatch_seq
             WHERE r.id = ANY($1) AND r.state = 'pending' AND r.attempts = 0
             GROUP BY r.campaign_id
         ),
         -- Locked in id order, as by every statement that writes several campaign rows; one
         -- held by someone else is left to the sweeper's next pass rather than waited for:
         -- recorded as a move owed below the range released, unless its cursor is already
         -- below it (`sweep::rewind_stale_first_claims`).
         cursors AS MATERIALIZED (
             SELECT k.id FROM campaigns k
             WHERE k.id IN (SELECT campaign_id FROM waiting) AND k.kind = 'campaign'
             ORDER BY k.id FOR NO KEY UPDATE SKIP LOCKED
         ), rewound AS (
             UPDATE campaigns k SET claimed_through = w.lowest - 1
             FROM waiting w
             WHERE k.id = w.campaign_id AND k.id IN (SELECT id FROM cursors)
               AND k.claimed_through >= w.lowest
             RETURNING w.n
         ), owed AS (
             INSERT INTO first_claims (campaign_id, owed_from, through)
             SELECT w.campaign_id, w.lowest, w.highest
             FROM waiting w JOIN campaigns k ON k.id = w.campaign_id
             WHERE w.campaign_id NOT IN (SELECT id FROM cursors) AND k.kind = 'campaign'
               AND k.claimed_through >= w.lowest
         )
         SELECT ((SELECT count(*) FROM released) + (SELECT coalesce(sum(n), 0) FROM rewound))::int8 AS "released!""#,
        &ids,
        &seqs,
    )
    // Planned with the array in hand, like the worker's statements (see `lease`).
    .persistent(false)
    .fetch_one(pool)
    .await?;
    Ok(u64::try_from(done).unwrap_or(0))
}

/// Fails claimed recipients whose messages cannot be built (their variables do not fit the
/// template, or make a text too long); retrying would not help. A first attempt claimed
/// by range is still `pending`. One statement for a pass's failures: a campaign whose every
/// recipient fails must not cost a round trip each in the tick that serves every tenant.
pub async fn fail_unrenderable(
    pool: &PgPool,
    failures: &[Unrenderable],
) -> Result<(), sqlx::Error> {
    if failures.is_empty() {
        return Ok(());
    }
    // Rows locked in id order, as by every statement that writes several.
    let failures = super::by_recipient(failures, |f| f.id);
    let ids: Vec<i64> = failures.iter().map(|f| f.id).collect();
    let seqs: Vec<i32> = failures.iter().map(|f| f.seq).collect();
    let errors: Vec<&str> = failures.iter().map(|f| f.error.as_str()).collect();
    sqlx::query!(
        "UPDATE recipients r SET state = 'failed', last_error = f.error, queued_at = NULL, updated_at = now()
         FROM unnest($1::bigint[], $2::int[], $3::text[]) AS f(id, seq, error)
         -- By primary key, whatever the planner guesses of the array's size.
         WHERE r.id = ANY($1) AND r.id = f.id AND r.dispatch_seq = f.seq
           AND (r.state = 'queued' OR (r.state = 'pending' AND r.attempts = 0))",
        &ids,
        &seqs,
        &errors as _,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// A claimed recipient whose message cannot be built, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unrenderable {
    pub id: i64,
    pub seq: i32,
    pub error: String,
}
