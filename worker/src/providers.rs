//! Provider settings, cached per worker (in-flight caps are [`crate::in_flight`]'s).
//!
//! A provider's kind, settings and credentials are parsed into its typed configuration
//! ([`ProviderConfig`]) when loaded: a provider with bad settings is an error for its
//! recipients (retried later), never a panic or a malformed request.

use crate::outcome::Policy;
use herald_shared::backoff::RetryPolicy;
use herald_shared::provider_config::{self, ProviderConfig};
use herald_shared::sealed::Keyring;
use herald_store as store;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use uuid::Uuid;

/// How long settings are trusted before they are read again.
const REFRESH: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Provider {
    pub id: Uuid,
    /// What the adapters need: the API's kind, endpoint, settings and credentials.
    pub config: ProviderConfig,
    pub timeout: Duration,
    /// Retries, and what a request without an answer means.
    pub policy: Policy,
    /// Time between two requests across the whole fleet, when the provider has a rate limit.
    pub pacing: Option<Duration>,
    /// Where this provider posts receipts, for APIs that take a callback URL per request:
    /// The receiver's URL for this provider, else Twilio's `settings.status_callback`.
    pub callback_url: Option<String>,
    /// How long a call counts as live without its final status callback.
    pub live_call_hold: Duration,
    /// Bumped by each credential rotation (see [`Providers::get_at_least`]).
    pub revision: i32,
    /// A tenant's provider: it may reach only public addresses (see [`crate::egress`]).
    pub restricted: bool,
    loaded: Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("provider {0} does not exist")]
    Unknown(Uuid),
    /// The reason names fields, never credential values.
    #[error("provider {id} is misconfigured: {problems}")]
    Invalid {
        id: Uuid,
        problems: provider_config::Problems,
    },
    #[error("provider {id}'s credentials cannot be opened: {error}")]
    Sealed {
        id: Uuid,
        error: herald_shared::sealed::SealError,
    },
    #[error("loading provider: {0}")]
    Db(#[from] sqlx::Error),
}

impl ProviderError {
    /// What a recipient whose provider cannot be read gets: a provider gone, misconfigured
    /// or whose credentials cannot be opened may never come back, so the wait counts toward
    /// the deferral limit ([`Decision::Deferred`]); Herald's own database not answering is
    /// no provider's refusal ([`Decision::Postponed`]).
    pub fn wait(&self, delay: std::time::Duration) -> crate::outcome::Decision {
        use crate::outcome::Decision;
        let error = self.to_string();
        match self {
            ProviderError::Db(_) => Decision::Postponed { error, delay },
            _ => Decision::Deferred { error, delay },
        }
    }
}

#[derive(Clone)]
pub struct Providers {
    pool: PgPool,
    /// The receiver's public URL (`HERALD_RECEIVER_URL`), if Herald takes receipts.
    receiver_url: Option<Arc<str>>,
    /// Opens credentials sealed at rest.
    keyring: Keyring,
    cache: Arc<Mutex<HashMap<Uuid, Arc<Provider>>>>,
}

impl Providers {
    pub fn new(pool: PgPool, receiver_url: Option<&str>, keyring: Keyring) -> Self {
        Self {
            pool,
            receiver_url: receiver_url.map(|url| Arc::from(url.trim_end_matches('/'))),
            keyring,
            cache: Arc::default(),
        }
    }

    /// Where `provider`'s receipts go, for the APIs that name a callback per request.
    fn callback_url(&self, id: Uuid, config: &ProviderConfig) -> Option<String> {
        callback_url(self.receiver_url.as_deref(), id, config)
    }

    pub async fn get(&self, id: Uuid) -> Result<Arc<Provider>, ProviderError> {
        self.get_at_least(id, 0).await
    }

    /// The provider, read again if the cached copy is older than `revision` (a lease's
    /// view of it): rotated credentials are used from the first lease after the rotation.
    pub async fn get_at_least(
        &self,
        id: Uuid,
        revision: i32,
    ) -> Result<Arc<Provider>, ProviderError> {
        let mut cache = self.cache.lock().await;
        if let Some(provider) = cache.get(&id)
            && provider.loaded.elapsed() < REFRESH
            && provider.revision >= revision
        {
            return Ok(provider.clone());
        }
        let row = herald_shared::db::within(store::providers::load(&self.pool, id))
            .await?
            .ok_or(ProviderError::Unknown(id))?;
        let credentials = self
            .keyring
            .open(id, &row.credentials)
            .map_err(|error| ProviderError::Sealed { id, error })?;
        let config = provider_config::parse(&row.kind, &row.endpoint, &row.settings, &credentials)
            .map_err(|problems| ProviderError::Invalid { id, problems })?;
        let millis = |ms: i32| Duration::from_millis(u64::try_from(ms).unwrap_or(0));
        let unknown = row
            .unknown_outcome
            .parse()
            .map_err(|_| ProviderError::Invalid {
                id,
                problems: provider_config::Problems(vec![provider_config::Problem {
                    field: "unknown_outcome".into(),
                    reason: format!("unknown value `{}`", row.unknown_outcome),
                }]),
            })?;
        let provider = Arc::new(Provider {
            id: row.id,
            callback_url: self.callback_url(row.id, &config),
            config,
            timeout: millis(row.timeout_ms),
            live_call_hold: millis(row.live_call_timeout_ms),
            pacing: row.rate_limit.map(|limit| {
                herald_shared::rate_limit::spacing(
                    u32::try_from(limit).unwrap_or(1),
                    millis(row.rate_window_ms),
                )
            }),
            policy: Policy {
                retry: RetryPolicy {
                    max_attempts: u32::try_from(row.max_attempts).unwrap_or(1),
                    base: millis(row.retry_base_ms),
                    cap: millis(row.retry_max_ms),
                },
                unknown,
                window: millis(row.unknown_window_ms),
            },
            revision: row.revision,
            restricted: row.restricted,
            loaded: Instant::now(),
        });
        cache.insert(id, provider.clone());
        Ok(provider)
    }
}

/// Where receipts of provider `id` go, for the APIs that name a callback per request: Herald's
/// receiver when it runs and can trust them, else (Twilio) the provider's own
/// `settings.status_callback`, whose receipts Herald never sees. The receiver comes first:
/// a `status_callback` kept for the tenant's own logging must not cost Herald its receipts
/// (no delivery status, and a call's line held until its timeout).
fn callback_url(receiver_url: Option<&str>, id: Uuid, config: &ProviderConfig) -> Option<String> {
    let receiver = |path: &str| receiver_url.map(|base| format!("{base}/webhooks/{path}/{id}"));
    // Twilio signs its callbacks with the account's auth token: without it (an API key
    // alone), the receiver could not trust them, so none are asked of it.
    let twilio = |account: &provider_config::TwilioAccount, own: &Option<String>| {
        account
            .auth_token
            .as_ref()
            .and_then(|_| receiver("twilio"))
            .or_else(|| own.clone())
    };
    match config {
        ProviderConfig::TwilioSms(c) => twilio(&c.account, &c.status_callback),
        ProviderConfig::TwilioVoice(c) => twilio(&c.account, &c.status_callback),
        // Without a webhook secret, receipts could not be trusted: none are asked for.
        ProviderConfig::Http(c) => c.webhook_secret.as_ref().and_then(|_| receiver("http")),
        ProviderConfig::WhatsApp(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_that_cannot_be_read_counts_toward_the_deferral_limit_unless_the_database_failed()
    {
        use crate::outcome::Decision;
        let delay = std::time::Duration::from_secs(1);
        let gone = ProviderError::Unknown(Uuid::nil()).wait(delay);
        assert!(matches!(gone, Decision::Deferred { .. }), "{gone:?}");
        let database = ProviderError::Db(sqlx::Error::PoolTimedOut).wait(delay);
        assert!(
            matches!(database, Decision::Postponed { .. }),
            "{database:?}"
        );
    }
    use serde_json::json;

    const SID: &str = "AC00000000000000000000000000000000";
    const KEY: &str = "SK00000000000000000000000000000000";

    fn twilio(settings: serde_json::Value, credentials: serde_json::Value) -> ProviderConfig {
        provider_config::parse(
            "twilio_sms",
            "https://api.twilio.com",
            &settings,
            &credentials,
        )
        .expect("a valid provider")
    }

    #[test]
    fn receipts_go_to_the_receiver_before_a_status_callback_of_the_providers_own() {
        let id = Uuid::nil();
        let own = json!({"from": "+15005550006", "status_callback": "https://logs.example/t"});
        let token = json!({"account_sid": SID, "auth_token": "token"});
        let receiver = Some("https://hooks.example");
        assert_eq!(
            callback_url(receiver, id, &twilio(own.clone(), token.clone())).as_deref(),
            Some(format!("https://hooks.example/webhooks/twilio/{id}").as_str())
        );
        // No receiver: the provider's own, whose receipts Herald never sees.
        assert_eq!(
            callback_url(None, id, &twilio(own.clone(), token.clone())).as_deref(),
            Some("https://logs.example/t")
        );
        // An API key alone: the receiver could not check Twilio's signatures.
        let key_only = json!({"account_sid": SID, "api_key_sid": KEY, "api_key_secret": "s"});
        assert_eq!(
            callback_url(receiver, id, &twilio(own, key_only.clone())).as_deref(),
            Some("https://logs.example/t")
        );
        assert_eq!(
            callback_url(
                receiver,
                id,
                &twilio(json!({"from": "+15005550006"}), key_only)
            ),
            None
        );
    }
}
