//! Tenants' suppression lists: the addresses a tenant's messages must not reach on a
//! channel (the `suppressions` migration says why). The worker's lease reads them
//! (`recipients::lease`); a provider's opt-out refusal adds to them (`recipients::record`);
//! the receiver records recipients' STOP and START ([`record_consents`]); the admin lists,
//! adds and removes them here.

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

/// A recipient's word on its consent to one tenant's messages on a channel: an inbound
/// STOP or START the receiver took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    pub tenant_id: Uuid,
    pub channel: Channel,
    pub address: String,
    /// `Some(reason)` for a STOP: the address goes on the list, unless it is there.
    /// `None` for a START: its entry goes, if the recipient's own word or a provider's
    /// refusal put it there; one the tenant added (a request made elsewhere) stays, the
    /// tenant takes it off.
    pub opted_out: Option<String>,
    /// When the receiver took it: of two words of one recipient, the later one holds.
    pub said_at: DateTime<Utc>,
}

/// How long a recipient's last word is remembered ([`forget_consents`]): far longer than a
/// word can reach the database late (kept by a receiver through an outage). A START older
/// than this is not applied ([`record_consents`]): the later word it would undo may be
/// forgotten already. (A STOP that old still is: listing one too many is the safe side.)
pub const CONSENTS_KEPT: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Forgets up to `batch` recipients' last words recorded more than [`CONSENTS_KEPT`] ago;
/// the list keeps what they decided. Answers how many.
pub async fn forget_consents(pool: &PgPool, batch: i64) -> Result<u64, sqlx::Error> {
    let forgotten = sqlx::query!(
        // The age again on the row deleted: a word recorded on it meanwhile keeps it.
        "DELETE FROM consents WHERE (tenant_id, channel, address) IN (
             SELECT tenant_id, channel, address FROM consents
             WHERE said_at < now() - make_interval(secs => $1)
             LIMIT $2)
           AND said_at < now() - make_interval(secs => $1)",
        CONSENTS_KEPT.as_secs_f64(),
        batch,
    )
    .execute(pool)
    .await?;
    Ok(forgotten.rows_affected())
}

/// What a batch of consents changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsentsRecorded {
    pub listed: u64,
    pub taken_off: u64,
}

/// Records `consents` in one statement: of each recipient's, the latest (by `said_at`)
/// holds, and only if it is later than the word recorded before (the `consents`
/// migration says why), so words arriving out of order, or twice, end as the recipient
/// last said. Whether the address is listed comes out as if each word were applied in
/// turn; an entry already there when a STOP holds stays as it was (its source, reason
/// and date), even after an earlier START of the same batch.
pub async fn record_consents(
    pool: &PgPool,
    consents: &[Consent],
) -> Result<ConsentsRecorded, sqlx::Error> {
    let tenants: Vec<Uuid> = consents.iter().map(|c| c.tenant_id).collect();
    let channels: Vec<&str> = consents.iter().map(|c| c.channel.as_str()).collect();
    let addresses: Vec<&str> = consents.iter().map(|c| c.address.as_str()).collect();
    let reasons: Vec<Option<String>> = consents.iter().map(|c| c.opted_out.clone()).collect();
    let said_at: Vec<DateTime<Utc>> = consents.iter().map(|c| c.said_at).collect();
    let recorded = sqlx::query!(
        // Rows are written and locked in key order, as the worker's refusals are, so that
        // two statements never wait for each other.
        r#"WITH said AS (
               SELECT DISTINCT ON (tenant_id, channel, address)
                      tenant_id, channel, address, reason, said_at
               FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
                    WITH ORDINALITY AS c (tenant_id, channel, address, reason, said_at, n)
               WHERE reason IS NOT NULL OR said_at >= now() - make_interval(secs => $6)
               ORDER BY tenant_id, channel, address, said_at DESC, n DESC
           ), newest AS (
               INSERT INTO consents (tenant_id, channel, address, said_at, opted_out)
               SELECT tenant_id, channel, address, said_at, reason IS NOT NULL FROM said
               ORDER BY tenant_id, channel, address
               ON CONFLICT (tenant_id, channel, address) DO UPDATE
                   SET said_at = excluded.said_at, opted_out = excluded.opted_out
                   WHERE consents.said_at < excluded.said_at
               RETURNING tenant_id, channel, address
           ), holds AS (
               SELECT said.* FROM said JOIN newest USING (tenant_id, channel, address)
           ), listed AS (
               INSERT INTO suppressions (tenant_id, channel, address, source, reason)
               SELECT tenant_id, channel, address, 'recipient', reason
               FROM holds WHERE reason IS NOT NULL
               ORDER BY tenant_id, channel, address
               ON CONFLICT (tenant_id, channel, address) DO NOTHING
               RETURNING 1
           ), going AS (
               SELECT s.id FROM suppressions s JOIN holds h USING (tenant_id, channel, address)
               WHERE h.reason IS NULL AND s.source <> 'tenant'
               ORDER BY s.tenant_id, s.channel, s.address
               FOR UPDATE OF s
           ), taken_off AS (
               DELETE FROM suppressions WHERE id IN (SELECT id FROM going)
               RETURNING 1
           )
           SELECT (SELECT count(*) FROM listed) AS "listed!",
                  (SELECT count(*) FROM taken_off) AS "taken_off!""#,
        &tenants,
        &channels as &[&str],
        &addresses as &[&str],
        &reasons as &[Option<String>],
        &said_at,
        CONSENTS_KEPT.as_secs_f64(),
    )
    .fetch_one(pool)
    .await?;
    Ok(ConsentsRecorded {
        listed: u64::try_from(recorded.listed).unwrap_or_default(),
        taken_off: u64::try_from(recorded.taken_off).unwrap_or_default(),
    })
}
