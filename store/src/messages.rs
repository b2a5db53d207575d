//! Transactional messages: accepting them into their tenant's streams (a stream is a hidden
//! campaign of kind `messages`, always running, one per provider, channel, overflow and
//! quiet hours; each message is a recipient of it beside a `messages` row), the idempotency
//! keys and quotas accepting judges, and reading messages back.
//!
//! A message is read through [`fetch`] and [`list`] into the caller's own row
//! type (the admin's API type), so the store holds the statements and the admin the shape it
//! answers with.

use crate::tenants::Scope;
use chrono::{DateTime, NaiveTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgConnection, PgPool, Postgres, QueryBuilder};
use std::collections::HashMap;
use utoipa::ToSchema;
use uuid::Uuid;

/// Serializes one tenant's accepts until the caller's transaction ends: its quota and keys
/// are judged on a state no concurrent accept of the same tenant is changing. Other tenants
/// never wait.
pub async fn lock_tenant(tx: &mut PgConnection, tenant: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended('herald.messages.' || $1::text, 0))",
        tenant as _,
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// The messages that hold `keys`, with their requests' hashes, by key. A key is held 24
/// hours, and after that until its message is finished: released while the message still
/// waits (a day's backlog, a provider's refusal holding it), a retry would send it a second
/// time. Uses of the same keys past that are released first.
pub async fn earlier_requests(
    tx: &mut PgConnection,
    tenant: Uuid,
    keys: &[String],
) -> Result<HashMap<String, (Uuid, Vec<u8>)>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    // What `held_keys` reads as held, negated.
    sqlx::query!(
        "UPDATE messages m SET idempotency_key = NULL
         WHERE m.tenant_id = $1 AND m.idempotency_key = ANY($2)
           AND m.created_at <= now() - interval '24 hours'
           AND EXISTS (SELECT 1 FROM recipients r
                       WHERE r.id = m.recipient_id
                         AND r.state IN ('sent', 'failed', 'cancelled', 'expired'))",
        tenant,
        keys,
    )
    .execute(&mut *tx)
    .await?;
    held_keys(tx, tenant, keys).await
}

/// As [`earlier_requests`], read without the tenant's lock and releasing nothing: which
/// requests of `keys` are replays is known before they are checked, so that a retry
/// replays its message whatever changed since (a default provider removed, the tenant's
/// region), as the first answer said.
pub async fn held_keys(
    db: impl sqlx::PgExecutor<'_>,
    tenant: Uuid,
    keys: &[String],
) -> Result<HashMap<String, (Uuid, Vec<u8>)>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query!(
        // Matched by `= ANY`, so never NULL.
        r#"SELECT m.idempotency_key AS "idempotency_key!", m.id, m.request_hash FROM messages m
           WHERE m.tenant_id = $1 AND m.idempotency_key = ANY($2)
             AND (m.created_at > now() - interval '24 hours'
                  OR NOT EXISTS (SELECT 1 FROM recipients r
                                 WHERE r.id = m.recipient_id
                                   AND r.state IN ('sent', 'failed', 'cancelled', 'expired')))"#,
        tenant,
        keys,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.idempotency_key, (row.id, row.request_hash)))
        .collect())
}

/// What admitting more of a tenant's messages is judged on.
#[derive(Debug, Clone)]
pub struct Admission {
    /// Its messages accepted and not yet finished.
    pub waiting: i64,
    /// Its `max_queued_messages`.
    pub quota: i32,
    /// How many of its messages went out per second over the last 10 seconds.
    pub per_second: f64,
    /// Its `max_messages_per_day`, if the operator set one.
    pub daily_cap: Option<i32>,
    /// Its messages accepted since its midnight.
    pub today: i64,
    /// Seconds until its next midnight.
    pub to_midnight: f64,
}

pub async fn admission(tx: &mut PgConnection, tenant: Uuid) -> Result<Admission, sqlx::Error> {
    sqlx::query_as!(
        Admission,
        r#"SELECT (SELECT coalesce(sum(herald_unfinished(k.state, k.n, true)), 0)::int8
                 FROM campaigns c JOIN campaign_bucket_counts k ON k.campaign_id = c.id
                 WHERE c.tenant_id = t.id AND c.kind = 'messages') AS "waiting!",
                t.max_queued_messages AS quota,
                (SELECT coalesce(sum(s.sent), 0)::float8 / 10
                 FROM campaigns c JOIN campaign_send_seconds s ON s.campaign_id = c.id
                 WHERE c.tenant_id = t.id AND c.kind = 'messages'
                   AND s.second >= date_trunc('second', now()) - interval '10 seconds') AS "per_second!",
                t.max_messages_per_day AS daily_cap,
                coalesce((SELECT md.accepted FROM tenant_message_days md
                          WHERE md.tenant_id = t.id
                            AND md.day = (now() AT TIME ZONE t.time_zone)::date), 0) AS "today!",
                extract(epoch FROM d.next_midnight - now())::float8 AS "to_midnight!"
         FROM tenants t
         CROSS JOIN LATERAL (
             -- Days are counted in the tenant's zone: a day there may last 23 or 25 hours.
             SELECT (date_trunc('day', now() AT TIME ZONE t.time_zone) + interval '1 day')
                        AT TIME ZONE t.time_zone AS next_midnight
         ) d
         WHERE t.id = $1"#,
        tenant,
    )
    .fetch_one(tx)
    .await
}

/// What makes messages share a stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamKey {
    pub tenant: Uuid,
    pub provider: Uuid,
    pub overflow: Option<Uuid>,
    pub channel: String,
    /// Its quiet hours (start, end), in `zone`.
    pub quiet: Option<(NaiveTime, NaiveTime)>,
    pub zone: String,
}

/// A tenant's stream, as a message accepted into it sees it.
#[derive(Debug, Clone)]
pub struct Stream {
    pub id: Uuid,
    /// Why it is held (paused: its provider refused Herald's credentials), if it is.
    pub held: Option<String>,
}

/// The template of every stream: the message's text, rendered when it was accepted.
const STREAM_TEMPLATE: &str = "{{text}}";
/// Most of a stream's messages one tick releases (the tenant's fair share caps it anyway).
const STREAM_BATCH: i32 = 10_000;

/// Most streams one tenant may have. Each is a campaign every tick looks at (about 10 µs
/// each, measured with 10,000 campaigns), and a stream is made for each combination of
/// provider, overflow, channel, quiet hours and zone a message asks for: without a bound,
/// one tenant's messages, each with quiet hours a minute apart, would slow every tenant's
/// ticks.
pub const MAX_STREAMS_PER_TENANT: i64 = 1_000;

/// The stream `key` names, made (or started again) on first use; `None` if that would make
/// more than [`MAX_STREAMS_PER_TENANT`] of the tenant's live ones (the caller holds the
/// tenant's lock, so the count holds until it commits).
pub async fn stream(tx: &mut PgConnection, key: &StreamKey) -> Result<Option<Stream>, sqlx::Error> {
    // Nearly every accept finds its stream running: read, not upserted. An upsert locks the
    // row it meets even when it changes nothing, and a batch's streams, locked in the
    // request's order, could wait in a cycle with a statement that locks campaign rows in
    // id order (a worker pausing two of the tenant's streams at once): a deadlock.
    if let Some((stream, true)) = find_stream(&mut *tx, key).await? {
        return Ok(Some(stream));
    }
    // A new stream, or an ended one started again: one more the ticks look at.
    let streams = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM campaigns
         WHERE tenant_id = $1 AND kind = 'messages' AND status NOT IN ('completed', 'cancelled')"#,
        key.tenant,
    )
    .fetch_one(&mut *tx)
    .await?;
    if streams >= MAX_STREAMS_PER_TENANT {
        return Ok(None);
    }
    sqlx::query!(
        "INSERT INTO campaigns (tenant_id, provider_id, overflow_provider_id, channel, name, template,
                                status, kind, started_at, batch_size, time_zone, quiet_start,
                                quiet_end)
         SELECT $1, $2, $3, $4,
                left('messages: ' || $4 || ' via ' || p.name
                     || CASE WHEN $8::time IS NULL THEN ''
                             ELSE ', quiet ' || to_char($8::time, 'HH24:MI') || '–'
                                  || to_char($9::time, 'HH24:MI') || ' ' || $7 END, 200),
                $5, 'running', 'messages', now(), $6, $7, $8, $9
         FROM providers p WHERE p.id = $2
         ON CONFLICT (tenant_id, provider_id, channel,
                      coalesce(overflow_provider_id, '00000000-0000-0000-0000-000000000000'),
                      coalesce(quiet_start, '00:00'), coalesce(quiet_end, '00:00'), time_zone)
            WHERE kind = 'messages'
         -- An ended stream (idle, `retire_idle_streams`) runs again for the message that
         -- needs it: one left ended would swallow every message accepted into it.
         DO UPDATE SET status = 'running', completed_at = NULL, started_at = now()
            WHERE campaigns.status IN ('completed', 'cancelled')",
        key.tenant,
        key.provider,
        key.overflow,
        &key.channel,
        STREAM_TEMPLATE,
        STREAM_BATCH,
        &key.zone,
        key.quiet.map(|q| q.0),
        key.quiet.map(|q| q.1),
    )
    .execute(&mut *tx)
    .await?;
    find_stream(tx, key)
        .await?
        .map(|(stream, _)| Some(stream))
        .ok_or(sqlx::Error::RowNotFound)
}

/// How long a stream must have had nothing to send, and sent nothing (the send-rate
/// samples kept: 10 minutes), since it started before it is ended.
const STREAM_IDLE: &str = "10 minutes";

/// Ends (`completed`) up to 1,000 running streams that have nothing left to send and have
/// sent nothing for [`STREAM_IDLE`]; returns how many. Each running stream is a campaign
/// every tick looks at, and counts toward its tenant's [`MAX_STREAMS_PER_TENANT`]: left
/// running, every combination of terms a tenant ever used would cost every tick for good,
/// and a tenant past a thousand of them over its life could open no new one. The next
/// message on the same terms starts it again ([`stream`]).
///
/// A message is accepted into a stream under its tenant's lock ([`lock_tenant`]), having
/// found the stream running. The locks are taken first, and streams whose tenant is busy
/// are left for a later round; what is left to send is then read afresh: every accept that
/// committed before is seen, and every later one finds the stream ended and starts it again.
pub async fn retire_idle_streams(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let idle = format!(
        "c.kind = 'messages' AND c.status = 'running'
         AND c.started_at < now() - interval '{STREAM_IDLE}'
         AND NOT EXISTS (SELECT 1 FROM campaign_send_seconds s WHERE s.campaign_id = c.id)
         AND coalesce((SELECT sum(herald_unfinished(k.state, k.n, true))
                       FROM campaign_bucket_counts k WHERE k.campaign_id = c.id), 0) = 0"
    );
    let mut tx = pool.begin().await?;
    // From a place that moves every round (a random id, wrapping around): in id order
    // from the first, a tenant accepting without pause, whose idle streams came first,
    // would have every round try the same thousand and retire none.
    let candidates: Vec<(Uuid, Uuid)> = QueryBuilder::<Postgres>::new(format!(
        "SELECT c.id, c.tenant_id FROM campaigns c, (SELECT gen_random_uuid() AS at) r
         WHERE {idle} ORDER BY c.id < r.at, c.id LIMIT 1000"
    ))
    .build_query_as()
    .fetch_all(&mut *tx)
    .await?;
    if candidates.is_empty() {
        return Ok(0);
    }
    let tenants: Vec<Uuid> = candidates.iter().map(|&(_, tenant)| tenant).collect();
    let locked: Vec<Uuid> = sqlx::query_scalar!(
        r#"SELECT t AS "t!" FROM (SELECT DISTINCT unnest($1::uuid[]) AS t) d
         WHERE pg_try_advisory_xact_lock(hashtextextended('herald.messages.' || t::text, 0))"#,
        &tenants,
    )
    .fetch_all(&mut *tx)
    .await?;
    let streams: Vec<Uuid> = candidates
        .iter()
        .filter(|(_, tenant)| locked.contains(tenant))
        .map(|&(id, _)| id)
        .collect();
    // Rows in id order, busy ones skipped, as the statements that lock several campaigns
    // take them.
    let mut qb = QueryBuilder::<Postgres>::new(
        "WITH chosen AS MATERIALIZED (
             SELECT c.id FROM campaigns c WHERE c.id = ANY(",
    );
    qb.push_bind(streams).push(format!(
        ") AND {idle} ORDER BY c.id FOR NO KEY UPDATE SKIP LOCKED
         )
         UPDATE campaigns SET status = 'completed', completed_at = now()
         WHERE id IN (SELECT id FROM chosen)"
    ));
    let done = qb.build().execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(done.rows_affected())
}

/// The stream `key` names, if there is one, and whether it is live (not ended).
async fn find_stream(
    tx: &mut PgConnection,
    key: &StreamKey,
) -> Result<Option<(Stream, bool)>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT id, CASE WHEN status = 'paused' THEN coalesce(pause_reason, 'paused') END AS "held?",
                  status NOT IN ('completed', 'cancelled') AS "live!"
         FROM campaigns
         WHERE kind = 'messages' AND tenant_id = $1 AND provider_id = $2 AND channel = $4
           AND overflow_provider_id IS NOT DISTINCT FROM $3 AND time_zone = $5
           AND quiet_start IS NOT DISTINCT FROM $6 AND quiet_end IS NOT DISTINCT FROM $7"#,
        key.tenant,
        key.provider,
        key.overflow,
        &key.channel,
        &key.zone,
        key.quiet.map(|q| q.0),
        key.quiet.map(|q| q.1),
    )
    .fetch_optional(tx)
    .await?;
    Ok(row.map(|row| {
        (
            Stream {
                id: row.id,
                held: row.held,
            },
            row.live,
        )
    }))
}

/// New messages of one tenant, column by column (the i-th of each is one message).
#[derive(Debug, Clone, Default)]
pub struct MessageRows {
    pub ids: Vec<Uuid>,
    /// Each one's stream.
    pub streams: Vec<Uuid>,
    pub addresses: Vec<String>,
    /// Its variables, the rendered `text` among them.
    pub variables: Vec<Value>,
    pub expiries: Vec<Option<DateTime<Utc>>>,
    pub keys: Vec<Option<String>>,
    /// What makes two requests the same request (see the idempotency keys).
    pub hashes: Vec<Vec<u8>>,
}

/// Stores tenant `tenant`'s `new` messages in one statement, both rows of each (the
/// recipient and the message); returns their creation time. A burst of 50,000 is 50
/// statements.
pub async fn insert(
    tx: &mut PgConnection,
    tenant: Uuid,
    new: &MessageRows,
) -> Result<DateTime<Utc>, sqlx::Error> {
    // `i` is read twice, so it is computed once: each message's recipient id is drawn once
    // and both rows name it, without relying on the order of an INSERT's RETURNING.
    sqlx::query_scalar!(
        r#"WITH i AS (
             SELECT nextval(pg_get_serial_sequence('recipients', 'id')) AS recipient_id, i.*
             FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::jsonb[], $5::timestamptz[],
                         $6::text[], $7::bytea[])
                  AS i(id, campaign_id, address, variables, expires_at, idempotency_key, request_hash)
         ), recipients_added AS (
             INSERT INTO recipients (id, campaign_id, address, variables, transactional, expires_at)
             OVERRIDING SYSTEM VALUE
             SELECT recipient_id, campaign_id, address, variables, true, expires_at FROM i
         ), messages_added AS (
             -- Dated when this statement began (after the tenant's lock), not when its
             -- transaction did: one that waited behind a large batch would otherwise date
             -- its messages before that batch's, and a client polling with `since` past
             -- the batch would never see them.
             INSERT INTO messages (id, tenant_id, recipient_id, address, idempotency_key, request_hash, created_at)
             SELECT id, $8, recipient_id, address, idempotency_key, request_hash, statement_timestamp() FROM i
             RETURNING created_at
         ), today AS (
             SELECT (now() AT TIME ZONE t.time_zone)::date AS day FROM tenants t WHERE t.id = $8
         ), counted AS (
             -- The day's count the daily cap is judged on (the caller holds the tenant's lock).
             INSERT INTO tenant_message_days (tenant_id, day, accepted)
             SELECT $8, today.day, (SELECT count(*) FROM i) FROM today
             ON CONFLICT (tenant_id, day)
                DO UPDATE SET accepted = tenant_message_days.accepted + EXCLUDED.accepted
         ), pruned AS (
             DELETE FROM tenant_message_days md USING today
             WHERE md.tenant_id = $8 AND md.day < today.day - 1
         )
         SELECT coalesce(max(created_at), now()) AS "created_at!" FROM messages_added"#,
        &new.ids,
        &new.streams,
        &new.addresses,
        &new.variables,
        &new.expiries as _,
        &new.keys as _,
        &new.hashes,
        tenant,
    )
    .fetch_one(tx)
    .await
}

/// What [`cancel`] did to a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancelled {
    /// It waited (`pending`, or `queued`: its dispatch, already published, is acked unsent
    /// by the worker's lease, which takes only a `queued` row) and is `cancelled` now, or
    /// was already.
    Now,
    /// It was past waiting, in this state: in flight (`sending`, `unknown`) or final.
    TooLate(String),
    /// It waits, but an earlier request for it may have been sent (its answer was lost):
    /// withdrawn, it could still reach the recipient, and its receipt turn it `sent`.
    MaybeSent,
}

/// Cancels message `id`, if `scope` sees it (`None` if not), it still waits and no earlier
/// request for it may have been sent.
pub async fn cancel(
    pool: &PgPool,
    scope: Scope,
    id: Uuid,
) -> Result<Option<Cancelled>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // The row is locked first: a claim (→ `queued`) or a lease (→ `sending`) taking it
    // meanwhile is waited for, and the state read is the one the update sees.
    let Some(row) = sqlx::query!(
        r#"SELECT r.state, r.outcome_unknown_at IS NOT NULL AS "maybe_sent!"
         FROM messages m JOIN recipients r ON r.id = m.recipient_id
         WHERE m.id = $1 AND ($2::uuid IS NULL OR m.tenant_id = $2)
         FOR NO KEY UPDATE OF r"#,
        id,
        scope.tenant(),
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(None);
    };
    let state = row.state;
    let done = match state.as_str() {
        "cancelled" => Cancelled::Now,
        "pending" | "queued" if row.maybe_sent => Cancelled::MaybeSent,
        "pending" | "queued" => {
            sqlx::query!(
                "UPDATE recipients SET state = 'cancelled', queued_at = NULL, updated_at = now()
                 WHERE id = (SELECT recipient_id FROM messages WHERE id = $1)",
                id,
            )
            .execute(&mut *tx)
            .await?;
            Cancelled::Now
        }
        _ => Cancelled::TooLate(state),
    };
    tx.commit().await?;
    Ok(Some(done))
}

/// Wakes the scheduler for these providers' lanes at the caller's commit, so it dispatches
/// what was just accepted rather than at its next tick (`herald_shared::wake`).
pub async fn wake(tx: &mut PgConnection, providers: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "SELECT pg_notify($1, p::text) FROM (SELECT DISTINCT unnest($2::uuid[]) AS p) w",
        herald_shared::wake::CHANNEL,
        providers,
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// A message's columns, from `m` (messages), `r` (its recipient), `c` (its stream) and `sp` (the
/// provider it was sent through): what the caller's row type reads.
const COLUMNS: &str = "SELECT m.id, m.tenant_id, r.address AS to, c.channel, c.provider_id,
        c.overflow_provider_id, r.variables->>'text' AS text, r.state, r.delivery_status,
        r.delivery_error, r.attempts, r.sent_via, r.provider_message_id,
        CASE WHEN r.state = 'sent' THEN sp.cost_per_message::float8 END AS cost,
        r.last_error, m.idempotency_key, m.created_at, r.sent_at, r.expires_at,
        CASE WHEN c.quiet_start IS NOT NULL THEN
            json_build_object('start', to_char(c.quiet_start, 'HH24:MI'),
                              'end', to_char(c.quiet_end, 'HH24:MI'), 'time_zone', c.time_zone)
        END AS quiet_hours,
        CASE WHEN c.status = 'paused' THEN coalesce(c.pause_reason, 'paused') END AS held";

/// What a message is read with, after `m` and `r` (its recipient).
const JOINED: &str = "JOIN campaigns c ON c.id = r.campaign_id
     LEFT JOIN providers sp ON sp.id = r.sent_via";

fn push_scope(qb: &mut QueryBuilder<Postgres>, scope: Scope) {
    if let Some(tenant) = scope.tenant() {
        qb.push(" AND m.tenant_id = ").push_bind(tenant);
    }
}

/// The messages `ids` that `scope` sees, as [`COLUMNS`].
pub async fn fetch<'c, M>(
    db: impl sqlx::PgExecutor<'c>,
    scope: Scope,
    ids: &[Uuid],
) -> Result<Vec<M>, sqlx::Error>
where
    M: for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    // Driven by the ids, a primary-key lookup each for the message and for its recipient,
    // whatever the estimates: planned on a young table's statistics, `m.id = ANY(…)` walked
    // the tenant's index testing every one of its messages against the 1,000 ids, and the
    // plain join to `recipients` hashed the whole table (250–490 ms a batch in a burst).
    let mut qb = QueryBuilder::<Postgres>::new(format!("{COLUMNS} FROM unnest("));
    qb.push_bind(ids.to_vec()).push(format!(
        "::uuid[]) AS wanted(id)
         CROSS JOIN LATERAL (SELECT * FROM messages m WHERE m.id = wanted.id OFFSET 0) m
         CROSS JOIN LATERAL (SELECT * FROM recipients r WHERE r.id = m.recipient_id OFFSET 0) r
         {JOINED} WHERE true"
    ));
    push_scope(&mut qb, scope);
    qb.build_query_as().fetch_all(db).await
}

/// Which messages a listing shows, and where its page starts.
#[derive(Debug, Clone, Default)]
pub struct ListFilter<'a> {
    pub tenant: Option<Uuid>,
    pub state: Option<&'a str>,
    /// To one of these addresses (the ways one address may be stored), when asked.
    pub to: &'a [String],
    /// Accepted at or after.
    pub since: Option<DateTime<Utc>>,
    /// Accepted before.
    pub until: Option<DateTime<Utc>>,
    /// The last message of the previous page: newest first, the id breaking ties.
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

/// A page of the messages `scope` sees that pass `filter`, newest first, as [`COLUMNS`].
pub async fn list<M>(
    pool: &PgPool,
    scope: Scope,
    filter: &ListFilter<'_>,
) -> Result<Vec<M>, sqlx::Error>
where
    M: for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    let mut qb = QueryBuilder::<Postgres>::new(format!(
        "{COLUMNS} FROM messages m JOIN recipients r ON r.id = m.recipient_id {JOINED}"
    ));
    qb.push(" WHERE true");
    push_scope(&mut qb, scope);
    if let Some(tenant) = filter.tenant {
        qb.push(" AND m.tenant_id = ").push_bind(tenant);
    }
    if let Some(state) = filter.state {
        qb.push(" AND r.state = ").push_bind(state.to_owned());
    }
    // Along `messages_address` (an erased message's address is gone: it is not found). Its
    // predicate written out: a generic plan cannot prove it from `= ANY(<parameter>)`.
    if !filter.to.is_empty() {
        qb.push(" AND m.address IS NOT NULL");
        crate::keyset::push_any_of(&mut qb, "m.address", filter.to);
    }
    if let Some(since) = filter.since {
        qb.push(" AND m.created_at >= ").push_bind(since);
    }
    if let Some(until) = filter.until {
        qb.push(" AND m.created_at < ").push_bind(until);
    }
    if let Some((created_at, id)) = filter.after {
        qb.push(" AND (m.created_at, m.id) < (")
            .push_bind(created_at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    qb.push(" ORDER BY m.created_at DESC, m.id DESC LIMIT ")
        .push_bind(filter.limit);
    qb.build_query_as().fetch_all(pool).await
}

/// One receipt of a message, as received.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageReceipt {
    pub status: String,
    pub raw_status: String,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub provider_time: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
    /// A copy of one received before: kept, not applied again.
    pub duplicate: bool,
}

/// Message `id`'s receipts in the order they came. The caller has checked the message is
/// the caller's to see.
pub async fn receipts(pool: &PgPool, id: Uuid) -> Result<Vec<MessageReceipt>, sqlx::Error> {
    sqlx::query_as!(
        MessageReceipt,
        "SELECT x.status, x.raw_status, x.error_code, x.error_message, x.provider_time,
                x.received_at, x.duplicate
         FROM messages m JOIN receipts x ON x.recipient_id = m.recipient_id
         WHERE m.id = $1 ORDER BY x.received_at, x.id",
        id,
    )
    .fetch_all(pool)
    .await
}
