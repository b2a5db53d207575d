//! Tenants, and the scope every query of a tenant's data takes.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo};
use sqlx::{Encode, PgPool, Postgres, Type};
use utoipa::ToSchema;
use uuid::Uuid;

/// Whose data a query may see: every tenant's (an operator's key) or one tenant's (a
/// tenant's key). Every store function that lists a tenant's data or looks it up by id takes
/// one, so a caller cannot forget it; bound into a statement it is the tenant's id, or NULL
/// for all, and the statements test it as `($n::uuid IS NULL OR tenant_id = $n)`: another
/// tenant's rows then look exactly like rows that do not exist. The changes that follow such
/// a lookup (a campaign's transition, a key's end, a provider's credentials) take the id the
/// caller has just found in its scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    All,
    Tenant(Uuid),
}

impl Scope {
    /// The one tenant in scope, if it is one.
    pub fn tenant(self) -> Option<Uuid> {
        match self {
            Scope::All => None,
            Scope::Tenant(id) => Some(id),
        }
    }
}

impl Type<Postgres> for Scope {
    fn type_info() -> PgTypeInfo {
        <Uuid as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for Scope {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        match self {
            Scope::All => Ok(IsNull::Yes),
            Scope::Tenant(id) => <Uuid as Encode<Postgres>>::encode_by_ref(id, buf),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    pub weight: i32,
    pub time_zone: String,
    /// Calls this tenant may have live at once across its providers; `null`: no cap.
    pub max_live_calls: Option<i32>,
    /// Region of numbers uploaded without a country code (ISO 3166-1 alpha-2); `null`:
    /// every number needs its `+` and country code.
    pub default_region: Option<String>,
    /// Transactional messages accepted and not yet finished this tenant may have; past it
    /// `POST /messages` answers 429 with `Retry-After`.
    pub max_queued_messages: i32,
    /// Transactional messages this tenant may send a day (its time zone's day); `null`: no
    /// cap.
    pub max_messages_per_day: Option<i32>,
    pub created_at: DateTime<Utc>,
}

/// A new tenant's settings, validated by the caller.
#[derive(Debug, Clone)]
pub struct TenantSettings<'a> {
    pub name: &'a str,
    pub weight: i32,
    pub time_zone: &'a str,
    pub max_live_calls: Option<i32>,
    pub default_region: Option<&'a str>,
    pub max_queued_messages: i32,
    pub max_messages_per_day: Option<i32>,
}

/// `sqlx::query_as!` into [`Tenant`]: the statement is `$before`, [`Tenant`]'s columns, then
/// `$after`, so the columns are written once and every statement is still checked.
macro_rules! query_tenant {
    ($before:literal, $after:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            Tenant,
            $before
                + "id, name, weight, time_zone, max_live_calls, default_region,
                   max_queued_messages, max_messages_per_day, created_at"
                + $after
            $(, $arg)*
        )
    };
}

/// Creates a tenant; a name already taken is the unique constraint's error.
pub async fn create(pool: &PgPool, tenant: &TenantSettings<'_>) -> Result<Tenant, sqlx::Error> {
    query_tenant!(
        "INSERT INTO tenants (name, weight, time_zone, max_live_calls, default_region,
                              max_queued_messages, max_messages_per_day)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         RETURNING ",
        "",
        tenant.name,
        tenant.weight,
        tenant.time_zone,
        tenant.max_live_calls,
        tenant.default_region,
        tenant.max_queued_messages,
        tenant.max_messages_per_day,
    )
    .fetch_one(pool)
    .await
}

/// Changes to a tenant's settings, validated by the caller: `None` keeps a setting as it
/// is; of those a tenant may be without, `Some(None)` removes it.
#[derive(Debug, Clone, Default)]
pub struct TenantChanges<'a> {
    pub name: Option<&'a str>,
    pub weight: Option<i32>,
    pub time_zone: Option<&'a str>,
    pub max_live_calls: Option<Option<i32>>,
    pub default_region: Option<Option<&'a str>>,
    pub max_queued_messages: Option<i32>,
    pub max_messages_per_day: Option<Option<i32>>,
}

/// Applies `changes` to tenant `id`; `None` if there is no such tenant. A name already
/// taken is the unique constraint's error. The scheduler's next tick weighs the tenant anew;
/// the next message accepted meets the new quotas. Its messages' accepts wait meanwhile
/// (`messages::lock_tenant`), so that none is judged on one day's count and counted in
/// another's. A new time zone carries the day's count over to its own day (the tenant's
/// messages since its old midnight), and nothing else: its day may have begun earlier or
/// later, and no count of an old day must come back as a new one's.
pub async fn update(
    pool: &PgPool,
    id: Uuid,
    changes: &TenantChanges<'_>,
) -> Result<Option<Tenant>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    crate::messages::lock_tenant(&mut tx, id).await?;
    let Some(old_zone) = sqlx::query_scalar!(
        "SELECT time_zone FROM tenants WHERE id = $1 FOR NO KEY UPDATE",
        id,
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(None);
    };
    let tenant = query_tenant!(
        "UPDATE tenants
         SET name = coalesce($2, name), weight = coalesce($3, weight),
             time_zone = coalesce($4, time_zone),
             max_live_calls = CASE WHEN $5 THEN $6 ELSE max_live_calls END,
             default_region = CASE WHEN $7 THEN $8 ELSE default_region END,
             max_queued_messages = coalesce($9, max_queued_messages),
             max_messages_per_day = CASE WHEN $10 THEN $11 ELSE max_messages_per_day END
         WHERE id = $1
         RETURNING ",
        "",
        id,
        changes.name,
        changes.weight,
        changes.time_zone,
        changes.max_live_calls.is_some(),
        changes.max_live_calls.flatten(),
        changes.default_region.is_some(),
        changes.default_region.flatten(),
        changes.max_queued_messages,
        changes.max_messages_per_day.is_some(),
        changes.max_messages_per_day.flatten(),
    )
    .fetch_one(&mut *tx)
    .await?;
    if tenant.time_zone != old_zone {
        let today = sqlx::query_scalar!(
            "DELETE FROM tenant_message_days
             WHERE tenant_id = $1 AND day = (now() AT TIME ZONE $2)::date RETURNING accepted",
            id,
            old_zone,
        )
        .fetch_optional(&mut *tx)
        .await?;
        sqlx::query!("DELETE FROM tenant_message_days WHERE tenant_id = $1", id)
            .execute(&mut *tx)
            .await?;
        if let Some(accepted) = today {
            sqlx::query!(
                "INSERT INTO tenant_message_days (tenant_id, day, accepted)
                 VALUES ($1, (now() AT TIME ZONE $2)::date, $3)",
                id,
                tenant.time_zone,
                accepted,
            )
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(Some(tenant))
}

/// The tenants in `scope`, by name.
pub async fn list(pool: &PgPool, scope: Scope) -> Result<Vec<Tenant>, sqlx::Error> {
    query_tenant!(
        "SELECT ",
        " FROM tenants WHERE $1::uuid IS NULL OR id = $1 ORDER BY name",
        scope as _,
    )
    .fetch_all(pool)
    .await
}

/// Tenant `id`, if it exists and is in `scope`.
pub async fn get(pool: &PgPool, scope: Scope, id: Uuid) -> Result<Option<Tenant>, sqlx::Error> {
    query_tenant!(
        "SELECT ",
        " FROM tenants WHERE id = $1 AND ($2::uuid IS NULL OR id = $2)",
        id,
        scope as _,
    )
    .fetch_optional(pool)
    .await
}

/// The IANA zones PostgreSQL knows, read once a process: `pg_timezone_names` reads the
/// whole zone directory at every query (about 20 ms), and one batch of transactional
/// messages may name a thousand different zones. Zones come and go only with a tzdata
/// update: one added since the process read the list is known after its restart.
static ZONES: std::sync::OnceLock<std::collections::HashSet<String>> = std::sync::OnceLock::new();

/// Whether PostgreSQL (which evaluates quiet hours) knows this IANA zone.
pub async fn known_time_zone(pool: &PgPool, zone: &str) -> Result<bool, sqlx::Error> {
    // The longest zone name is 32 characters; a longer text is no zone, and not sent.
    if zone.len() > 64 {
        return Ok(false);
    }
    if let Some(zones) = ZONES.get() {
        return Ok(zones.contains(zone));
    }
    // Requests that come before the list is kept may each read it: the first kept wins.
    let names = sqlx::query_scalar!(r#"SELECT name AS "name!" FROM pg_timezone_names"#)
        .fetch_all(pool)
        .await?;
    Ok(ZONES
        .get_or_init(|| names.into_iter().collect())
        .contains(zone))
}

/// A tenant's default provider (and overflow) for one channel: what its transactional
/// messages use when they name no provider.
#[derive(Debug, Clone)]
pub struct DefaultProviderRow {
    pub channel: String,
    pub provider_id: Uuid,
    pub overflow_provider_id: Option<Uuid>,
    pub updated_at: DateTime<Utc>,
}

/// Tenant `tenant`'s default provider and overflow for `channel`, if it has one.
pub async fn default_provider(
    pool: &PgPool,
    tenant: Uuid,
    channel: &str,
) -> Result<Option<(Uuid, Option<Uuid>)>, sqlx::Error> {
    let row = sqlx::query!(
        "SELECT provider_id, overflow_provider_id FROM tenant_default_providers
         WHERE tenant_id = $1 AND channel = $2",
        tenant,
        channel,
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| (r.provider_id, r.overflow_provider_id)))
}

/// Tenant `tenant`'s default providers, by channel.
pub async fn default_providers(
    pool: &PgPool,
    tenant: Uuid,
) -> Result<Vec<DefaultProviderRow>, sqlx::Error> {
    sqlx::query_as!(
        DefaultProviderRow,
        "SELECT channel, provider_id, overflow_provider_id, updated_at
         FROM tenant_default_providers WHERE tenant_id = $1 ORDER BY channel",
        tenant,
    )
    .fetch_all(pool)
    .await
}

/// Sets (or replaces) tenant `tenant`'s default provider for `channel`; `None` if the
/// provider or the overflow is retired (checked by the caller before, and here again under
/// a lock a retirement waits for, so that no default names a provider retired meanwhile).
pub async fn set_default_provider(
    pool: &PgPool,
    tenant: Uuid,
    channel: &str,
    provider: Uuid,
    overflow: Option<Uuid>,
) -> Result<Option<DefaultProviderRow>, sqlx::Error> {
    // `FOR KEY SHARE` waits for a retirement's `FOR UPDATE`; the row is then read again as
    // committed, and a provider retired meanwhile is not counted.
    sqlx::query_as!(
        DefaultProviderRow,
        "INSERT INTO tenant_default_providers (tenant_id, channel, provider_id, overflow_provider_id)
         SELECT $1, $2, $3, $4
         WHERE (SELECT count(*) FROM (SELECT 1 FROM providers p
                                      WHERE p.id IN ($3, $4) AND p.retired_at IS NULL
                                      FOR KEY SHARE) x)
               = CASE WHEN $4::uuid IS NULL THEN 1 ELSE 2 END
         ON CONFLICT (tenant_id, channel) DO UPDATE
            SET provider_id = excluded.provider_id,
                overflow_provider_id = excluded.overflow_provider_id, updated_at = now()
         RETURNING channel, provider_id, overflow_provider_id, updated_at",
        tenant,
        channel,
        provider,
        overflow,
    )
    .fetch_optional(pool)
    .await
}

/// Removes tenant `tenant`'s default provider for `channel`, if it has one.
pub async fn remove_default_provider(
    pool: &PgPool,
    tenant: Uuid,
    channel: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM tenant_default_providers WHERE tenant_id = $1 AND channel = $2",
        tenant,
        channel,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Tenant `id`'s time zone, if the tenant exists.
pub async fn time_zone(pool: &PgPool, id: Uuid) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!("SELECT time_zone FROM tenants WHERE id = $1", id,)
        .fetch_optional(pool)
        .await
}

/// Tenant `id`'s default region for phone numbers written without a country code (`None`
/// inside: it has none; outside: no such tenant), read in the caller's transaction.
pub async fn default_region(
    tx: &mut sqlx::PgConnection,
    id: Uuid,
) -> Result<Option<Option<String>>, sqlx::Error> {
    sqlx::query_scalar!("SELECT default_region FROM tenants WHERE id = $1", id,)
        .fetch_optional(tx)
        .await
}

/// The default regions of the tenants a list may show, each once: those in `scope`,
/// narrowed to `tenant` and to campaign `campaign`'s tenant when given (an operator's list
/// across tenants reads a number in each of theirs).
pub async fn regions(
    pool: &PgPool,
    scope: Scope,
    tenant: Option<Uuid>,
    campaign: Option<Uuid>,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT DISTINCT default_region AS "region!" FROM tenants
           WHERE default_region IS NOT NULL
             AND ($1::uuid IS NULL OR id = $1)
             AND ($2::uuid IS NULL OR id = $2)
             AND ($3::uuid IS NULL OR id = (SELECT tenant_id FROM campaigns WHERE id = $3))"#,
        scope.tenant(),
        tenant,
        campaign,
    )
    .fetch_all(pool)
    .await
}

/// Tenant `id`'s default region for phone numbers (if it has one) and its time zone, if
/// the tenant exists.
pub async fn region_and_zone(
    pool: &PgPool,
    id: Uuid,
) -> Result<Option<(Option<String>, String)>, sqlx::Error> {
    let row = sqlx::query!(
        "SELECT default_region, time_zone FROM tenants WHERE id = $1",
        id
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|row| (row.default_region, row.time_zone)))
}
