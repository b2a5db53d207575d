//! The providers whose receipts this receiver checks: each one's parsed configuration (the
//! secrets its receipts are signed with), cached for a short while.

use herald_shared::provider_config::{self, ProviderConfig};
use serde_json::Value;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long a provider's secrets are trusted before they are read again (a rotated token
/// takes effect within this).
const REFRESH: Duration = Duration::from_secs(30);
/// How long an id that names no provider is remembered, so a flood of bad ids costs one
/// query each per period rather than one per request.
const MISSING: Duration = Duration::from_secs(5);

/// When each provider was read, and what it was (`None`: no such provider).
type Cache = HashMap<Uuid, (Instant, Option<Arc<ProviderConfig>>)>;

#[derive(Clone)]
pub struct Providers {
    pool: PgPool,
    cache: Arc<Mutex<Cache>>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    kind: String,
    endpoint: String,
    settings: Value,
    credentials: Value,
}

impl Providers {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            cache: Arc::default(),
        }
    }

    /// The provider's configuration; `None` if there is no such provider (or its stored
    /// configuration no longer parses, which the admin never lets happen).
    pub async fn get(&self, id: Uuid) -> Result<Option<Arc<ProviderConfig>>, sqlx::Error> {
        if let Some((at, config)) = self.lock().get(&id).cloned() {
            let fresh = if config.is_some() { REFRESH } else { MISSING };
            if at.elapsed() < fresh {
                return Ok(config);
            }
        }
        let row: Option<Row> = sqlx::query_as(
            "SELECT id, kind, endpoint, settings, credentials FROM providers WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let config = row.and_then(|row| parse(&row)).map(Arc::new);
        self.lock().insert(id, (Instant::now(), config.clone()));
        Ok(config)
    }

    /// WhatsApp providers of the phone number `phone_number_id`: one Meta app (one webhook
    /// URL) may serve several numbers, each a provider of its own.
    pub async fn whatsapp_by_number(
        &self,
        phone_number_id: &str,
    ) -> Result<Vec<(Uuid, Arc<ProviderConfig>)>, sqlx::Error> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, kind, endpoint, settings, credentials FROM providers
             WHERE kind = 'whatsapp' AND settings->>'phone_number_id' = $1",
        )
        .bind(phone_number_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|row| parse(row).map(|config| (row.id, Arc::new(config))))
            .collect())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn parse(row: &Row) -> Option<ProviderConfig> {
    match provider_config::parse(&row.kind, &row.endpoint, &row.settings, &row.credentials) {
        Ok(config) => Some(config),
        Err(problems) => {
            tracing::warn!(provider_id = %row.id, %problems, "provider's configuration does not parse; its receipts are refused");
            None
        }
    }
}
