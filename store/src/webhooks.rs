//! Tenants' status webhooks and the events posted to them (the `status_webhooks` migration
//! says how events are made: by a trigger, in the transaction that changed the message).
//! The admin sets, shows and removes a webhook; workers take due events, post them and
//! settle them; the scheduler's housekeeping prunes old ones.

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
    /// Events not yet delivered (counted up to [`WAITING_COUNTED`]).
    pub waiting: i64,
    /// When the oldest of them happened.
    pub oldest_waiting_at: Option<DateTime<Utc>>,
    /// Why the latest failed post of a waiting event failed.
    pub last_failure: Option<String>,
}

/// The most waiting events a webhook's summary counts: past that it says "at least".
pub const WAITING_COUNTED: i64 = 100_000;

/// Sets tenant `tenant`'s webhook (a new one, or a new URL and secret for the one it had).
/// Events still waiting go to the new URL, signed with the new secret.
pub async fn set(
    pool: &PgPool,
    tenant: Uuid,
    url: &str,
    sealed_secret: &Value,
) -> Result<Webhook, sqlx::Error> {
    sqlx::query!(
        "INSERT INTO tenant_webhooks (tenant_id, url, secret) VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id) DO UPDATE
         SET url = excluded.url, secret = excluded.secret, updated_at = now()",
        tenant,
        url,
        sealed_secret,
    )
    .execute(pool)
    .await?;
    get(pool, tenant)
        .await?
        .ok_or_else(|| sqlx::Error::RowNotFound)
}

/// Tenant `tenant`'s webhook, if it has one.
pub async fn get(pool: &PgPool, tenant: Uuid) -> Result<Option<Webhook>, sqlx::Error> {
    sqlx::query_as!(
        Webhook,
        r#"SELECT w.tenant_id, w.url, w.created_at, w.updated_at,
                  waiting.n AS "waiting!", waiting.oldest AS oldest_waiting_at,
                  (SELECT e.last_failure FROM message_events e
                   WHERE e.tenant_id = w.tenant_id AND e.delivered_at IS NULL
                     AND e.abandoned_at IS NULL AND e.last_failure IS NOT NULL
                   ORDER BY e.next_at DESC LIMIT 1) AS last_failure
           FROM tenant_webhooks w
           CROSS JOIN LATERAL (
               SELECT count(*) AS n, min(occurred_at) AS oldest FROM (
                   SELECT e.occurred_at FROM message_events e
                   WHERE e.tenant_id = w.tenant_id AND e.delivered_at IS NULL
                     AND e.abandoned_at IS NULL
                   LIMIT $2) x
           ) waiting
           WHERE w.tenant_id = $1"#,
        tenant,
        WAITING_COUNTED,
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

/// An event taken to be posted, with where and how to sign it.
#[derive(Debug, Clone)]
pub struct DueEvent {
    pub id: i64,
    pub tenant_id: Uuid,
    pub message_id: Uuid,
    pub state: String,
    pub delivery_status: Option<String>,
    pub error: Option<String>,
    pub provider_message_id: Option<String>,
    pub occurred_at: DateTime<Utc>,
    /// Posts tried, this one included.
    pub attempts: i32,
    pub url: String,
    /// The tenant's secret as stored (sealed).
    pub secret: Value,
}

/// Takes up to `limit` due events, oldest due first, at most `per_tenant` of each tenant
/// less what this worker has in flight for it (`in_flight`: tenants and counts), and holds
/// them for `hold` (a worker that dies posting leaves them to be taken again then).
pub async fn take_due(
    pool: &PgPool,
    limit: i64,
    per_tenant: i32,
    in_flight: &[(Uuid, i32)],
    hold: Duration,
) -> Result<Vec<DueEvent>, sqlx::Error> {
    let (busy, counts): (Vec<Uuid>, Vec<i32>) = in_flight.iter().copied().unzip();
    let hold_ms = i64::try_from(hold.as_millis()).unwrap_or(i64::MAX);
    // Driven by the tenants with a webhook (a few index probes each) rather than by the
    // oldest events, so a tenant with a flood of them, or an endpoint that keeps failing,
    // takes at most its few places in each round and the others' events still go.
    sqlx::query_as!(
        DueEvent,
        r#"WITH picked AS (
               SELECT e.id, w.url, w.secret
               FROM tenant_webhooks w
               LEFT JOIN unnest($1::uuid[], $2::int4[]) AS b(tenant_id, in_flight)
                      ON b.tenant_id = w.tenant_id
               CROSS JOIN LATERAL (
                   SELECT e.id, e.next_at FROM message_events e
                   WHERE e.tenant_id = w.tenant_id AND e.delivered_at IS NULL
                     AND e.abandoned_at IS NULL AND e.next_at <= now()
                   ORDER BY e.next_at
                   LIMIT greatest($3 - coalesce(b.in_flight, 0), 0)
                   FOR UPDATE OF e SKIP LOCKED
               ) e
               ORDER BY e.next_at
               LIMIT $4
           )
           UPDATE message_events e
           SET attempts = e.attempts + 1, next_at = now() + $5 * interval '1 millisecond'
           FROM picked WHERE e.id = picked.id
           RETURNING e.id, e.tenant_id, e.message_id, e.state, e.delivery_status, e.error,
                     e.provider_message_id, e.occurred_at, e.attempts,
                     picked.url AS "url!", picked.secret AS "secret!""#,
        &busy,
        &counts,
        per_tenant,
        limit,
        hold_ms as f64,
    )
    .fetch_all(pool)
    .await
}

/// Event `id` was delivered.
pub async fn delivered(pool: &PgPool, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE message_events SET delivered_at = now(), last_failure = NULL WHERE id = $1",
        id
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Event `id`'s post failed (`failure`): tried again after `retry_in`, or given up.
pub async fn failed(
    pool: &PgPool,
    id: i64,
    failure: &str,
    retry_in: Option<Duration>,
) -> Result<(), sqlx::Error> {
    let retry_ms = retry_in.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX) as f64);
    sqlx::query!(
        "UPDATE message_events
         SET last_failure = $2,
             next_at = CASE WHEN $3::float8 IS NULL THEN next_at
                            ELSE now() + $3 * interval '1 millisecond' END,
             abandoned_at = CASE WHEN $3::float8 IS NULL THEN now() END
         WHERE id = $1",
        id,
        failure,
        retry_ms,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Deletes up to `batch` events that happened more than `retention` ago; how many.
pub async fn prune(pool: &PgPool, retention: Duration, batch: i64) -> Result<u64, sqlx::Error> {
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX) as f64;
    Ok(sqlx::query!(
        "DELETE FROM message_events WHERE id IN (
             SELECT id FROM message_events
             WHERE occurred_at < now() - $1 * interval '1 millisecond'
             LIMIT $2)",
        retention_ms,
        batch,
    )
    .execute(pool)
    .await?
    .rows_affected())
}

/// The tenants with a webhook (for resealing their secrets).
pub async fn tenants(pool: &PgPool) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!("SELECT tenant_id FROM tenant_webhooks ORDER BY tenant_id")
        .fetch_all(pool)
        .await
}

/// Tenant `tenant`'s secret as stored, locked until `tx` ends (for resealing it).
pub async fn lock_secret(
    tx: &mut PgConnection,
    tenant: Uuid,
) -> Result<Option<Value>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT secret FROM tenant_webhooks WHERE tenant_id = $1 FOR UPDATE",
        tenant
    )
    .fetch_optional(tx)
    .await
}

/// Stores tenant `tenant`'s secret sealed anew (the same secret).
pub async fn reseal_secret(
    tx: &mut PgConnection,
    tenant: Uuid,
    sealed: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE tenant_webhooks SET secret = $2 WHERE tenant_id = $1",
        tenant,
        sealed
    )
    .execute(tx)
    .await?;
    Ok(())
}
