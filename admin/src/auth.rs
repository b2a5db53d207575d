//! API keys: who is calling, and what they may see.
//!
//! Keys are 256 random bits, shown once and stored as SHA-256 hashes (a fast hash is enough
//! for high-entropy secrets; stretching is for passwords). An operator key sees every tenant;
//! a tenant key sees only its own tenant, and every query it makes is scoped by
//! [`Caller::scope`], so another tenant's ids look exactly like ids that do not exist.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

const OPERATOR_PREFIX: &str = "hk_op_";
const TENANT_PREFIX: &str = "hk_tn_";

/// The authenticated caller of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Operator,
    Tenant(Uuid),
}

impl Caller {
    /// The tenant filter for queries: `None` for operators (everything), the tenant's id
    /// otherwise.
    pub fn scope(self) -> Option<Uuid> {
        match self {
            Caller::Operator => None,
            Caller::Tenant(id) => Some(id),
        }
    }

    pub fn require_operator(self) -> Result<(), ApiError> {
        match self {
            Caller::Operator => Ok(()),
            Caller::Tenant(_) => Err(ApiError::Forbidden("this action needs an operator key")),
        }
    }

    /// The tenant a new object belongs to: a tenant key's own, or the one an operator names.
    pub fn owning_tenant(self, requested: Option<Uuid>) -> Result<Uuid, ApiError> {
        match (self, requested) {
            (Caller::Tenant(id), _) => Ok(id),
            (Caller::Operator, Some(id)) => Ok(id),
            (Caller::Operator, None) => Err(ApiError::field(
                "tenant_id",
                "required when using an operator key",
            )),
        }
    }
}

/// A newly made key: the secret (shown once) and what is stored.
pub struct NewKey {
    pub secret: String,
    pub prefix: String,
    pub hash: Vec<u8>,
}

pub fn generate(tenant: Option<Uuid>) -> NewKey {
    let bytes: [u8; 32] = rand::random();
    let kind = if tenant.is_some() {
        TENANT_PREFIX
    } else {
        OPERATOR_PREFIX
    };
    let secret = format!("{kind}{}", hex::encode(bytes));
    NewKey {
        prefix: secret[..kind.len() + 6].to_owned(),
        hash: hash(&secret),
        secret,
    }
}

pub fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Stores a new key for `tenant` (operator key when `None`); returns its id and secret.
pub async fn create_key(
    pool: &PgPool,
    tenant: Option<Uuid>,
    name: &str,
) -> Result<(Uuid, String), sqlx::Error> {
    let key = generate(tenant);
    let id = sqlx::query_scalar(
        "INSERT INTO api_keys (tenant_id, name, prefix, key_hash) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(tenant)
    .bind(name)
    .bind(&key.prefix)
    .bind(&key.hash)
    .fetch_one(pool)
    .await?;
    Ok((id, key.secret))
}

/// Reads `Authorization: Bearer <key>`.
fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let secret = bearer(parts).ok_or(ApiError::Unauthorized)?;
        if !(secret.starts_with(OPERATOR_PREFIX) || secret.starts_with(TENANT_PREFIX)) {
            return Err(ApiError::Unauthorized);
        }
        let row: Option<(Option<Uuid>,)> = sqlx::query_as(
            // A rotated key works until the end of its grace period.
            "SELECT tenant_id FROM api_keys
             WHERE key_hash = $1 AND (revoked_at IS NULL OR revoked_at > now())",
        )
        .bind(hash(secret))
        .fetch_optional(&state.pool)
        .await?;
        match row {
            None => Err(ApiError::Unauthorized),
            Some((None,)) => Ok(Caller::Operator),
            Some((Some(tenant),)) => Ok(Caller::Tenant(tenant)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_prefixed_and_stored_only_hashed() {
        let a = generate(None);
        let b = generate(Some(Uuid::nil()));
        assert!(a.secret.starts_with(OPERATOR_PREFIX));
        assert!(b.secret.starts_with(TENANT_PREFIX));
        assert_ne!(a.secret, generate(None).secret);
        assert_eq!(a.hash, hash(&a.secret));
        assert!(
            !a.hash
                .windows(6)
                .any(|w| a.secret.as_bytes().starts_with(w))
        );
        assert!(a.secret.starts_with(&a.prefix) && a.prefix.len() < 16);
    }

    #[test]
    fn tenant_keys_always_own_their_objects() {
        let tenant = Uuid::from_u128(7);
        let other = Uuid::from_u128(8);
        assert_eq!(
            Caller::Tenant(tenant).owning_tenant(Some(other)).unwrap(),
            tenant
        );
        assert_eq!(Caller::Operator.owning_tenant(Some(other)).unwrap(), other);
        assert!(Caller::Operator.owning_tenant(None).is_err());
        assert!(Caller::Tenant(tenant).require_operator().is_err());
    }
}
