//! API keys as stored: never a secret, only its SHA-256 hash and its first characters
//! (the admin makes the secrets and hashes them).

use crate::tenants::Scope;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

/// What a key may do.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Access {
    /// Everything its holder may: an operator's every tenant, a tenant's all of its own.
    #[default]
    Full,
    /// Only the transactional messages API: send, read and cancel its tenant's messages.
    Send,
}

/// Who holds a key that is accepted now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    /// `None`: an operator.
    pub tenant_id: Option<Uuid>,
    pub access: Access,
}

/// A key as listed: never its secret, only the first characters that tell keys apart.
#[derive(Debug, Serialize, ToSchema)]
pub struct Key {
    pub id: Uuid,
    /// `null`: an operator key.
    pub tenant_id: Option<Uuid>,
    pub name: String,
    /// What the key may do (a rotation keeps it).
    pub access: Access,
    /// The secret's first characters (`hk_tn_1a2b3c`), as shown when it was made.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    /// When the key stopped (or stops, after a rotation's grace) being accepted.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Accepted now.
    pub active: bool,
}

/// `sqlx::query_as!` into [`Key`]: the statement is `$before`, [`Key`]'s columns, then
/// `$after`, so the columns are written once and every statement is still checked.
macro_rules! query_key {
    ($before:literal, $after:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            Key,
            $before
                + r#"id, tenant_id, name, access AS "access: Access", prefix, created_at, revoked_at,
                     (revoked_at IS NULL OR revoked_at > now()) AS "active!""#
                + $after
            $(, $arg)*
        )
    };
}

/// Who holds the key with this hash, if it is accepted now. A rotated key is accepted until
/// the end of its grace period.
pub async fn holder(pool: &PgPool, hash: &[u8]) -> Result<Option<Holder>, sqlx::Error> {
    sqlx::query_as!(
        Holder,
        r#"SELECT tenant_id, access AS "access: Access" FROM api_keys
           WHERE key_hash = $1 AND (revoked_at IS NULL OR revoked_at > now())"#,
        hash,
    )
    .fetch_optional(pool)
    .await
}

/// Stores a key of `tenant` (an operator's when `None`, which must be [`Access::Full`]);
/// returns its id.
pub async fn insert(
    connection: &mut PgConnection,
    tenant: Option<Uuid>,
    access: Access,
    name: &str,
    prefix: &str,
    hash: &[u8],
) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar!(
        "INSERT INTO api_keys (tenant_id, access, name, prefix, key_hash)
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
        tenant,
        access as _,
        name,
        prefix,
        hash,
    )
    .fetch_one(connection)
    .await
}

/// The keys in `scope`: every key for an operator, a tenant's own otherwise.
pub async fn list(pool: &PgPool, scope: Scope) -> Result<Vec<Key>, sqlx::Error> {
    query_key!(
        "SELECT ",
        " FROM api_keys
         WHERE ($1::uuid IS NULL OR tenant_id = $1)
         ORDER BY created_at, id",
        scope as _,
    )
    .fetch_all(pool)
    .await
}

/// Key `id`, locked until the transaction ends, if it is in `scope` (operator keys are in
/// the operators' scope only).
pub async fn lock(
    tx: &mut PgConnection,
    scope: Scope,
    id: Uuid,
) -> Result<Option<Key>, sqlx::Error> {
    query_key!(
        "SELECT ",
        " FROM api_keys
         WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2) FOR UPDATE",
        id,
        scope as _,
    )
    .fetch_optional(tx)
    .await
}

/// Key `id` stops being accepted after `grace_seconds` (0: now); a key already due to stop
/// sooner keeps its earlier end.
pub async fn end(tx: &mut PgConnection, id: Uuid, grace_seconds: f64) -> Result<Key, sqlx::Error> {
    query_key!(
        "UPDATE api_keys
         SET revoked_at = least(coalesce(revoked_at, 'infinity'), now() + make_interval(secs => $2))
         WHERE id = $1 RETURNING ",
        "",
        id,
        grace_seconds,
    )
    .fetch_one(tx)
    .await
}
