//! Campaigns: what the scheduler reads and changes of them (which may be dispatched from now
//! and how much of each is due, their start and completion, their progress counters' fold,
//! the backlog), what the admin does with them (create, start, pause, resume, cancel, list
//! them with their progress, lock one for an upload), and whether they may still send.

use crate::progress::{Counts, counts_columns, counts_join};
use crate::tenants::Scope;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

/// A running campaign and how many of its recipients are due now (capped at its batch size).
#[derive(Debug, Clone)]
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
    /// further behind its committed volume (`commitments`). Always false from the query.
    pub overflow_first: bool,
    pub channel: String,
    pub template: String,
    pub expires_at: Option<DateTime<Utc>>,
    /// Its due retries counted, plus its first attempts left: counted for a stream of
    /// transactional messages, bounded for a campaign (a claim may find fewer; see
    /// `recipients::claim`).
    pub due: i64,
    /// Some of the due recipients are retries (a claim looks for them first).
    pub retries: bool,
    /// `due` is a whole batch (the campaign's `batch_size`, or `budget` if smaller): it may
    /// have more due than one pass gives it.
    pub more_due: bool,
    /// A tenant's stream of transactional messages (served before its campaigns).
    pub transactional: bool,
    /// For a voice campaign (or stream) of a tenant with a cap on live calls: the tenant's
    /// lines free when measured. `due` is already cut to it, but each campaign's alone: the
    /// scheduler shares it among the tenant's voice campaigns.
    pub tenant_free_lines: Option<i64>,
}

/// Makes `scheduled` campaigns whose start time has come `running`; returns their ids. A
/// campaign started for later counts as started at its start time (one started now already
/// has its `started_at`, from the start request).
///
/// One whose row someone holds is skipped, and made running at a later tick: an upload to a
/// scheduled campaign holds its row for as long as it streams, and waiting for it here held
/// up the tick, so every tenant's dispatch, until the upload ended.
pub async fn activate_due(pool: &PgPool) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    let rows = sqlx::query!(
        "UPDATE campaigns SET status = 'running', started_at = coalesce(started_at, start_at)
         WHERE id IN (SELECT id FROM campaigns WHERE status = 'scheduled' AND start_at <= now()
                      ORDER BY id FOR NO KEY UPDATE SKIP LOCKED)
         RETURNING id, tenant_id",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.tenant_id)).collect())
}

/// Running campaigns with due recipients, leaving out those inside their quiet hours, past
/// their expiry, or whose providers' circuit breakers are all open. Due retries (and a
/// stream's messages) are counted, a campaign's first attempts bounded from its row; both
/// stop at the batch size or `budget` (the scheduler's most per pass), whichever is
/// smaller, so a count costs at most that many index entries however large the campaign.
/// A campaign whose bound overstates what it has left (see `recipients::claim`) may stay
/// listed, and so running, until a claim is asked of it. With `through`, only
/// campaigns whose primary or overflow provider is one of those (a wake's lanes): their
/// counts are all that is paid for.
pub async fn dispatchable(
    pool: &PgPool,
    budget: u32,
    through: Option<&[Uuid]>,
) -> Result<Vec<ActiveCampaign>, sqlx::Error> {
    sqlx::query_as!(
        ActiveCampaign,
        r#"SELECT c.id, c.tenant_id, t.weight AS tenant_weight, c.weight AS campaign_weight,
                c.provider_id, c.overflow_provider_id, c.channel, c.template, c.expires_at,
                c.provider_id = ANY(b.open) AS "primary_open!",
                coalesce(c.overflow_provider_id = ANY(b.open), false) AS "overflow_open!",
                false AS "overflow_first!",
                d.due AS "due!", d.retries > 0 AS "retries!",
                d.due >= least(c.batch_size, $1::int8) AS "more_due!",
                c.kind = 'messages' AS "transactional!",
                d.free AS tenant_free_lines
         FROM campaigns c JOIN tenants t ON t.id = c.tenant_id
         -- The providers whose circuit breakers are open, read once: asked per campaign,
         -- a third of the query's 100 ms with 10,000 campaigns.
         CROSS JOIN (SELECT array(SELECT provider_id FROM provider_pacing
                                  WHERE herald_pacing_time(open_until, updated_at) > now()) AS open) b
         CROSS JOIN LATERAL (
             SELECT least(c.batch_size, n.free, n.retries + n.fresh) AS due,
                    n.retries, n.free
             FROM (SELECT (SELECT count(*) FROM (SELECT 1 FROM recipients r
                                                 WHERE r.campaign_id = c.id AND r.state = 'pending'
                                                   AND r.attempts > 0 AND r.next_attempt_at <= now()
                                                 ORDER BY r.next_attempt_at
                                                 LIMIT least(c.batch_size, $1::int8)) due_retries) AS retries,
                          -- A campaign's first attempts past its cursor: at most as many
                          -- as there are ids from there (or from its audience's lowest, if
                          -- higher) up to its audience's highest (see the claim), read from
                          -- its row; counting them cost an index probe and 20 heap fetches
                          -- a campaign, most of the measure with 10,000.
                          CASE WHEN c.kind = 'campaign' THEN
                              least(greatest(c.audience_through
                                             - greatest(c.claimed_through, c.audience_from - 1), 0),
                                    c.batch_size, $1::int8)
                          ELSE
                          (SELECT count(*) FROM (SELECT 1 FROM recipients r
                                                 WHERE r.campaign_id = c.id AND r.state = 'pending'
                                                   AND r.attempts = 0
                                                 -- The index's order: with few streams the
                                                 -- generic plan expects a third of the table
                                                 -- to match and scans all of it (200–300 ms
                                                 -- a tick, seen beside two 400,000-recipient
                                                 -- campaigns); sorted, only the index pays.
                                                 ORDER BY r.id
                                                 LIMIT least(c.batch_size, $1::int8)) fresh)
                          END AS fresh,
                          -- A tenant with a cap on live calls: no more calls than free
                          -- lines (returned too: the scheduler shares them among the
                          -- tenant's voice campaigns).
                          CASE WHEN c.channel = 'voice' AND t.max_live_calls IS NOT NULL THEN
                              greatest(0, t.max_live_calls - (
                                  SELECT count(*) FROM recipients r JOIN campaigns lc ON lc.id = r.campaign_id
                                  WHERE r.live_until > now() AND lc.tenant_id = t.id))
                          END AS free
                   OFFSET 0) n
             -- Counted once per campaign: without the fence the planner repeats the counts
             -- for the `due > 0` filter (with 10,000 campaigns, 40,000 index scans a tick).
             OFFSET 0
         ) d
         WHERE herald_may_send(c.status, c.expires_at, c.quiet_start, c.quiet_end, c.time_zone, now())
           AND ($2::uuid[] IS NULL OR c.provider_id = ANY($2) OR c.overflow_provider_id = ANY($2))
           -- A provider whose circuit breaker is open is left alone until it closes.
           AND (NOT c.provider_id = ANY(b.open)
                OR (c.overflow_provider_id IS NOT NULL AND NOT c.overflow_provider_id = ANY(b.open)))
           AND d.due > 0
         ORDER BY c.tenant_id, c.id"#,
        i64::from(budget),
        through,
    )
    .fetch_all(pool)
    .await
}

/// Drops send-rate samples nobody reads any more (the rate looks back a minute at most).
pub async fn trim_send_rate(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM campaign_sends_per_second WHERE second < now() - interval '10 minutes'",
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Completes running or paused campaigns whose recipients are all terminal, and scheduled
/// ones that expired before they started; returns their ids. `due` are campaigns known to
/// have recipients due (the tick's dispatch found them): they are not finished, and with
/// 10,000 running campaigns counting each of them again took 300 ms a tick.
pub async fn complete_finished(
    pool: &PgPool,
    due: &[Uuid],
) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // From the counters and their unfolded deltas (written in the same transactions as the
    // recipients' states), a few index entries per campaign: probing each campaign's
    // recipients took most of a second a tick with 10,000 running campaigns. One whose row
    // someone holds is skipped until a later round: an upload to a scheduled campaign holds
    // its row for as long as it streams, and waiting for it held up the whole housekeeping
    // round (and its receipts' adoption) until the upload ended.
    let finished = sqlx::query_scalar!(
        "SELECT f.id FROM campaigns f
         WHERE f.kind = 'campaign'
           AND (f.status IN ('running', 'paused') OR (f.status = 'scheduled' AND f.expires_at <= now()))
           AND f.id NOT IN (SELECT unnest($1::uuid[]))
           AND NOT EXISTS (
               SELECT 1 FROM campaign_bucket_counts k WHERE k.campaign_id = f.id
               HAVING coalesce(sum(herald_unfinished(k.state, k.n, true)), 0) <> 0)
         ORDER BY f.id FOR NO KEY UPDATE OF f SKIP LOCKED",
        due,
    )
    .fetch_all(&mut *tx)
    .await?;
    if finished.is_empty() {
        return Ok(Vec::new());
    }
    // Counted again, by a statement of its own: the one above read the counters as they
    // were when it began, and an upload that committed between then and its lock (taken
    // from the upload once it let go) had added recipients it did not see; completed on
    // that count, the campaign would have kept them waiting for ever. Holding the rows now,
    // this sees every recipient their holders committed. A campaign cancelled meanwhile was
    // re-read by the lock, and stays cancelled.
    let rows = sqlx::query!(
        "UPDATE campaigns c SET status = 'completed', completed_at = now()
         WHERE c.id = ANY($1)
           AND (c.status IN ('running', 'paused') OR (c.status = 'scheduled' AND c.expires_at <= now()))
           AND NOT EXISTS (
               SELECT 1 FROM campaign_bucket_counts k WHERE k.campaign_id = c.id
               HAVING coalesce(sum(herald_unfinished(k.state, k.n, true)), 0) <> 0)
         RETURNING c.id, c.tenant_id",
        &finished,
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows.into_iter().map(|r| (r.id, r.tenant_id)).collect())
}

/// Cancelled campaigns none of whose recipients is unfinished (queued, in flight, unknown or
/// waiting) are settled: the tick's sweep for the waiting recipients of ended campaigns no
/// longer looks at them (it looked at every campaign ever cancelled, every tick). Counted
/// from the progress counters, as [`complete_finished`] does; a row someone holds is left
/// to a later round, and so are campaigns past the first 1,000 (those cancelled before
/// this was kept take a few rounds, each statement short). Not a stream of transactional
/// messages: a message accepted into it only key-share locks its row, and a stream is
/// started again as it was.
pub async fn settle_cancelled(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE campaigns c SET settled_at = now()
         WHERE c.id IN (
             SELECT f.id FROM campaigns f
             WHERE f.status = 'cancelled' AND f.settled_at IS NULL AND f.kind = 'campaign'
               AND NOT EXISTS (
                   SELECT 1 FROM campaign_bucket_counts k WHERE k.campaign_id = f.id
                   HAVING coalesce(sum(herald_unfinished(k.state, k.n, true)), 0) <> 0)
             ORDER BY f.id LIMIT 1000 FOR NO KEY UPDATE OF f SKIP LOCKED)",
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Per provider and tenant of the running campaigns, the recipients waiting or in flight
/// (from the progress counters, so a few rows per campaign: their total less those in a
/// final state or unknown).
pub async fn backlog(pool: &PgPool) -> Result<Vec<(Uuid, Uuid, i64)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT c.provider_id, c.tenant_id,
                  sum(herald_unfinished(cc.state, cc.n, false))::int8 AS "waiting!"
         FROM campaigns c JOIN campaign_bucket_counts cc ON cc.campaign_id = c.id
         WHERE c.status = 'running'
         GROUP BY c.provider_id, c.tenant_id"#,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.provider_id, r.tenant_id, r.waiting))
        .collect())
}

/// Folds every committed delta of the counter ledger (`recipient_count_deltas`, appended by
/// the trigger on `recipients`) into the campaigns' counters; returns how many were folded.
pub async fn fold_counts(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT herald_fold_counts() AS "folded!""#,)
        .fetch_one(pool)
        .await
}

/// Resumes the streams of transactional messages that provider `provider`'s refusal paused
/// (they have no resume button of their own: new credentials resume them), and wakes the
/// scheduler for them at the caller's commit, as a resumed campaign does; returns how many.
pub async fn resume_message_streams(
    tx: &mut PgConnection,
    provider: Uuid,
) -> Result<u64, sqlx::Error> {
    let resumed = sqlx::query_scalar!(
        "UPDATE campaigns SET status = 'running', pause_reason = NULL, resumed_at = now()
         WHERE kind = 'messages' AND status = 'paused' AND (provider_id = $1 OR overflow_provider_id = $1)
         RETURNING id",
        provider,
    )
    .fetch_all(&mut *tx)
    .await?;
    // A stream has no start time, so `wake_if_due` would not wake for it.
    wake_lanes(tx, &resumed).await?;
    Ok(resumed.len() as u64)
}

// What the admin does with campaigns (its lists and progress are built in the admin, over
// the same counters).

/// A change of a campaign's status an operator or a tenant asks for. Each applies only from
/// the statuses it names; from any other it changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// From `running` or `scheduled`; clears a pause reason (the operator's pause is its own).
    Pause,
    /// From `paused`: `scheduled` again if its start is still to come, else `running`.
    Resume,
    /// From anything not yet finished.
    Cancel,
}

impl Transition {
    /// Whether a campaign that is `status` is where this transition would take it already:
    /// the same action again (a retry whose answer was lost, two operators at once) changes
    /// nothing and is no error.
    pub fn reached(self, status: &str) -> bool {
        match self {
            Transition::Pause => status == "paused",
            Transition::Resume => matches!(status, "running" | "scheduled"),
            Transition::Cancel => status == "cancelled",
        }
    }

    fn statement(self) -> &'static str {
        match self {
            Transition::Pause => {
                "UPDATE campaigns SET status = 'paused', pause_reason = NULL, paused_at = now()
                 WHERE id = $1 AND status IN ('running', 'scheduled')"
            }
            Transition::Resume => {
                "UPDATE campaigns
                 SET status = CASE WHEN start_at > now() THEN 'scheduled' ELSE 'running' END,
                     pause_reason = NULL, resumed_at = now(),
                     started_at = CASE WHEN start_at > now() THEN started_at ELSE coalesce(started_at, now()) END
                 WHERE id = $1 AND status = 'paused'"
            }
            Transition::Cancel => {
                "UPDATE campaigns SET status = 'cancelled', completed_at = now()
                 WHERE id = $1 AND status IN ('draft', 'scheduled', 'running', 'paused')"
            }
        }
    }
}

/// Applies `transition` to campaign `id`: `Ok(None)` if it applied, `Ok(Some(status))` with
/// the campaign's status if that status does not allow it.
pub async fn transition(
    pool: &PgPool,
    id: Uuid,
    transition: Transition,
) -> Result<Option<String>, sqlx::Error> {
    // The wake is sent at the commit, with the change or not at all.
    let mut tx = pool.begin().await?;
    let changed = sqlx::query(transition.statement())
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if changed.rows_affected() > 0 {
        match transition {
            Transition::Resume => wake_if_due(&mut tx, &[id]).await?,
            // What the scheduler planned from between ticks holds the campaign as due
            // (`carry` in the scheduler): a wake makes it measure again, so it stops
            // claiming work that the lease would only hold back.
            Transition::Pause | Transition::Cancel => wake_lanes(&mut tx, &[id]).await?,
        }
        tx.commit().await?;
        return Ok(None);
    }
    drop(tx);
    let status = sqlx::query_scalar!("SELECT status FROM campaigns WHERE id = $1", id,)
        .fetch_one(pool)
        .await?;
    Ok(Some(status))
}

/// Which of `ids` may send now (`herald_may_send`: running, before its expiry, outside its
/// quiet hours), the lease's own judgement, for a worker whose request waited since its
/// lease (the worker's `recheck`).
pub async fn may_send_now(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT id FROM campaigns
         WHERE id = ANY($1)
           AND herald_may_send(status, expires_at, quiet_start, quiet_end, time_zone, now())",
        ids,
    )
    .fetch_all(pool)
    .await
}

/// Whether campaign `id` exists and `scope` sees it. A tenant's stream of transactional
/// messages is a campaign only inside Herald: never visible as one.
pub async fn visible(pool: &PgPool, scope: Scope, id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM campaigns
                        WHERE id = $1 AND kind = 'campaign' AND ($2::uuid IS NULL OR tenant_id = $2)) AS "exists!""#,
        id,
        scope as _,
    )
    .fetch_one(pool)
    .await
}

/// A reason campaign recipients failed for, and how many did.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorCount {
    /// The reason, with what differs from one recipient to the next left out (phone
    /// numbers, `+` and seven digits or more, such as the recipient's own in Twilio's
    /// 21211, and runs of nine digits or more become `…`, not Meta's seven-digit subcodes;
    /// Meta's `fbtrace_id` is dropped), so that one cause is one row.
    pub reason: String,
    pub count: i64,
    /// One recipient's reason as it was recorded (absent on the row of other reasons).
    pub example: Option<String>,
}

/// How many reasons [`failure_reasons`] lists before it folds the rest into one row.
pub const LISTED_REASONS: i64 = 50;

/// Campaign `id`'s [`LISTED_REASONS`] commonest reasons for failed recipients, commonest
/// first; if there are more, a last row `(N other reasons)` counts their recipients, so the
/// counts always add up to the campaign's failed recipients.
///
/// Grouped on the reason as recorded first (cheap), then on its normalized form: a regular
/// expression for each distinct text, not each recipient's. Only cheap expressions: a UUID's
/// pattern cost PostgreSQL about 6 s over a million distinct texts, a digit run's nothing
/// measurable.
pub async fn failure_reasons(pool: &PgPool, id: Uuid) -> Result<Vec<ErrorCount>, sqlx::Error> {
    sqlx::query_as!(
        ErrorCount,
        r#"WITH exact AS (
             SELECT coalesce(last_error, 'unknown') AS reason, count(*) AS n
             FROM recipients WHERE campaign_id = $1 AND state = 'failed'
             GROUP BY 1
         ),
         kinds AS (
             SELECT regexp_replace(split_part(reason, ' [fbtrace_id ', 1), '\+\d{7,}|\d{9,}', '…', 'g') AS reason,
                    sum(n)::int8 AS n, min(reason) AS example
             FROM exact GROUP BY 1
         ),
         ranked AS (
             SELECT reason, n, example, row_number() OVER (ORDER BY n DESC, reason) AS place
             FROM kinds
         )
         SELECT reason AS "reason!", n AS "count!", example
         FROM (SELECT reason, n, example, place FROM ranked WHERE place <= $2
               UNION ALL
               SELECT '(' || count(*) || ' other reasons)', sum(n)::int8, NULL, $2 + 1
               FROM ranked WHERE place > $2 HAVING count(*) > 0) listed
         ORDER BY place"#,
        id,
        LISTED_REASONS,
    )
    .fetch_all(pool)
    .await
}

/// A new campaign, validated by the caller.
#[derive(Debug, Clone)]
pub struct NewCampaignRow<'a> {
    pub tenant_id: Uuid,
    pub provider_id: Uuid,
    pub overflow_provider_id: Option<Uuid>,
    pub name: &'a str,
    pub channel: &'a str,
    pub template: &'a str,
    pub batch_size: i32,
    pub weight: i32,
    pub start_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Its quiet hours' opening and closing times, in `time_zone`.
    pub quiet: Option<(chrono::NaiveTime, chrono::NaiveTime)>,
    pub time_zone: &'a str,
    pub segment_id: Option<Uuid>,
    /// The client's idempotency key and its request's hash ([`held_key`]).
    pub idempotency: Option<(&'a str, &'a [u8])>,
}

/// The constraint a second campaign under a key held is refused by: the first request's
/// campaign is then the answer.
pub const IDEMPOTENCY_KEY: &str = "campaign_idempotency_pkey";

/// Creates a draft campaign, with its idempotency key if it has one; returns its id. A key
/// held already is [`IDEMPOTENCY_KEY`]'s error, and nothing is made.
pub async fn create(pool: &PgPool, c: &NewCampaignRow<'_>) -> Result<Uuid, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let id = sqlx::query_scalar!(
        "INSERT INTO campaigns (tenant_id, provider_id, name, channel, template, batch_size, weight,
                                start_at, expires_at, quiet_start, quiet_end, time_zone, segment_id,
                                overflow_provider_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
        c.tenant_id,
        c.provider_id,
        c.name,
        c.channel,
        c.template,
        c.batch_size,
        c.weight,
        c.start_at,
        c.expires_at,
        c.quiet.map(|q| q.0),
        c.quiet.map(|q| q.1),
        c.time_zone,
        c.segment_id,
        c.overflow_provider_id,
    )
    .fetch_one(&mut *tx)
    .await?;
    if let Some((key, hash)) = c.idempotency {
        sqlx::query!(
            "INSERT INTO campaign_idempotency (tenant_id, key, campaign_id, request_hash)
             VALUES ($1, $2, $3, $4)",
            c.tenant_id,
            key,
            id,
            hash,
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(id)
}

/// The campaign tenant `tenant` created under idempotency key `key` in the last 24 hours,
/// with its request's hash. A key is held that long (not, as a message's, for as long as
/// its message waits: a create sent again makes only a draft), and a use of it older than
/// that is released here, so that the key may make a new campaign before the
/// housekeeping ([`release_keys`]) comes to it.
pub async fn held_key(
    pool: &PgPool,
    tenant: Uuid,
    key: &str,
) -> Result<Option<(Uuid, Vec<u8>)>, sqlx::Error> {
    let held = sqlx::query!(
        // One round trip: the release and the read never match the same row.
        "WITH released AS (
             DELETE FROM campaign_idempotency
             WHERE tenant_id = $1 AND key = $2 AND created_at <= now() - interval '24 hours'
         )
         SELECT campaign_id, request_hash FROM campaign_idempotency
         WHERE tenant_id = $1 AND key = $2 AND created_at > now() - interval '24 hours'",
        tenant,
        key,
    )
    .fetch_optional(pool)
    .await?;
    Ok(held.map(|row| (row.campaign_id, row.request_hash)))
}

/// Releases up to `batch` idempotency keys past their 24 hours; answers how many.
pub async fn release_keys(pool: &PgPool, batch: i64) -> Result<u64, sqlx::Error> {
    let released = sqlx::query!(
        "DELETE FROM campaign_idempotency WHERE (tenant_id, key) IN (
             SELECT tenant_id, key FROM campaign_idempotency
             WHERE created_at <= now() - interval '24 hours'
             ORDER BY created_at LIMIT $1)",
        batch,
    )
    .execute(pool)
    .await?;
    Ok(released.rows_affected())
}

/// What starting a campaign checks, read with the campaign locked until the transaction ends.
#[derive(Debug, Clone)]
pub struct Startable {
    pub status: String,
    pub tenant_id: Uuid,
    pub template: String,
    pub segment_id: Option<Uuid>,
    pub expires_at: Option<DateTime<Utc>>,
}

pub async fn lock_for_start(tx: &mut PgConnection, id: Uuid) -> Result<Startable, sqlx::Error> {
    sqlx::query_as!(
        Startable,
        // Not `FOR UPDATE`, which would also hold up every insert whose foreign key names
        // the campaign (its delivery counters, from receipts of every tenant) while a big
        // segment's audience is written.
        "SELECT status, tenant_id, template, segment_id, expires_at FROM campaigns
         WHERE id = $1 FOR NO KEY UPDATE",
        id,
    )
    .fetch_one(tx)
    .await
}

/// Serializes one tenant's campaign starts until the caller's transaction ends, and answers
/// how many of its campaigns are scheduled, running or paused: a count no concurrent start
/// of the same tenant changes before the caller commits. Other tenants never wait.
pub async fn lock_starts(tx: &mut PgConnection, tenant: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended('herald.starts.' || $1::text, 0))",
        tenant as _,
    )
    .execute(&mut *tx)
    .await?;
    active_campaigns(tx, tenant).await
}

/// How many of `tenant`'s campaigns are scheduled, running or paused.
pub async fn active_campaigns(conn: &mut PgConnection, tenant: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM campaigns
           WHERE tenant_id = $1 AND kind = 'campaign' AND status IN ('scheduled', 'running', 'paused')"#,
        tenant,
    )
    .fetch_one(conn)
    .await
}

/// Whether campaign `id` has any recipient. Asked of its addresses, written with each
/// recipient: every index of recipients by campaign is partial (by state), so the same
/// question of recipients scanned the whole table, every tenant's rows, for an empty
/// campaign.
pub async fn has_recipients(tx: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM campaign_addresses WHERE campaign_id = $1) AS "exists!""#,
        id,
    )
    .fetch_one(tx)
    .await
}

/// Schedules draft campaign `id` to start at `start_at` (else its own start, else now). One
/// started now is `started_at` now, not at the scheduler's next tick: time to first send
/// counts from here.
pub async fn schedule(
    tx: &mut PgConnection,
    id: Uuid,
    start_at: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE campaigns SET status = 'scheduled', start_at = coalesce($2, start_at, now()),
                started_at = CASE WHEN coalesce($2, start_at, now()) <= now() THEN now() END
         WHERE id = $1",
        id,
        start_at,
    )
    .execute(&mut *tx)
    .await?;
    wake_if_due(tx, &[id]).await
}

/// Wakes the scheduler (`herald_shared::wake`, at the caller's commit) for the providers of
/// those of campaigns `ids` that may start now, once per provider, so their first batches
/// go out at once rather than at the next tick; a campaign started for later, or paused,
/// wakes nothing.
pub async fn wake_if_due(conn: &mut PgConnection, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    notify_lanes(conn, ids, true).await
}

/// Wakes the scheduler (at the caller's commit) for the providers of campaigns `ids`, once
/// per provider, whatever their status: for campaigns just paused or cancelled, and message
/// streams just resumed.
async fn wake_lanes(conn: &mut PgConnection, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    notify_lanes(conn, ids, false).await
}

/// Notifies the providers of campaigns `ids` (only of those that may start now if
/// `only_due`), once per provider.
async fn notify_lanes(
    conn: &mut PgConnection,
    ids: &[Uuid],
    only_due: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "SELECT pg_notify($1, w.p::text) FROM (
             SELECT DISTINCT v.p FROM campaigns c
             CROSS JOIN LATERAL (VALUES (c.provider_id), (c.overflow_provider_id)) v(p)
             WHERE c.id = ANY($2) AND v.p IS NOT NULL
               AND (NOT $3 OR (c.start_at <= now() AND c.status IN ('scheduled', 'running')))
         ) w",
        herald_shared::wake::CHANNEL,
        ids,
        only_due,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A campaign as the admin lists it: its definition, its tenant's name and its progress.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Listed {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub tenant_name: String,
    pub name: String,
    pub provider_id: Uuid,
    pub overflow_provider_id: Option<Uuid>,
    pub channel: String,
    pub template: String,
    pub status: String,
    pub batch_size: i32,
    pub weight: i32,
    pub start_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub quiet_start: Option<chrono::NaiveTime>,
    pub quiet_end: Option<chrono::NaiveTime>,
    pub time_zone: String,
    pub segment_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub pause_reason: Option<String>,
    #[sqlx(flatten)]
    pub counts: Counts,
}

/// Which campaigns a listing shows, and where its page starts.
#[derive(Debug, Clone, Default)]
pub struct ListFilter<'a> {
    pub status: Option<&'a str>,
    pub tenant: Option<Uuid>,
    /// Names containing this text, case-insensitively, matched as typed (`%` and `_` too).
    pub name: Option<&'a str>,
    /// The last campaign of the previous page: the list is newest first, the id breaking
    /// ties between campaigns created in the same microsecond.
    pub after: Option<(DateTime<Utc>, Uuid)>,
    /// At most this many rows.
    pub limit: i64,
}

/// Campaigns with their counters, as `scope` sees them; callers append `AND …`. A tenant's
/// stream of transactional messages is a campaign only inside Herald: never listed as one.
fn select_listed(scope: Scope) -> QueryBuilder<Postgres> {
    let mut qb = QueryBuilder::new(concat!(
        "SELECT c.id, c.tenant_id, t.name AS tenant_name, c.name, c.provider_id,
                c.overflow_provider_id, c.channel, c.template, c.status, c.batch_size, c.weight,
                c.start_at, c.expires_at, c.quiet_start, c.quiet_end, c.time_zone, c.segment_id,
                c.created_at, c.pause_reason, ",
        counts_columns!(),
        " FROM campaigns c JOIN tenants t ON t.id = c.tenant_id ",
        counts_join!(),
        " WHERE c.kind = 'campaign' AND ("
    ));
    qb.push_bind(scope)
        .push("::uuid IS NULL OR c.tenant_id = ")
        .push_bind(scope)
        .push(")");
    qb
}

/// A page of the campaigns `scope` sees that pass `filter`, newest first.
pub async fn list(
    pool: &PgPool,
    scope: Scope,
    filter: &ListFilter<'_>,
) -> Result<Vec<Listed>, sqlx::Error> {
    let mut qb = select_listed(scope);
    if let Some(status) = filter.status {
        qb.push(" AND c.status = ").push_bind(status.to_owned());
    }
    if let Some(tenant) = filter.tenant {
        qb.push(" AND c.tenant_id = ").push_bind(tenant);
    }
    if let Some(name) = filter.name {
        // strpos, not LIKE: the text is matched as typed.
        qb.push(" AND strpos(lower(c.name), lower(")
            .push_bind(name.to_owned())
            .push(")) > 0");
    }
    if let Some((created_at, id)) = filter.after {
        qb.push(" AND (c.created_at, c.id) < (")
            .push_bind(created_at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    qb.push(" ORDER BY c.created_at DESC, c.id DESC LIMIT ")
        .push_bind(filter.limit);
    qb.build_query_as().fetch_all(pool).await
}

/// Campaign `id` as [`list`] shows it, if `scope` sees it.
pub async fn listed(pool: &PgPool, scope: Scope, id: Uuid) -> Result<Option<Listed>, sqlx::Error> {
    let mut qb = select_listed(scope);
    qb.push(" AND c.id = ").push_bind(id);
    qb.build_query_as().fetch_optional(pool).await
}

/// What adding recipients to a campaign checks, read with the campaign locked until the
/// caller's transaction ends (so a concurrent start waits for the upload: a campaign never
/// starts on half an audience).
#[derive(Debug, Clone)]
pub struct Uploadable {
    pub status: String,
    pub template: String,
    /// Its tenant's default region for phone numbers.
    pub default_region: Option<String>,
    /// Past its expiry: nothing added would ever be sent.
    pub expired: bool,
}

/// Campaign `id`'s [`Uploadable`], locked until the caller's transaction ends.
pub async fn lock_for_upload(tx: &mut PgConnection, id: Uuid) -> Result<Uploadable, sqlx::Error> {
    sqlx::query_as!(
        Uploadable,
        r#"SELECT c.status, c.template, t.default_region,
                coalesce(c.expires_at <= clock_timestamp(), false) AS "expired!"
         FROM campaigns c JOIN tenants t ON t.id = c.tenant_id
         -- Not `FOR UPDATE`: that would also hold up, as long as the upload streams, every
         -- insert whose foreign key names the campaign (its delivery counters, from
         -- receipts of every tenant). A start still waits (it takes the same lock).
         WHERE c.id = $1 FOR NO KEY UPDATE OF c"#,
        id,
    )
    .fetch_one(tx)
    .await
}

/// Whether campaign `id` is past its expiry now (by the clock, not the transaction's start:
/// an upload asks just before its commit, however long it streamed).
pub async fn expired_now(tx: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT coalesce(expires_at <= clock_timestamp(), false) AS "expired!"
         FROM campaigns WHERE id = $1"#,
        id,
    )
    .fetch_one(tx)
    .await
}
