//! Tenants' status webhooks and the events posted to them (the `status_webhooks` migration
//! says how events are made: by a trigger, in the transaction that changed the message; a
//! test event, when the tenant asks for one). The admin sets, shows and removes a webhook;
//! workers take due events, post them and settle them; the scheduler's housekeeping prunes
//! old ones.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use std::time::Duration;
use uuid::Uuid;

/// A tenant's webhook as the admin shows it (never its secret).
#[derive(Debug, Clone)]
pub struct Webhook {
    pub tenant_id: Uuid,
    pub url: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Until when the secret the last rotation replaced still signs events too.
    pub previous_secret_until: Option<DateTime<Utc>>,
    /// Events not yet delivered (counted up to [`COUNTED`]).
    pub waiting: i64,
    /// When the oldest of those counted happened (or was recovered).
    pub oldest_waiting_at: Option<DateTime<Utc>>,
    /// Why the latest failed post of a waiting event failed, and when.
    pub last_failure: Option<String>,
    pub last_failed_at: Option<DateTime<Utc>>,
    /// Events given up (still not delivered a day after they happened or were recovered,
    /// posted or not), counted up to [`COUNTED`], and the latest time one was.
    pub abandoned: i64,
    pub last_abandoned_at: Option<DateTime<Utc>>,
    /// Since when the endpoint has answered only 5xx, 408 or 429, or not at all (`None`: it
    /// answers as a working one does).
    pub failing_since: Option<DateTime<Utc>>,
    /// While it fails: when it is next posted to (events wait until then).
    pub resume_at: Option<DateTime<Utc>>,
    /// Since when it is disabled, and why: its endpoint answered 410 Gone. Nothing is posted
    /// to it, nor written for it, until it is set again.
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
}

/// The most events of one kind a webhook's summary counts: past that it says "at least".
pub const COUNTED: i64 = 100_000;

/// Gives tenant `tenant` a webhook at `url` with its first secret (sealed); `None` if it has
/// one already (which is left as it is).
pub async fn create(
    pool: &PgPool,
    tenant: Uuid,
    url: &str,
    sealed_secret: &Value,
) -> Result<Option<Webhook>, sqlx::Error> {
    let created = sqlx::query!(
        "INSERT INTO tenant_webhooks (tenant_id, url, secret) VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id) DO NOTHING",
        tenant,
        url,
        sealed_secret,
    )
    .execute(pool)
    .await?
    .rows_affected();
    if created == 0 {
        return Ok(None);
    }
    get(pool, tenant).await
}

/// Sets tenant `tenant`'s webhook with a new secret (sealed): a new webhook, or a new URL
/// and secret for the one it had, whose secret then still signs events beside the new one
/// for `grace` (none if zero). A rotation within the last one's grace keeps the secret that
/// one replaced signing instead (the endpoint may not have taken the one in between: a
/// rotation retried after its answer was lost, say). Events still waiting go to the new URL,
/// at once even if the endpoint was failing.
pub async fn set_with_secret(
    pool: &PgPool,
    tenant: Uuid,
    url: &str,
    sealed_secret: &Value,
    grace: Duration,
) -> Result<Webhook, sqlx::Error> {
    sqlx::query!(
        "INSERT INTO tenant_webhooks (tenant_id, url, secret) VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id) DO UPDATE
         SET url = excluded.url, secret = excluded.secret, updated_at = now(),
             failing_since = NULL, resume_at = NULL, disabled_at = NULL, disabled_reason = NULL,
             previous_secret = CASE
                 WHEN $4::float8 <= 0 THEN NULL
                 WHEN tenant_webhooks.previous_secret_until > now()
                     THEN tenant_webhooks.previous_secret
                 ELSE tenant_webhooks.secret END,
             previous_secret_until = CASE WHEN $4::float8 > 0
                                          THEN now() + make_interval(secs => $4) END",
        tenant,
        url,
        sealed_secret,
        grace.as_secs_f64(),
    )
    .execute(pool)
    .await?;
    get(pool, tenant).await?.ok_or(sqlx::Error::RowNotFound)
}

/// Moves tenant `tenant`'s webhook to `url`, its secret kept; `None` if it has none. Its
/// endpoint's failing, if it was, is forgotten: waiting events go at once (the same URL set
/// again is how a tenant has a mended endpoint tried now).
pub async fn set_url(
    pool: &PgPool,
    tenant: Uuid,
    url: &str,
) -> Result<Option<Webhook>, sqlx::Error> {
    let moved = sqlx::query!(
        "UPDATE tenant_webhooks
         SET url = $2, updated_at = now(), failing_since = NULL, resume_at = NULL,
             disabled_at = NULL, disabled_reason = NULL
         WHERE tenant_id = $1",
        tenant,
        url,
    )
    .execute(pool)
    .await?
    .rows_affected();
    if moved == 0 {
        return Ok(None);
    }
    get(pool, tenant).await
}

/// Tenant `tenant`'s webhook, if it has one.
pub async fn get(pool: &PgPool, tenant: Uuid) -> Result<Option<Webhook>, sqlx::Error> {
    sqlx::query_as!(
        Webhook,
        r#"SELECT w.tenant_id, w.url, w.created_at, w.updated_at,
                  CASE WHEN w.previous_secret_until > now() THEN w.previous_secret_until END
                      AS previous_secret_until,
                  waiting.n AS "waiting!", waiting.oldest AS oldest_waiting_at,
                  failure.last_failure, failure.failed_at AS last_failed_at,
                  abandoned.n AS "abandoned!", abandoned.latest AS last_abandoned_at,
                  w.failing_since, CASE WHEN w.failing_since IS NOT NULL AND w.disabled_at IS NULL
                                        THEN greatest(w.resume_at, now()) END AS resume_at,
                  w.disabled_at, w.disabled_reason
           FROM tenant_webhooks w
           CROSS JOIN LATERAL (
               SELECT count(*) AS n, min(x.since) AS oldest
               FROM (SELECT coalesce(e.recovered_at, e.occurred_at) AS since
                     FROM message_events e
                     WHERE e.tenant_id = w.tenant_id AND e.delivered_at IS NULL
                       AND e.abandoned_at IS NULL
                     LIMIT $2) x
           ) waiting
           LEFT JOIN LATERAL (
               -- The latest failure among the waiting events counted (a top-1 sort).
               SELECT x.last_failure, x.failed_at
               FROM (SELECT e.last_failure, e.failed_at FROM message_events e
                     WHERE e.tenant_id = w.tenant_id AND e.delivered_at IS NULL
                       AND e.abandoned_at IS NULL
                     LIMIT $2) x
               WHERE x.failed_at IS NOT NULL
               ORDER BY x.failed_at DESC LIMIT 1
           ) failure ON true
           CROSS JOIN LATERAL (
               -- Status events only: a test event given up is not recovered.
               SELECT count(*) AS n, max(y.abandoned_at) AS latest
               FROM (SELECT e.abandoned_at FROM message_events e
                     WHERE e.tenant_id = w.tenant_id AND e.abandoned_at IS NOT NULL
                       AND e.kind = 'message.status'
                     LIMIT $2) y
           ) abandoned
           WHERE w.tenant_id = $1"#,
        tenant,
        COUNTED,
    )
    .fetch_optional(pool)
    .await
}

/// Removes tenant `tenant`'s webhook and the events still waiting for it; whether it had one.
pub async fn remove(pool: &PgPool, tenant: Uuid) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let removed = sqlx::query!("DELETE FROM tenant_webhooks WHERE tenant_id = $1", tenant)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query!(
        "DELETE FROM message_events
         WHERE tenant_id = $1 AND delivered_at IS NULL AND abandoned_at IS NULL",
        tenant
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(removed > 0)
}

/// Where an event's posting stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Not delivered yet: due, or waiting for its next try (one may be in flight).
    Waiting,
    /// An endpoint answered a post of it 2xx.
    Delivered,
    /// Given up: not delivered a day after it happened (or was recovered).
    Abandoned,
}

impl Delivery {
    pub const ALL: [Delivery; 3] = [Self::Waiting, Self::Delivered, Self::Abandoned];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Delivered => "delivered",
            Self::Abandoned => "abandoned",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == text)
    }

    /// The condition on `message_events e` that holds of events where this one stands.
    fn condition(self) -> &'static str {
        match self {
            Self::Waiting => " AND e.delivered_at IS NULL AND e.abandoned_at IS NULL",
            Self::Delivered => " AND e.delivered_at IS NOT NULL",
            Self::Abandoned => " AND e.abandoned_at IS NOT NULL",
        }
    }
}

/// One event of a tenant's as its list shows it: what was (or is to be) posted, and how
/// its posts went.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ListedEvent {
    /// The event's id in its posts.
    pub public_id: Uuid,
    pub kind: String,
    pub occurred_at: DateTime<Utc>,
    pub message_id: Option<Uuid>,
    pub state: String,
    pub delivery_status: Option<String>,
    pub last_error: Option<String>,
    pub delivery_error: Option<String>,
    pub provider_message_id: Option<String>,
    /// Posts since it happened or was last recovered, one in flight included.
    pub attempts: i32,
    /// While waiting: not posted before then (while a post is in flight, when it may be
    /// taken again; while the endpoint is failing, its next probe at the earliest).
    pub next_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub abandoned_at: Option<DateTime<Utc>>,
    pub recovered_at: Option<DateTime<Utc>>,
    /// The latest failed post since it happened or was last recovered, and when.
    pub last_failure: Option<String>,
    pub failed_at: Option<DateTime<Utc>>,
}

/// Where a list of events goes on from: the last one shown (events are listed newest first).
pub type EventKey = (DateTime<Utc>, Uuid);

/// Up to `limit` of tenant `tenant`'s events (kept as long as receipts are), newest first,
/// after `after`, of one `kind` and standing at `delivery` if given.
pub async fn list_events(
    pool: &PgPool,
    tenant: Uuid,
    delivery: Option<Delivery>,
    kind: Option<&str>,
    after: Option<EventKey>,
    limit: i64,
) -> Result<Vec<ListedEvent>, sqlx::Error> {
    // Read backwards through `message_events_listed`; each condition is written only when
    // given, so that the cursor is an index bound in every plan.
    let mut qb = sqlx::QueryBuilder::<sqlx::Postgres>::new(
        "SELECT e.public_id, e.kind, e.occurred_at, e.message_id, e.state, e.delivery_status,
                e.last_error, e.delivery_error, e.provider_message_id,
                e.attempts - e.retry_base AS attempts,
                -- None is posted while the webhook is disabled: no next post to show.
                CASE WHEN w.disabled_at IS NOT NULL THEN NULL
                     WHEN w.failing_since IS NOT NULL THEN greatest(e.next_at, w.resume_at)
                     ELSE e.next_at END AS next_at,
                e.delivered_at, e.abandoned_at, e.recovered_at, e.last_failure, e.failed_at
         FROM message_events e
         LEFT JOIN tenant_webhooks w ON w.tenant_id = e.tenant_id
         WHERE e.public_id IS NOT NULL AND e.tenant_id = ",
    );
    qb.push_bind(tenant);
    if let Some(delivery) = delivery {
        qb.push(delivery.condition());
    }
    if let Some(kind) = kind {
        qb.push(" AND e.kind = ").push_bind(kind.to_owned());
    }
    if let Some((at, id)) = after {
        qb.push(" AND (e.occurred_at, e.public_id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    qb.push(" ORDER BY e.occurred_at DESC, e.public_id DESC LIMIT ")
        .push_bind(limit);
    qb.build_query_as().fetch_all(pool).await
}

/// An event taken to be posted, with where and how to sign it.
#[derive(Debug, Clone)]
pub struct DueEvent {
    pub id: i64,
    /// The event's id in its posts.
    pub public_id: Uuid,
    /// `message.status`, or `webhook.test` (which names no message).
    pub kind: String,
    pub tenant_id: Uuid,
    pub message_id: Option<Uuid>,
    pub state: String,
    pub delivery_status: Option<String>,
    pub last_error: Option<String>,
    pub delivery_error: Option<String>,
    pub provider_message_id: Option<String>,
    pub occurred_at: DateTime<Utc>,
    /// What its age is counted from (when it happened, or was last recovered).
    pub aged_from: DateTime<Utc>,
    /// Posts taken, this one included: the token its outcome is settled with.
    pub attempts: i32,
    /// Of those, the posts since it was last recovered (what its retries are spaced by).
    pub tries: i32,
    pub url: String,
    /// The tenant's secret as stored (sealed), and the one it replaced while that still
    /// signs too.
    pub secret: Value,
    pub previous_secret: Option<Value>,
    /// The webhook's `updated_at` when taken: what this post says of its endpoint is
    /// recorded only while the webhook is still the one posted to (not after a `PUT`).
    pub webhook_version: DateTime<Utc>,
    /// A probe of an endpoint that was failing: spaced by the endpoint's pause, not by the
    /// event's own retries.
    pub probe: bool,
}

/// Takes up to `limit` due events, oldest due first, at most `per_tenant` of each tenant
/// less what this worker has in flight for it (`in_flight`: tenants and counts), and holds
/// them for `hold` (a worker that dies posting leaves them to be taken again then).
///
/// A tenant whose endpoint is failing ([`settle`]) gets nothing until its `resume_at`, then
/// one post (a probe), and its `resume_at` moves `probe_hold` on meanwhile, so the other
/// workers do not probe it too while it may take its whole timeout to fail again.
pub async fn take_due(
    pool: &PgPool,
    limit: i64,
    per_tenant: i32,
    in_flight: &[(Uuid, i32)],
    hold: Duration,
    probe_hold: Duration,
) -> Result<Vec<DueEvent>, sqlx::Error> {
    let (busy, counts): (Vec<Uuid>, Vec<i32>) = in_flight.iter().copied().unzip();
    // Driven by the tenants with events waiting (found by a skip scan of the waiting events'
    // index: one probe per such tenant, not per tenant with a webhook), a few of each, so a
    // tenant with a flood of them takes at most its few places in each round (an endpoint
    // that keeps failing, none until its `resume_at`, then one) and the others' events still
    // go. Only the events taken are
    // locked (picked first without locks, then locked, skipping any another worker took
    // meanwhile), so two workers' rounds do not starve each other.
    sqlx::query_as!(
        DueEvent,
        r#"WITH RECURSIVE waiting_tenants(tenant_id) AS (
               (SELECT e.tenant_id FROM message_events e
                WHERE e.delivered_at IS NULL AND e.abandoned_at IS NULL
                ORDER BY e.tenant_id LIMIT 1)
               UNION ALL
               SELECT (SELECT e.tenant_id FROM message_events e
                       WHERE e.tenant_id > t.tenant_id AND e.delivered_at IS NULL
                         AND e.abandoned_at IS NULL
                       ORDER BY e.tenant_id LIMIT 1)
               FROM waiting_tenants t WHERE t.tenant_id IS NOT NULL
           ), candidates AS MATERIALIZED (
               SELECT e.id
               FROM waiting_tenants t
               JOIN tenant_webhooks w ON w.tenant_id = t.tenant_id AND w.disabled_at IS NULL
                                     AND (w.failing_since IS NULL OR w.resume_at IS NULL
                                          OR w.resume_at <= now())
               LEFT JOIN unnest($1::uuid[], $2::int4[]) AS b(tenant_id, in_flight)
                      ON b.tenant_id = t.tenant_id
               CROSS JOIN LATERAL (
                   -- Not an event written for a webhook removed since (by a transaction
                   -- that committed after the removal's cleanup): housekeeping drops those.
                   SELECT e.id, e.next_at FROM message_events e
                   WHERE e.tenant_id = t.tenant_id AND e.delivered_at IS NULL
                     AND e.abandoned_at IS NULL AND e.next_at <= now()
                     AND e.occurred_at >= w.created_at
                   ORDER BY e.next_at
                   LIMIT greatest(CASE WHEN w.failing_since IS NULL THEN $3 ELSE 1 END
                                  - coalesce(b.in_flight, 0), 0)
               ) e
               ORDER BY e.next_at
               LIMIT $4
           ), taken AS MATERIALIZED (
               SELECT e.id FROM message_events e
               WHERE e.id IN (SELECT id FROM candidates)
                 AND e.delivered_at IS NULL AND e.abandoned_at IS NULL AND e.next_at <= now()
               ORDER BY e.id
               FOR UPDATE SKIP LOCKED
           ), posted AS (
               UPDATE message_events e
               SET attempts = e.attempts + 1, next_at = now() + make_interval(secs => $5),
                   public_id = coalesce(e.public_id, gen_random_uuid())
               FROM taken, tenant_webhooks w
               WHERE e.id = taken.id AND w.tenant_id = e.tenant_id
               RETURNING e.id, e.public_id, e.kind, e.tenant_id, e.message_id, e.state,
                         e.delivery_status,
                         e.last_error, e.delivery_error, e.provider_message_id, e.occurred_at,
                         coalesce(e.recovered_at, e.occurred_at) AS aged_from,
                         e.attempts - e.retry_base AS tries,
                         e.attempts, w.url, w.secret, w.updated_at AS webhook_version,
                         w.failing_since IS NOT NULL AS probe,
                         CASE WHEN w.previous_secret_until > now() THEN w.previous_secret END
                             AS previous_secret
           ), probing AS (
               -- Only failing endpoints' rows are written (a healthy one's posts cost no
               -- write here), and one already locked is left: a hold is advisory, and
               -- waiting for a lock could deadlock two workers' rounds. Checked again on
               -- the row as it is now: not one a PUT or a success has just cleared, and no
               -- longer pause a settlement has set meanwhile cut short.
               UPDATE tenant_webhooks w
               SET resume_at = greatest(w.resume_at, now() + make_interval(secs => $6))
               WHERE w.tenant_id IN (SELECT l.tenant_id FROM tenant_webhooks l
                                     WHERE l.tenant_id IN (SELECT p.tenant_id FROM posted p
                                                           WHERE p.probe)
                                       AND l.failing_since IS NOT NULL
                                     FOR UPDATE SKIP LOCKED)
           )
           SELECT id AS "id!", public_id AS "public_id!", kind AS "kind!", tenant_id AS "tenant_id!",
                  message_id,
                  state AS "state!", delivery_status, last_error, delivery_error,
                  provider_message_id, occurred_at AS "occurred_at!", aged_from AS "aged_from!",
                  attempts AS "attempts!", tries AS "tries!",
                  url AS "url!", secret AS "secret!", previous_secret,
                  webhook_version AS "webhook_version!", probe AS "probe!"
           FROM posted"#,
        &busy,
        &counts,
        per_tenant,
        limit,
        hold.as_secs_f64(),
        probe_hold.as_secs_f64(),
    )
    .fetch_all(pool)
    .await
}

/// How a post of a taken event went.
#[derive(Debug, Clone, PartialEq)]
pub struct Settlement {
    pub id: i64,
    /// The event's `attempts` when taken: a settlement of an earlier take changes nothing.
    pub attempts: i32,
    /// `None`: delivered. Else why not, and when to try again (`None`: given up).
    pub failure: Option<(String, Option<Duration>)>,
    /// What the post says of the endpoint.
    pub endpoint: Endpoint,
    /// The event's [`DueEvent::webhook_version`] and [`DueEvent::probe`].
    pub webhook_version: DateTime<Utc>,
    pub probe: bool,
}

/// What a post says of its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// It answered as a working endpoint does: a 2xx, or a refusal of this event (a 4xx
    /// but 408 and 429), which is the event's to retry, not a reason to hold the others.
    Up,
    /// No answer, a 5xx, a 408 or a 429: its events wait while it is probed.
    Down,
    /// A 410: it has gone for good, and its webhook is disabled (the `webhook_gone`
    /// migration).
    Gone,
    /// Nothing is known of it (the post was never made: Herald's own side failed).
    Unknown,
}

/// Records how the posts of `settled` went, in one statement, and what they say of each
/// tenant's endpoint ([`Endpoint`]): one `Gone` disables its webhook (its failing, if any,
/// left as it was); one `Up` ends its failing; `Down` ones alone start it
/// (`failing_since`), or go on with it, and hold its events back until `resume_at`: as long
/// again as it has been failing, between `pause.0` and `pause.1` (a probe's failure sets the
/// pause; others only lengthen it, so that a late failure of an earlier post does not let a
/// second probe go while one is in flight). Only posts to the webhook as it still is count.
/// Answers the tenants whose webhook this disabled.
pub async fn settle(
    pool: &PgPool,
    settled: &[Settlement],
    pause: (Duration, Duration),
) -> Result<Vec<Uuid>, sqlx::Error> {
    if settled.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids = Vec::with_capacity(settled.len());
    let mut attempts = Vec::with_capacity(settled.len());
    let mut failures: Vec<Option<String>> = Vec::with_capacity(settled.len());
    let mut retries: Vec<Option<f64>> = Vec::with_capacity(settled.len());
    // Per post: true up, false down (or gone), NULL unknown.
    let mut up: Vec<Option<bool>> = Vec::with_capacity(settled.len());
    let mut gone = Vec::with_capacity(settled.len());
    let mut versions = Vec::with_capacity(settled.len());
    let mut probes = Vec::with_capacity(settled.len());
    for s in settled {
        ids.push(s.id);
        attempts.push(s.attempts);
        up.push(match s.endpoint {
            Endpoint::Up => Some(true),
            Endpoint::Down | Endpoint::Gone => Some(false),
            Endpoint::Unknown => None,
        });
        gone.push(s.endpoint == Endpoint::Gone);
        versions.push(s.webhook_version);
        probes.push(s.probe);
        failures.push(s.failure.as_ref().map(|(why, _)| why.clone()));
        retries.push(
            s.failure
                .as_ref()
                .and_then(|(_, retry)| retry.map(|d| d.as_secs_f64())),
        );
    }
    let rows = sqlx::query!(
        "WITH settled AS (
             UPDATE message_events e
             SET delivered_at = CASE WHEN s.failure IS NULL THEN now() END,
                 last_failure = coalesce(s.failure, e.last_failure),
                 failed_at = CASE WHEN s.failure IS NULL THEN e.failed_at ELSE now() END,
                 next_at = CASE WHEN s.retry_s IS NULL THEN e.next_at
                                ELSE now() + make_interval(secs => s.retry_s) END,
                 abandoned_at = CASE WHEN s.failure IS NOT NULL AND s.retry_s IS NULL
                                     THEN now() END
             FROM unnest($1::int8[], $2::int4[], $3::text[], $4::float8[], $5::bool[],
                         $6::timestamptz[], $7::bool[], $10::bool[])
                  AS s(id, attempts, failure, retry_s, up, version, probe, gone)
             WHERE e.id = s.id AND e.attempts = s.attempts
               AND e.delivered_at IS NULL AND e.abandoned_at IS NULL
             RETURNING e.tenant_id, s.up, s.version, s.probe, s.gone, s.failure
         ), endpoints AS (
             SELECT tenant_id, version, bool_or(up) AS up, bool_or(probe) AS probed,
                    bool_or(gone) AS gone, max(failure) FILTER (WHERE gone) AS gone_why
             FROM settled WHERE up IS NOT NULL GROUP BY tenant_id, version
         ), changed AS (
             -- A healthy endpoint's successes write nothing here; a row another statement
             -- holds is left (advisory, and no deadlock between two workers' outcomes: a
             -- 410 left so is answered again by the next post).
             SELECT w.tenant_id, x.up, x.probed, x.gone, x.gone_why,
                    w.disabled_at IS NULL AS enabled
             FROM tenant_webhooks w
             JOIN endpoints x ON x.tenant_id = w.tenant_id AND x.version = w.updated_at
             WHERE NOT x.up OR w.failing_since IS NOT NULL OR x.gone
             FOR UPDATE OF w SKIP LOCKED
         )
         UPDATE tenant_webhooks w
         SET disabled_at = CASE WHEN c.gone THEN coalesce(w.disabled_at, now())
                                ELSE w.disabled_at END,
             disabled_reason = CASE WHEN c.gone THEN coalesce(w.disabled_reason, c.gone_why)
                                    ELSE w.disabled_reason END,
             -- Gone is no failing: nothing is posted to it, and set again it starts afresh.
             failing_since = CASE WHEN c.up THEN NULL WHEN c.gone THEN w.failing_since
                                  ELSE coalesce(w.failing_since, now()) END,
             resume_at = CASE
                 WHEN c.up THEN NULL
                 WHEN c.gone THEN w.resume_at
                 ELSE (SELECT CASE WHEN c.probed OR w.resume_at IS NULL THEN pause
                                   ELSE greatest(w.resume_at, pause) END
                       FROM (SELECT now() + least(greatest(now() - coalesce(w.failing_since, now()),
                                                           make_interval(secs => $8)),
                                                  make_interval(secs => $9)) AS pause) p)
             END
         FROM changed c WHERE w.tenant_id = c.tenant_id
         RETURNING w.tenant_id, c.gone AND c.enabled AS \"disabled!\"",
        &ids,
        &attempts,
        &failures as _,
        &retries as _,
        &up as _,
        &versions,
        &probes,
        pause.0.as_secs_f64(),
        pause.1.as_secs_f64(),
        &gone,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter(|row| row.disabled)
        .map(|row| row.tenant_id)
        .collect())
}

/// Deletes up to `batch` waiting events of no webhook: written by a transaction that
/// committed after the removal of its tenant's webhook had dropped the others (the trigger
/// reads the webhook without a lock), and so never taken. Returns how many.
pub async fn drop_unowned(pool: &PgPool, batch: i64) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        "DELETE FROM message_events WHERE id IN (
             SELECT e.id FROM message_events e
             LEFT JOIN tenant_webhooks w ON w.tenant_id = e.tenant_id
             WHERE e.delivered_at IS NULL AND e.abandoned_at IS NULL
               AND (w.tenant_id IS NULL OR e.occurred_at < w.created_at)
             LIMIT $1)",
        batch,
    )
    .execute(pool)
    .await?
    .rows_affected())
}

/// Gives up up to `batch` events still waiting `older_than` after they happened (or were
/// recovered) and due,
/// without a post (an endpoint held back while failing may not be posted to for minutes,
/// and otherwise an event is given up only when a post of it fails); returns how many. Rows
/// another statement holds are left to the next call.
pub async fn abandon_stale(
    pool: &PgPool,
    older_than: Duration,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        "UPDATE message_events e
         SET abandoned_at = now()
         WHERE e.id IN (
             -- Not one a worker holds (taken: due again only after the hold).
             SELECT id FROM message_events
             WHERE delivered_at IS NULL AND abandoned_at IS NULL
               AND coalesce(recovered_at, occurred_at) < now() - make_interval(secs => $1)
               AND next_at <= now()
             ORDER BY coalesce(recovered_at, occurred_at)
             LIMIT $2
             FOR UPDATE SKIP LOCKED)",
        older_than.as_secs_f64(),
        batch,
    )
    .execute(pool)
    .await?
    .rows_affected())
}

/// The most events one [`recover`] brings back (one statement within the admin's statement
/// timeout); the caller asks again for more.
pub const RECOVER_BATCH: i64 = 50_000;

/// Posts again up to [`RECOVER_BATCH`] of tenant `tenant`'s events given up that happened at
/// `since` or later (and since its webhook was set), oldest first: waiting again at once,
/// their failures forgotten, retried as new events are (a post of an earlier take, settled
/// late, changes nothing), and given up again a day from now if still not delivered.
/// Returns how many; `None` if the tenant has no webhook.
pub async fn recover(
    pool: &PgPool,
    tenant: Uuid,
    since: DateTime<Utc>,
) -> Result<Option<u64>, sqlx::Error> {
    if !has_webhook(pool, tenant).await? {
        return Ok(None);
    }
    Ok(Some(
        sqlx::query!(
            "UPDATE message_events e
             SET abandoned_at = NULL, recovered_at = now(), next_at = now(),
                 attempts = e.attempts + 1, retry_base = e.attempts + 1,
                 last_failure = NULL, failed_at = NULL
             WHERE e.id IN (
                 SELECT x.id FROM message_events x
                 JOIN tenant_webhooks w ON w.tenant_id = x.tenant_id
                 WHERE x.tenant_id = $1 AND x.abandoned_at IS NOT NULL
                   -- A test event given up is not asked for again: the tenant asks anew.
                   AND x.kind = 'message.status'
                   AND x.occurred_at >= greatest($2, w.created_at)
                 ORDER BY x.occurred_at
                 LIMIT $3
                 FOR UPDATE OF x SKIP LOCKED)",
            tenant,
            since,
            RECOVER_BATCH,
        )
        .execute(pool)
        .await?
        .rows_affected(),
    ))
}

/// The longest one [`prune`] deletes for: it runs beside the tick, in housekeeping.
const PRUNE_BUDGET: Duration = Duration::from_secs(5);
/// Events one statement of [`prune`] deletes at most.
const PRUNE_BATCH: i64 = 10_000;

/// Deletes events that happened (and were recovered, if they were) more than `retention`
/// ago, a batch at a time while batches come back full, for up to [`PRUNE_BUDGET`]; returns how many.
pub async fn prune(pool: &PgPool, retention: Duration) -> Result<u64, sqlx::Error> {
    let started = std::time::Instant::now();
    let mut pruned = 0;
    loop {
        let done = sqlx::query!(
            "DELETE FROM message_events WHERE id IN (
                 SELECT id FROM message_events
                 WHERE occurred_at < now() - make_interval(secs => $1)
                   -- One recovered is kept as long again from its recovery.
                   AND (recovered_at IS NULL OR recovered_at < now() - make_interval(secs => $1))
                 LIMIT $2)",
            retention.as_secs_f64(),
            PRUNE_BATCH,
        )
        .execute(pool)
        .await?;
        pruned += done.rows_affected();
        if done.rows_affected() < PRUNE_BATCH as u64 || started.elapsed() >= PRUNE_BUDGET {
            return Ok(pruned);
        }
    }
}

async fn has_webhook(pool: &PgPool, tenant: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM tenant_webhooks WHERE tenant_id = $1) AS "has!""#,
        tenant
    )
    .fetch_one(pool)
    .await
}

/// What asking for a test event did.
#[derive(Debug, Clone, PartialEq)]
pub enum TestAsked {
    /// Queued: the event's id and time.
    Queued(Uuid, DateTime<Utc>),
    /// One was asked for less than `every` ago: none queued; ask again in this long.
    TooSoon(Duration),
    /// The tenant has no webhook.
    NoWebhook,
    /// Its webhook is disabled (its endpoint answered 410 Gone): set it again first.
    Disabled,
}

/// Queues a test event for tenant `tenant`'s webhook, posted as its status events are, at
/// most one each `every`.
pub async fn send_test(
    pool: &PgPool,
    tenant: Uuid,
    every: Duration,
) -> Result<TestAsked, sqlx::Error> {
    // The update's row lock orders two requests at once: the second reads the first's
    // `tested_at` again and queues nothing.
    let queued = sqlx::query!(
        r#"WITH allowed AS (
               UPDATE tenant_webhooks SET tested_at = now()
               WHERE tenant_id = $1 AND disabled_at IS NULL
                 AND (tested_at IS NULL OR tested_at <= now() - make_interval(secs => $2))
               RETURNING tenant_id
           )
           INSERT INTO message_events (tenant_id, kind, state)
           SELECT tenant_id, 'webhook.test', 'test' FROM allowed
           RETURNING public_id AS "public_id!", occurred_at"#,
        tenant,
        every.as_secs_f64(),
    )
    .fetch_optional(pool)
    .await?;
    if let Some(row) = queued {
        return Ok(TestAsked::Queued(row.public_id, row.occurred_at));
    }
    let left = sqlx::query!(
        // A webhook set since the first statement has no `tested_at`: nothing left to wait.
        r#"SELECT coalesce(extract(epoch FROM tested_at + make_interval(secs => $2) - now()),
                           0)::float8 AS "left!",
                  disabled_at IS NOT NULL AS "disabled!"
           FROM tenant_webhooks WHERE tenant_id = $1"#,
        tenant,
        every.as_secs_f64(),
    )
    .fetch_optional(pool)
    .await?;
    Ok(match left {
        Some(row) if row.disabled => TestAsked::Disabled,
        Some(row) => TestAsked::TooSoon(Duration::from_secs_f64(
            row.left.clamp(0.0, every.as_secs_f64()),
        )),
        None => TestAsked::NoWebhook,
    })
}

/// The tenants with a webhook (for resealing their secrets).
pub async fn tenants(pool: &PgPool) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!("SELECT tenant_id FROM tenant_webhooks ORDER BY tenant_id")
        .fetch_all(pool)
        .await
}

/// Tenant `tenant`'s secrets as stored (the one in use, and the one it replaced while that
/// still signs), locked until `tx` ends (for resealing them).
pub async fn lock_secrets(
    tx: &mut PgConnection,
    tenant: Uuid,
) -> Result<Option<(Value, Option<Value>)>, sqlx::Error> {
    Ok(sqlx::query!(
        "SELECT secret, CASE WHEN previous_secret_until > now() THEN previous_secret END
                    AS previous_secret
         FROM tenant_webhooks WHERE tenant_id = $1 FOR UPDATE",
        tenant
    )
    .fetch_optional(tx)
    .await?
    .map(|row| (row.secret, row.previous_secret)))
}

/// Stores tenant `tenant`'s secrets sealed anew (the same secrets; a replaced one that no
/// longer signs, or that no key opens, dropped).
pub async fn reseal_secrets(
    tx: &mut PgConnection,
    tenant: Uuid,
    sealed: &Value,
    previous: Option<&Value>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE tenant_webhooks
         SET secret = $2, previous_secret = $3,
             previous_secret_until = CASE WHEN $3::jsonb IS NULL THEN NULL
                                          ELSE previous_secret_until END
         WHERE tenant_id = $1",
        tenant,
        sealed,
        previous,
    )
    .execute(tx)
    .await?;
    Ok(())
}
