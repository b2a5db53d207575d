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

/// A page of the contacts `scope` sees, by id after `after`: of one tenant, or with one of
/// `addresses` (the ways one address may be stored), when asked.
pub async fn list(
    pool: &PgPool,
    scope: Scope,
    tenant: Option<Uuid>,
    addresses: &[String],
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
    keyset::push_any_of(&mut qb, "address", addresses);
    keyset::push_page(&mut qb, "id", after, limit);
    qb.build_query_as().fetch_all(pool).await
}

/// What moving an upload into the contacts did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upserted {
    pub inserted: u64,
    pub updated: u64,
    /// A contact that now holds more attributes, or longer ones, than asked for (they
    /// merge across uploads): the caller refuses the upload, rolling it back.
    pub overfull: Option<String>,
}

/// Holds tenant `tenant`'s contacts still to the end of the caller's transaction, for a
/// segment's audience to be checked and copied from one state of them: the checks
/// (a template's variables present, its text not too long) and the copy are statements of
/// their own, each seeing what was committed when it began, and an upload committed
/// between them put contacts the checks never saw (a blank name: "Hi !") into the
/// audience. Writes of contacts ([`upsert_staged`], [`delete`]) wait for it, and it for
/// them; starts do not wait for each other.
pub async fn hold_still(tx: &mut PgConnection, tenant: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock_shared(hashtextextended('herald.contacts.' || $1::text, 0))",
        tenant as _,
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Holds tenant `tenant`'s contacts for a write, to the end of the caller's transaction:
/// waits for the segment starts holding them still ([`hold_still`]) and for other writes.
pub(crate) async fn hold_for_write(tx: &mut PgConnection, tenant: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended('herald.contacts.' || $1::text, 0))",
        tenant as _,
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Deletes contact `id`, if `scope` sees it (a person who left the address book): no segment
/// picks it any more. Campaigns started before keep it among their recipients (their copies
/// of its address and attributes are not erased). Waits, as an upload does, for a segment's audience being copied
/// ([`hold_still`]), so that the copy and its checks see it both or neither. Answers whether
/// it was there.
pub async fn delete(pool: &PgPool, scope: Scope, id: i64) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let tenant = sqlx::query_scalar!(
        "SELECT tenant_id FROM contacts WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2)",
        id,
        scope as _,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(tenant) = tenant else {
        return Ok(false);
    };
    hold_for_write(&mut tx, tenant).await?;
    let deleted = sqlx::query!("DELETE FROM contacts WHERE id = $1", id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(deleted.rows_affected() > 0)
}

/// Moves the staged upload (`crate::uploads`) into tenant `tenant`'s contacts, in the
/// caller's transaction: the last row of an address wins, and its attributes are merged
/// into an existing contact's. Names a contact left with more than `max_attributes`, or one
/// a merge left with attributes longer than `max_bytes` as JSON text (an upload's row is
/// bounded, but merges are not: uploads of other keys each would grow a contact, and every
/// list or segment start that reads it, without end; a new contact is as long as its row
/// and the header's names make it).
/// Waits for a segment's audience being copied from the tenant's contacts
/// ([`hold_still`]), and for another upload's last statement (held from here to the
/// commit: the upload's rows are written by then, this is the short part).
pub async fn upsert_staged(
    tx: &mut PgConnection,
    tenant: Uuid,
    max_attributes: i64,
    max_bytes: i64,
) -> Result<Upserted, sqlx::Error> {
    hold_for_write(tx, tenant).await?;
    let (inserted, updated, overfull): (i64, i64, Option<String>) = sqlx::query_as(
        "WITH up AS (
             INSERT INTO contacts AS c (tenant_id, address, attributes)
             SELECT DISTINCT ON (address) $1, address, fields
             FROM upload_rows ORDER BY address, n DESC
             ON CONFLICT (tenant_id, address)
             DO UPDATE SET attributes = c.attributes || excluded.attributes, updated_at = now()
             RETURNING (xmax = 0) AS fresh, address, attributes
         )
         SELECT count(*) FILTER (WHERE fresh), count(*) FILTER (WHERE NOT fresh),
                (SELECT address FROM up
                 WHERE (SELECT count(*) FROM jsonb_object_keys(attributes)) > $2
                    -- Merged past the bound, and past what its row alone made it (a row
                    -- may make a contact past it, as JSON text: an upload of the same
                    -- again is taken). Read only for a contact past the bound.
                    OR CASE WHEN NOT fresh AND octet_length(attributes::text) > $3
                            THEN octet_length(attributes::text) > greatest($3, (
                                SELECT octet_length(u.fields::text) FROM upload_rows u
                                WHERE u.address = up.address ORDER BY u.n DESC LIMIT 1))
                            ELSE false END
                 LIMIT 1)
         FROM up",
    )
    .bind(tenant)
    .bind(max_attributes)
    .bind(max_bytes)
    .fetch_one(tx)
    .await?;
    Ok(Upserted {
        inserted: u64::try_from(inserted).unwrap_or(0),
        updated: u64::try_from(updated).unwrap_or(0),
        overfull,
    })
}
