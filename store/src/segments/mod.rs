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

/// Creates a segment of `tenant`; a name already taken is the unique constraint's error.
pub async fn create(
    pool: &PgPool,
    tenant: Uuid,
    name: &str,
    filter: &str,
) -> Result<Segment, sqlx::Error> {
    sqlx::query_as!(
        Segment,
        "INSERT INTO segments (tenant_id, name, filter) VALUES ($1, $2, $3)
         RETURNING id, tenant_id, name, filter, created_at",
        tenant,
        name,
        filter,
    )
    .fetch_one(pool)
    .await
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
