//! `herald-admin credentials reseal`: seals every provider's stored credentials, and every
//! tenant's webhook secret, with the current `HERALD_CREDENTIALS_KEY`, the step of a key rotation between "new key set, old key
//! kept as HERALD_CREDENTIALS_OLD_KEYS" and "old key dropped" (and how credentials stored
//! before any key get sealed). Safe to run again, and beside running services: each provider
//! (each secret) is rewritten in a transaction of its own, and every process opens both keys meanwhile.

use herald_shared::sealed::{Keyring, SealError};
use herald_store::{providers, webhooks};
use serde_json::Value;
use sqlx::PgPool;

#[derive(Debug, thiserror::Error)]
pub enum ResealError {
    /// Providers' credentials (or webhook secrets) no key opens were left as they were (the
    /// others were resealed): the first of them, and how many more.
    #[error("{what}: {error}{}", if *.more > 0 { format!(" (and {} more left as they were)", .more) } else { String::new() })]
    Open {
        what: String,
        error: SealError,
        more: usize,
    },
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// How many providers (webhook secrets) were looked at, and how many of them rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resealed {
    pub providers: usize,
    pub resealed: usize,
    pub webhooks: usize,
    pub webhooks_resealed: usize,
}

/// Reseals every provider's credentials; one that no key opens is left as it is, and the
/// others are resealed all the same (one bad row must not hold back a rotation), then
/// reported as an error.
pub async fn reseal(pool: &PgPool, keyring: &Keyring) -> Result<Resealed, ResealError> {
    let ids = providers::ids(pool).await?;
    let mut resealed = 0;
    let mut unopened = Vec::new();
    for &id in &ids {
        let mut tx = pool.begin().await?;
        let Some(stored) = providers::lock_credentials(&mut tx, id).await? else {
            continue;
        };
        // The credentials a rotation replaced are resealed too: the old key, once dropped,
        // would no longer open them, and receipts signed with them would be refused. Those
        // whose grace is over are dropped.
        let previous = stored.previous_credentials.as_ref();
        if keyring.is_current(&stored.credentials)
            && previous.is_none_or(|p| keyring.is_current(p))
            && !stored.expired_previous
        {
            continue;
        }
        let current = match keyring.open(id, &stored.credentials) {
            Ok(opened) => opened,
            Err(error) => {
                tracing::warn!(provider_id = %id, %error, "credentials left as they were");
                unopened.push((format!("provider {id}"), error));
                continue;
            }
        };
        // Replaced credentials no key opens are of no use to the receiver either: dropped,
        // rather than holding back the reseal of the ones in use.
        let previous = previous.and_then(|p| {
            keyring
                .open(id, p)
                .inspect_err(|error| {
                    tracing::warn!(provider_id = %id, %error, "replaced credentials no key opens: dropped");
                })
                .ok()
        });
        let Value::Object(credentials) = current else {
            continue;
        };
        let resealed_credentials = providers::StoredCredentials {
            credentials: keyring.seal(id, &credentials),
            expired_previous: false,
            // Anything but an object (never written) is kept as it was.
            previous_credentials: previous.zip(stored.previous_credentials).map(
                |(opened, stored)| match opened {
                    Value::Object(previous) => keyring.seal(id, &previous),
                    _ => stored,
                },
            ),
        };
        providers::reseal_credentials(&mut tx, id, &resealed_credentials).await?;
        tx.commit().await?;
        resealed += 1;
    }
    let tenants = webhooks::tenants(pool).await?;
    let mut webhooks_resealed = 0;
    for &tenant in &tenants {
        let mut tx = pool.begin().await?;
        let Some((stored, previous)) = webhooks::lock_secrets(&mut tx, tenant).await? else {
            continue;
        };
        if keyring.is_current(&stored) && previous.as_ref().is_none_or(|p| keyring.is_current(p)) {
            continue;
        }
        let secret = match keyring.open(tenant, &stored) {
            Ok(Value::Object(secret)) => secret,
            Ok(_) => continue,
            Err(error) => {
                tracing::warn!(tenant_id = %tenant, %error, "webhook secret left as it was (set the webhook again with a new secret)");
                unopened.push((format!("the webhook secret of tenant {tenant}"), error));
                continue;
            }
        };
        // A replaced secret no key opens signs nothing any more: dropped.
        let previous = previous.and_then(|p| match keyring.open(tenant, &p) {
            Ok(Value::Object(previous)) => Some(keyring.seal(tenant, &previous)),
            _ => None,
        });
        webhooks::reseal_secrets(
            &mut tx,
            tenant,
            &keyring.seal(tenant, &secret),
            previous.as_ref(),
        )
        .await?;
        tx.commit().await?;
        webhooks_resealed += 1;
    }
    tracing::info!(providers = ids.len(), resealed, webhooks = tenants.len(), webhooks_resealed,
        key = ?keyring.current_id(), "credentials resealed");
    let more = unopened.len().saturating_sub(1);
    if let Some((what, error)) = unopened.into_iter().next() {
        return Err(ResealError::Open { what, error, more });
    }
    Ok(Resealed {
        providers: ids.len(),
        resealed,
        webhooks: tenants.len(),
        webhooks_resealed,
    })
}
