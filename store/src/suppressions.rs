//! Tenants' suppression lists: the addresses a tenant's messages must not reach on a
//! channel (the `suppressions` migration says why). The worker's lease reads them
//! (`recipients::lease`); a provider's opt-out refusal adds to them (`recipients::record`);
//! the admin lists, adds and removes them here.

use crate::keyset;
use crate::tenants::Scope;
use chrono::{DateTime, Utc};
use herald_shared::domain::Channel;
use serde::Serialize;
use sqlx::{PgPool, Postgres, QueryBuilder};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Suppression {
    pub id: i64,
    pub tenant_id: Uuid,
    /// `sms`, `whatsapp`, `voice` or `chat`: an opt-out holds on its channel only.
    pub channel: String,
    pub address: String,
    /// `provider`: a provider refused a send because the recipient opted out (Twilio
    /// 21610); `recipient`: the recipient replied STOP (an inbound message the receiver
    /// took); `tenant`: added through the admin.
    pub source: String,
    /// The provider's refusal, or the note the tenant gave.
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A page of the suppressions `scope` sees, by id after `after`: of one tenant, one channel,
/// or with one of `addresses` (the ways one address may be written), when asked.
pub async fn list(
    pool: &PgPool,
    scope: Scope,
    tenant: Option<Uuid>,
    channel: Option<Channel>,
    addresses: &[String],
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<Suppression>, sqlx::Error> {
    // Each condition is written only when given, so that it is an index bound in every plan.
    let mut qb = QueryBuilder::<Postgres>::new(
        "SELECT id, tenant_id, channel, address, source, reason, created_at
         FROM suppressions WHERE true",
    );
    for tenant in [scope.tenant(), tenant].into_iter().flatten() {
        qb.push(" AND tenant_id = ").push_bind(tenant);
    }
    if let Some(channel) = channel {
        qb.push(" AND channel = ").push_bind(channel.as_str());
    }
    keyset::push_any_of(&mut qb, "address", addresses);
    keyset::push_page(&mut qb, "id", after, limit);
    qb.build_query_as().fetch_all(pool).await
}

/// Puts `addresses` (as recipients store them) on tenant `tenant`'s list for `channel`, held
/// by the tenant: one a STOP or a provider's refusal listed becomes the tenant's (a START
/// would otherwise take off what the tenant asked for), its reason kept unless another is
/// given; one the tenant held already stays as it is. Answers how many it did not hold.
pub async fn add(
    pool: &PgPool,
    tenant: Uuid,
    channel: Channel,
    addresses: &[String],
    reason: Option<&str>,
) -> Result<u64, sqlx::Error> {
    let added = sqlx::query!(
        "INSERT INTO suppressions (tenant_id, channel, address, source, reason)
         SELECT $1, $2, a, 'tenant', $4 FROM unnest($3::text[]) AS a
         -- In key order, as a worker's opt-outs are: never waiting on each other in a cycle.
         ORDER BY a
         ON CONFLICT (tenant_id, channel, address) DO UPDATE
         SET source = 'tenant', reason = coalesce(excluded.reason, suppressions.reason)
         WHERE suppressions.source <> 'tenant'",
        tenant,
        channel.as_str(),
        addresses,
        reason,
    )
    .execute(pool)
    .await?;
    Ok(added.rows_affected())
}

/// Takes suppression `id` off its tenant's list (the recipient opted in again), if `scope`
/// sees it: the next message to the address is sent. Answers whether it was there.
pub async fn remove(pool: &PgPool, scope: Scope, id: i64) -> Result<bool, sqlx::Error> {
    let removed = sqlx::query!(
        "DELETE FROM suppressions WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2)",
        id,
        scope as _,
    )
    .execute(pool)
    .await?;
    Ok(removed.rows_affected() > 0)
}

/// The recipient replied STOP (an inbound message the receiver took): `address` goes on
/// tenant `tenant`'s list for `channel`, unless it is there. Answers whether it was added.
pub async fn opted_out(
    pool: &PgPool,
    tenant: Uuid,
    channel: Channel,
    address: &str,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    let added = sqlx::query!(
        "INSERT INTO suppressions (tenant_id, channel, address, source, reason)
         VALUES ($1, $2, $3, 'recipient', $4)
         ON CONFLICT (tenant_id, channel, address) DO NOTHING",
        tenant,
        channel.as_str(),
        address,
        reason,
    )
    .execute(pool)
    .await?;
    Ok(added.rows_affected() > 0)
}

/// The recipient replied START: its entry on tenant `tenant`'s list for `channel` goes, if
/// the recipient's own word or a provider's refusal put it there. One the tenant added (a
/// request made elsewhere) stays: the tenant takes it off. Answers whether one went.
pub async fn opted_in(
    pool: &PgPool,
    tenant: Uuid,
    channel: Channel,
    address: &str,
) -> Result<bool, sqlx::Error> {
    let removed = sqlx::query!(
        "DELETE FROM suppressions
         WHERE tenant_id = $1 AND channel = $2 AND address = $3 AND source <> 'tenant'",
        tenant,
        channel.as_str(),
        address,
    )
    .execute(pool)
    .await?;
    Ok(removed.rows_affected() > 0)
}
