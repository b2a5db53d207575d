//! Tenants' contacts: the address book segments pick campaigns' audiences from.

use crate::keyset;
use crate::tenants::Scope;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Contact {
    pub id: i64,
    pub tenant_id: Uuid,
    /// The tenant's name, for an operator's listing across tenants.
    pub tenant_name: String,
    pub address: String,
    #[schema(value_type = Object)]
    pub attributes: Value,
    pub created_at: DateTime<Utc>,
}

/// A page of the contacts `scope` sees, by id after `after`: of one tenant, or with one
/// address (E.164), when asked.
pub async fn list(
    pool: &PgPool,
    scope: Scope,
    tenant: Option<Uuid>,
    address: Option<&str>,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<Contact>, sqlx::Error> {
    // Each condition is written only when given, so that it is an index bound in every plan.
    let mut qb = QueryBuilder::<Postgres>::new(
        "SELECT id, tenant_id, (SELECT t.name FROM tenants t WHERE t.id = contacts.tenant_id) AS tenant_name,
                address, attributes, created_at
         FROM contacts WHERE true",
    );
    if let Some(scope) = scope.tenant() {
        qb.push(" AND tenant_id = ").push_bind(scope);
    }
    if let Some(tenant) = tenant {
        qb.push(" AND tenant_id = ").push_bind(tenant);
    }
    keyset::push_exact(&mut qb, "address", address);
    keyset::push_page(&mut qb, "id", after, limit);
    qb.build_query_as().fetch_all(pool).await
}

/// Moves the staged upload (`crate::uploads`) into tenant `tenant`'s contacts, in the
/// caller's transaction: the last row of an address wins, and its attributes are merged
/// into an existing contact's. Returns (new contacts, updated ones).
pub async fn upsert_staged(tx: &mut PgConnection, tenant: Uuid) -> Result<(u64, u64), sqlx::Error> {
    let inserted: Vec<bool> = sqlx::query_scalar(
        "INSERT INTO contacts AS c (tenant_id, address, attributes)
         SELECT DISTINCT ON (address) $1, address, fields
         FROM upload_rows ORDER BY address, n DESC
         ON CONFLICT (tenant_id, address)
         DO UPDATE SET attributes = c.attributes || excluded.attributes, updated_at = now()
         RETURNING (xmax = 0)",
    )
    .bind(tenant)
    .fetch_all(tx)
    .await?;
    let new = inserted.iter().filter(|&&fresh| fresh).count() as u64;
    Ok((new, inserted.len() as u64 - new))
}
