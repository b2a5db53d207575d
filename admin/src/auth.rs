//! API keys: who is calling, and what they may see.
//!
//! Keys are 256 random bits, shown once and stored as SHA-256 hashes (a fast hash is enough
//! for high-entropy secrets; stretching is for passwords). An operator key sees every tenant;
//! a tenant key sees only its own tenant, and every query it makes is scoped by
//! [`Caller::scope`], so another tenant's ids look exactly like ids that do not exist.
//!
//! A key's [`Access`] bounds it further: a `send` key (a tenant's service that sends
//! transactional messages) reaches only the messages API. That is checked here, once, by the
//! route the request matched, before any handler runs: a route added later is closed to
//! such keys until it is listed in [`SEND_ROUTES`].

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use herald_store::keys::{self, Access};
use herald_store::tenants::Scope;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

const OPERATOR_PREFIX: &str = "hk_op_";
const TENANT_PREFIX: &str = "hk_tn_";

/// The routes (as matched, under [`crate::api::BASE`]) a `send` key may call.
pub(crate) const SEND_ROUTES: &[&str] = &[
    "/openapi.json",
    "/messages",
    "/messages/batch",
    "/messages/{id}",
    "/messages/{id}/cancel",
];

/// Whether a key of `access` may call the route matched as `route` (`None`: none matched).
fn may_call(access: Access, route: Option<&str>) -> bool {
    match access {
        Access::Full => true,
        Access::Send => route
            .and_then(|route| route.strip_prefix(crate::api::BASE))
            .is_some_and(|route| SEND_ROUTES.contains(&route)),
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Operator,
    Tenant(Uuid),
}

impl Caller {
    /// What the caller's queries may see: everything for operators, one tenant's data for
    /// a tenant's key.
    pub fn scope(self) -> Scope {
        match self {
            Caller::Operator => Scope::All,
            Caller::Tenant(id) => Scope::Tenant(id),
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

/// Stores a new key for `tenant` (operator key when `None`, always [`Access::Full`]);
/// returns its id and secret.
pub async fn create_key(
    pool: &PgPool,
    tenant: Option<Uuid>,
    access: Access,
    name: &str,
) -> Result<(Uuid, String), sqlx::Error> {
    let key = generate(tenant);
    let mut connection = pool.acquire().await?;
    let id = keys::insert(
        &mut connection,
        tenant,
        access,
        name,
        &key.prefix,
        &key.hash,
    )
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
        // Found already by `tenant_turns` (extensions are this server's, never the client's).
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(*caller);
        }
        let secret = bearer(parts).ok_or(ApiError::Unauthorized)?;
        if !(secret.starts_with(OPERATOR_PREFIX) || secret.starts_with(TENANT_PREFIX)) {
            return Err(ApiError::Unauthorized);
        }
        let Some(holder) = keys::holder(&state.pool, &hash(secret)).await? else {
            return Err(ApiError::Unauthorized);
        };
        let route = parts
            .extensions
            .get::<MatchedPath>()
            .map(MatchedPath::as_str);
        if !may_call(holder.access, route) {
            return Err(ApiError::Forbidden(
                "this key may only send, read and cancel messages (its access is `send`)",
            ));
        }
        Ok(holder.tenant_id.map_or(Caller::Operator, Caller::Tenant))
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
    fn a_send_key_reaches_the_messages_api_only() {
        let route = |path: &str| Some(format!("{}{path}", crate::api::BASE));
        for path in SEND_ROUTES {
            assert!(may_call(Access::Send, route(path).as_deref()), "{path}");
        }
        for path in [
            "/keys",
            "/keys/{id}/rotate",
            "/tenants/{id}/keys",
            "/campaigns",
            "/contacts",
            "/providers/{id}/credentials",
            "/receipts/orphans",
            "/messagesx",
        ] {
            assert!(!may_call(Access::Send, route(path).as_deref()), "{path}");
            assert!(may_call(Access::Full, route(path).as_deref()), "{path}");
        }
        // Outside the API, or nothing matched: closed.
        assert!(!may_call(Access::Send, Some("/messages")));
        assert!(!may_call(Access::Send, None));
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
