//! Segments: a tenant's named filters over its contacts. [`filter`] is the language, compiled
//! into SQL whose every name and value is a bound parameter; [`count`], [`lacking`] and
//! [`materialize`] run a filter over a tenant's contacts.

pub mod filter;

use crate::recipients::audience;
use crate::tenants::Scope;
use chrono::{DateTime, Utc};
use filter::Filter;
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Serialize, ToSchema)]
pub struct Segment {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub filter: String,
    pub created_at: DateTime<Utc>,
}

/// Creates a segment of `tenant`, unless it has `max` already (`None`); a name already
/// taken is the unique constraint's error. The tenant's segments are counted under a lock
/// of the tenant's own, held to the commit, so that requests at once cannot pass the bound
/// together.
pub async fn create(
    pool: &PgPool,
    tenant: Uuid,
    name: &str,
    filter: &str,
    max: i64,
) -> Result<Option<Segment>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended('herald.segments.' || $1::text, 0))",
        tenant as _,
    )
    .execute(&mut *tx)
    .await?;
    let kept = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM segments WHERE tenant_id = $1"#,
        tenant,
    )
    .fetch_one(&mut *tx)
    .await?;
    if kept >= max {
        return Ok(None);
    }
    let segment = sqlx::query_as!(
        Segment,
        "INSERT INTO segments (tenant_id, name, filter) VALUES ($1, $2, $3)
         RETURNING id, tenant_id, name, filter, created_at",
        tenant,
        name,
        filter,
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(segment))
}

/// What [`delete`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    Gone,
    /// No such segment in the scope.
    NotFound,
    /// Draft campaigns wait to be started with it: kept. The first five, and whether
    /// there are more.
    InUse(Vec<Uuid>, bool),
}

/// Deletes segment `id` if `scope` sees it and no draft campaign waits to be started with
/// it; a started campaign that had it keeps `segment_id` null. Its row is held first: a
/// campaign made with it meanwhile waits (its reference's check), then finds it gone.
pub async fn delete(pool: &PgPool, scope: Scope, id: Uuid) -> Result<Deleted, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let found = sqlx::query_scalar!(
        "SELECT id FROM segments WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2)
         FOR UPDATE",
        id,
        scope as _,
    )
    .fetch_optional(&mut *tx)
    .await?;
    if found.is_none() {
        return Ok(Deleted::NotFound);
    }
    let drafts = sqlx::query_scalar!(
        "SELECT id FROM campaigns WHERE segment_id = $1 AND status = 'draft' ORDER BY id LIMIT 6",
        id,
    )
    .fetch_all(&mut *tx)
    .await?;
    if !drafts.is_empty() {
        let more = drafts.len() > 5;
        return Ok(Deleted::InUse(drafts.into_iter().take(5).collect(), more));
    }
    sqlx::query!("DELETE FROM segments WHERE id = $1", id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Deleted::Gone)
}

/// The segments in `scope`, by name.
pub async fn list(pool: &PgPool, scope: Scope) -> Result<Vec<Segment>, sqlx::Error> {
    sqlx::query_as!(
        Segment,
        "SELECT id, tenant_id, name, filter, created_at FROM segments
         WHERE $1::uuid IS NULL OR tenant_id = $1 ORDER BY name",
        scope as _,
    )
    .fetch_all(pool)
    .await
}

/// Segment `id`, if it is in `scope`.
pub async fn get(pool: &PgPool, scope: Scope, id: Uuid) -> Result<Option<Segment>, sqlx::Error> {
    sqlx::query_as!(
        Segment,
        "SELECT id, tenant_id, name, filter, created_at FROM segments
         WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2)",
        id,
        scope as _,
    )
    .fetch_optional(pool)
    .await
}

/// Whether segment `id` is tenant `tenant`'s.
pub async fn owned_by(pool: &PgPool, id: Uuid, tenant: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM segments WHERE id = $1 AND tenant_id = $2) AS "exists!""#,
        id,
        tenant,
    )
    .fetch_one(pool)
    .await
}

/// Segment `id`'s filter, read in the caller's transaction.
pub async fn filter_text(tx: &mut sqlx::PgConnection, id: Uuid) -> Result<String, sqlx::Error> {
    sqlx::query_scalar!("SELECT filter FROM segments WHERE id = $1", id,)
        .fetch_one(tx)
        .await
}

/// How many of tenant `tenant`'s contacts `filter` picks.
pub async fn count(pool: &PgPool, tenant: Uuid, filter: &Filter) -> Result<i64, sqlx::Error> {
    let mut qb =
        QueryBuilder::<Postgres>::new("SELECT count(*) FROM contacts c WHERE c.tenant_id = ");
    qb.push_bind(tenant).push(" AND ");
    filter.push_sql("c", &mut qb);
    qb.build_query_scalar().fetch_one(pool).await
}

/// Up to five addresses of contacts `filter` picks that lack one of the attributes `needed`
/// (the variables a template uses), or hold it empty, blank or null (an upload refuses
/// such a row: the message would read "Hi !", or fail once rendered).
pub async fn lacking(
    tx: &mut PgConnection,
    tenant: Uuid,
    filter: &Filter,
    needed: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    let mut qb =
        QueryBuilder::<Postgres>::new("SELECT c.address FROM contacts c WHERE c.tenant_id = ");
    qb.push_bind(tenant).push(" AND ");
    filter.push_sql("c", &mut qb);
    qb.push(" AND EXISTS (SELECT 1 FROM unnest(")
        .push_bind(needed.to_vec())
        .push("::text[]) v WHERE coalesce(c.attributes ->> v, '') ~ ")
        .push_bind(herald_shared::template::blank_pattern())
        .push(") LIMIT 5");
    qb.build_query_scalar().fetch_all(tx).await
}

/// Up to five addresses of the contacts `filter` picks whose attributes would render a
/// template longer than `max` characters: `fixed` characters of its own, and each variable
/// of `uses` as often as it is used (a string as it is, any other value in its JSON form).
pub async fn too_long(
    tx: &mut PgConnection,
    tenant: Uuid,
    filter: &Filter,
    fixed: usize,
    uses: &[(String, usize)],
    max: usize,
) -> Result<Vec<String>, sqlx::Error> {
    let as_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    let names: Vec<&str> = uses.iter().map(|(name, _)| name.as_str()).collect();
    let counts: Vec<i64> = uses.iter().map(|&(_, n)| as_i64(n)).collect();
    let mut qb =
        QueryBuilder::<Postgres>::new("SELECT c.address FROM contacts c WHERE c.tenant_id = ");
    qb.push_bind(tenant).push(" AND ");
    filter.push_sql("c", &mut qb);
    qb.push(" AND ")
        .push_bind(as_i64(fixed))
        .push(
            " + (SELECT coalesce(sum(u.n * char_length(CASE jsonb_typeof(c.attributes -> u.name)
                   WHEN 'string' THEN c.attributes ->> u.name
                   ELSE (c.attributes -> u.name)::text END)), 0)
                 FROM unnest(",
        )
        .push_bind(names)
        .push("::text[], ")
        .push_bind(counts)
        .push("::int8[]) u(name, n)) > ")
        .push_bind(as_i64(max))
        .push(" LIMIT 5");
    qb.build_query_scalar().fetch_all(tx).await
}

/// Copies the contacts `filter` picks into campaign `campaign`'s recipients, their attributes
/// becoming its variables, in the caller's transaction; returns how many were added (an
/// address already a recipient stays as it was).
pub async fn materialize(
    tx: &mut PgConnection,
    campaign: Uuid,
    tenant: Uuid,
    filter: &Filter,
) -> Result<u64, sqlx::Error> {
    let mut qb = audience::start_adding(campaign);
    qb.push("SELECT c.address, c.attributes AS variables, c.id AS n FROM contacts c WHERE c.tenant_id = ")
        .push_bind(tenant)
        .push(" AND ");
    filter.push_sql("c", &mut qb);
    audience::finish_adding(qb, tx).await
}
