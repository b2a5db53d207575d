//! The providers whose receipts this receiver checks: each one's owner and parsed
//! configuration (the secrets its receipts are signed with), cached for a short while. Ids
//! that name no provider are not remembered: anyone may send them, and the cache must not
//! grow with them. So reading an id not in the cache takes one of a few turns: a flood of
//! made-up ids waits (and is answered 503) rather than taking the pool's connections from
//! the statement that stores real receipts. A provider in the cache keeps its receipts
//! flowing on what was last read while the database does not answer.

use chrono::{DateTime, Utc};
use herald_shared::db::within;
use herald_shared::provider_config::{self, ProviderConfig};
use herald_shared::sealed::Keyring;
use herald_store::{self as store, providers::WebhookRow};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use uuid::Uuid;

/// How long a provider's secrets are trusted before they are read again (a rotated token
/// takes effect within this, or at the first signature it makes, [`REREAD_AFTER`]).
const REFRESH: Duration = Duration::from_secs(30);
/// A cached provider whose secret refused a signature is read again if it was read longer
/// ago than this: a secret rotated since takes effect at once, not within [`REFRESH`] (in
/// which Twilio's callbacks, which it does not send again, would be lost), while a flood of
/// forged signatures costs at most a read per provider this often.
const REREAD_AFTER: Duration = Duration::from_secs(2);
/// Most reads of providers not in the cache at once.
const UNCACHED_READS: usize = 2;
/// How long such a read waits for its turn.
const UNCACHED_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("too many providers not in the cache are being read at once")]
    Busy,
}

/// A provider as the receiver knows it.
#[derive(Debug, Clone)]
pub struct Known {
    /// `None`: an operator's provider.
    pub tenant_id: Option<Uuid>,
    pub config: ProviderConfig,
    /// The configuration its last rotation replaced, and until when receipts signed with
    /// its secret are still taken.
    pub previous: Option<(ProviderConfig, DateTime<Utc>)>,
}

/// Which of a provider's configurations holds the secret that signed a receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    /// The one in use.
    Current,
    /// The one its last rotation replaced, within the rotation's grace.
    Replaced,
}

impl Known {
    /// The configurations whose secrets may sign this provider's receipts now: the one in
    /// use, then the one its last rotation replaced, while its grace lasts.
    pub fn signing(&self) -> impl Iterator<Item = (Signer, &ProviderConfig)> {
        let now = Utc::now();
        std::iter::once((Signer::Current, &self.config)).chain(
            self.previous
                .iter()
                .filter(move |(_, until)| *until > now)
                .map(|(config, _)| (Signer::Replaced, config)),
        )
    }

    /// The configuration `signer` names (the one in use if it names none).
    pub fn signed_by(&self, signer: Signer) -> &ProviderConfig {
        match (signer, &self.previous) {
            (Signer::Replaced, Some((config, _))) => config,
            _ => &self.config,
        }
    }
}

/// When each provider was read, and what it is.
type Cache = HashMap<Uuid, (Instant, Arc<Known>)>;

/// When a provider was last read again, locked while it is being read.
type Reread = Arc<tokio::sync::Mutex<Option<Instant>>>;

/// The WhatsApp providers of one phone number.
pub type Siblings = Vec<(Uuid, Known)>;

/// When the providers of an owner's phone number were read, and which they are (only
/// numbers some provider has).
type SiblingCache = HashMap<(Option<Uuid>, String), (Instant, Siblings)>;

#[derive(Clone)]
pub struct Providers {
    pool: PgPool,
    /// Opens credentials sealed at rest.
    keyring: Keyring,
    cache: Arc<Mutex<Cache>>,
    /// When each provider was last read again for a refused signature (see [`Self::reread`]),
    /// behind a lock held through the read: only providers in the cache, so it grows with
    /// real ones alone.
    rereads: Arc<Mutex<HashMap<Uuid, Reread>>>,
    uncached: Arc<Semaphore>,
    siblings: Arc<Mutex<SiblingCache>>,
}

impl Providers {
    pub fn new(pool: PgPool, keyring: Keyring) -> Self {
        Self {
            pool,
            keyring,
            cache: Arc::default(),
            rereads: Arc::default(),
            uncached: Arc::new(Semaphore::new(UNCACHED_READS)),
            siblings: Arc::default(),
        }
    }

    /// The provider; `None` if there is no such provider (or its stored configuration no
    /// longer parses, which the admin never lets happen).
    pub async fn get(&self, id: Uuid) -> Result<Option<Arc<Known>>, ProviderError> {
        let cached = self.lock().get(&id).cloned();
        if let Some((at, known)) = &cached
            && at.elapsed() < REFRESH
        {
            return Ok(Some(known.clone()));
        }
        let _turn = match cached {
            Some(_) => None,
            None => {
                let turn = self.turn().await?;
                // Requests that waited together for one provider (a receiver just started)
                // read it once: the first turn's read is in the cache now.
                let fresh = self.lock().get(&id).cloned();
                if let Some((at, known)) = fresh
                    && at.elapsed() < REFRESH
                {
                    return Ok(Some(known));
                }
                Some(turn)
            }
        };
        let row = match within(store::providers::webhook_row(&self.pool, id)).await {
            Ok(row) => row,
            Err(error) => match cached {
                Some((_, known)) => {
                    tracing::warn!(provider_id = %id, %error, "cannot read the provider again; its receipts are checked as last read");
                    // Trusted for another while, so that each request does not wait on the
                    // database first.
                    self.lock().insert(id, (Instant::now(), known.clone()));
                    return Ok(Some(known));
                }
                None => return Err(error.into()),
            },
        };
        let Some(known) = row.and_then(|row| parse(&self.keyring, &row)).map(Arc::new) else {
            self.lock().remove(&id);
            return Ok(None);
        };
        self.lock().insert(id, (Instant::now(), known.clone()));
        Ok(Some(known))
    }

    /// Provider `id` changed (`herald_shared::provider_changes`): its next request reads it
    /// as it is now. Its copy is kept, as read too long ago: that read takes none of the
    /// turns of providers not in the cache (a burst of callbacks after a rotation would
    /// wait for them with a flood of made-up ids, and be answered 503), and while the
    /// database does not answer the copy still checks its callbacks.
    pub fn forget(&self, id: Uuid) {
        {
            let mut cache = self.lock();
            match (Instant::now().checked_sub(REFRESH), cache.get_mut(&id)) {
                (Some(long_ago), Some((read_at, _))) => *read_at = long_ago,
                _ => {
                    cache.remove(&id);
                }
            }
        }
        self.rereads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        self.siblings()
            .retain(|_, (_, siblings)| !siblings.iter().any(|(sibling, _)| *sibling == id));
        tracing::debug!(provider_id = %id, "provider changed: read again at its next request");
    }

    /// The provider as stored now (its secret refused a signature: it may have been rotated
    /// since); `None` if it is gone. Read at most once per [`REREAD_AFTER`]: requests
    /// refused together wait for the one read (however it ends: the time is taken before
    /// it) and get what it found, so that callbacks signed with a secret just rotated, which
    /// come together, are all checked against it, while a flood of forged signatures costs
    /// one read per provider that often. A request that waited through a read begun after
    /// it came takes that read's copy, however long the read took (one slower than
    /// [`REREAD_AFTER`] is not made again by each request waiting for it).
    pub async fn reread(&self, id: Uuid) -> Result<Option<Arc<Known>>, ProviderError> {
        if !self.lock().contains_key(&id) {
            // Dropped meanwhile (gone, or just read as gone): as any provider not cached.
            return self.get(id).await;
        }
        let arrived = Instant::now();
        let slot = self
            .rereads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id)
            .or_default()
            .clone();
        let mut last = slot.lock().await;
        if last.is_some_and(|at| at >= arrived || at.elapsed() < REREAD_AFTER) {
            return Ok(self.lock().get(&id).map(|(_, known)| known.clone()));
        }
        *last = Some(Instant::now());
        let row = within(store::providers::webhook_row(&self.pool, id)).await?;
        let Some(known) = row.and_then(|row| parse(&self.keyring, &row)).map(Arc::new) else {
            self.lock().remove(&id);
            return Ok(None);
        };
        self.lock().insert(id, (Instant::now(), known.clone()));
        Ok(Some(known))
    }

    /// WhatsApp providers of `tenant` (`None`: the operator's) for the phone number
    /// `phone_number_id`: one Meta app (one webhook URL) may serve several numbers, each a
    /// provider of its own.
    ///
    /// A number found is remembered for [`REFRESH`], so a real sibling's statuses cost no
    /// read. A number not found is not (anyone holding an app's secret, a tenant for its
    /// own provider, may name any number), and reading it takes one of the few turns: a
    /// notification signed by a tenant and naming thousands of made-up numbers once held a
    /// connection of the pool for each in turn, and a few such held every tenant's receipts
    /// up.
    ///
    /// Callers look in [`Self::remembered_by_number`] first, and read again if none there
    /// fits (a secret rotated since).
    ///
    /// On a database error or no turn in time, the caller may fall back on what was
    /// remembered, however old.
    pub async fn whatsapp_by_number(
        &self,
        phone_number_id: &str,
        tenant: Option<Uuid>,
    ) -> Result<Siblings, ProviderError> {
        let key = (tenant, phone_number_id.to_owned());
        let _turn = self.turn().await?;
        let rows = within(store::providers::whatsapp_by_number(
            &self.pool,
            phone_number_id,
            tenant,
        ))
        .await?;
        let found: Siblings = rows
            .iter()
            .filter_map(|row| parse(&self.keyring, row).map(|known| (row.id, known)))
            .collect();
        // A number no provider has any more (deleted, or a secret rotated away) is
        // forgotten; the cache grows with real providers' numbers alone.
        let mut siblings = self.siblings();
        if found.is_empty() {
            siblings.remove(&key);
        } else {
            siblings.insert(key, (Instant::now(), found.clone()));
        }
        Ok(found)
    }

    /// The providers of `tenant`'s number `phone_number_id` as read within [`REFRESH`]
    /// (`stale`: whenever they were read).
    pub fn remembered_by_number(
        &self,
        phone_number_id: &str,
        tenant: Option<Uuid>,
        stale: bool,
    ) -> Option<Siblings> {
        self.siblings()
            .get(&(tenant, phone_number_id.to_owned()))
            .filter(|(at, _)| stale || at.elapsed() < REFRESH)
            .map(|(_, found)| found.clone())
    }

    fn siblings(&self) -> std::sync::MutexGuard<'_, SiblingCache> {
        self.siblings.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A turn to read what the cache does not hold, waited for at most [`UNCACHED_WAIT`].
    async fn turn(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ProviderError> {
        match tokio::time::timeout(UNCACHED_WAIT, self.uncached.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(ProviderError::Busy),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn parse(keyring: &Keyring, row: &WebhookRow) -> Option<Known> {
    let config = parse_config(keyring, row, &row.credentials, "")?;
    // The replaced credentials are only a second chance: without them, receipts signed
    // with the ones in use still pass.
    let previous = row
        .previous_credentials
        .as_ref()
        .zip(row.previous_credentials_until)
        .and_then(|(stored, until)| {
            parse_config(keyring, row, stored, "replaced ").map(|config| (config, until))
        });
    Some(Known {
        tenant_id: row.tenant_id,
        config,
        previous,
    })
}

fn parse_config(
    keyring: &Keyring,
    row: &WebhookRow,
    stored: &serde_json::Value,
    which: &str,
) -> Option<ProviderConfig> {
    let credentials = match keyring.open(row.id, stored) {
        Ok(credentials) => credentials,
        Err(error) => {
            tracing::warn!(provider_id = %row.id, %error, "provider's {which}credentials cannot be opened; receipts signed with them are refused");
            return None;
        }
    };
    match provider_config::parse(&row.kind, &row.endpoint, &row.settings, &credentials) {
        Ok(config) => Some(config),
        Err(problems) => {
            tracing::warn!(provider_id = %row.id, %problems, "provider's configuration with its {which}credentials does not parse; receipts signed with them are refused");
            None
        }
    }
}
