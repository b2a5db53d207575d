//! Creating tenants, providers and campaigns with their recipients.
//!
//! Every write that makes one object is one transaction: a campaign whose recipients fail
//! validation is not created at all.

use crate::recipients::audience;
use chrono::{DateTime, Utc};
use herald_shared::domain::{CampaignStatus, Channel};
use herald_shared::template;
use serde_json::{Map, Value};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("template: {0}")]
    Template(#[from] template::TemplateError),
    #[error("recipient #{index} ({address}): {source}")]
    Recipient {
        index: usize,
        address: String,
        #[source]
        source: template::TemplateError,
    },
    #[error("campaign {0} not found")]
    CampaignNotFound(Uuid),
    #[error("campaign {id} is {status}; only draft campaigns can be started")]
    NotStartable { id: Uuid, status: String },
}

pub async fn create_tenant(pool: &PgPool, name: &str, weight: i32) -> Result<Uuid, CatalogError> {
    let id = sqlx::query_scalar!(
        "INSERT INTO tenants (name, weight) VALUES ($1, $2) RETURNING id",
        name,
        weight,
    )
    .fetch_one(pool)
    .await?;
    Ok(id)
}

/// A provider's connection and policy settings.
#[derive(Debug, Clone)]
pub struct NewProvider {
    pub tenant_id: Option<Uuid>,
    pub name: String,
    pub endpoint: String,
    pub timeout_ms: i32,
    pub max_in_flight: i32,
    pub max_attempts: i32,
    pub retry_base_ms: i32,
    pub retry_max_ms: i32,
    /// What one message costs through this provider (any currency; shown with progress).
    pub cost_per_message: Option<f64>,
    /// Secrets (write-only): for a generic provider, `bearer_token`, `headers` and the
    /// `webhook_secret` that signs its receipts.
    pub credentials: Value,
    /// How long a recipient whose request got no answer waits for a receipt.
    pub unknown_window_ms: i32,
}

impl NewProvider {
    /// A generic HTTP provider at `endpoint` with the schema's defaults.
    pub fn http(name: &str, endpoint: &str) -> Self {
        Self {
            tenant_id: None,
            name: name.to_owned(),
            endpoint: endpoint.to_owned(),
            timeout_ms: 10_000,
            max_in_flight: 100,
            max_attempts: 5,
            retry_base_ms: 1_000,
            retry_max_ms: 300_000,
            cost_per_message: None,
            credentials: Value::Object(Map::new()),
            unknown_window_ms: 120_000,
        }
    }
}

pub async fn create_provider(pool: &PgPool, p: &NewProvider) -> Result<Uuid, CatalogError> {
    let id = sqlx::query_scalar!(
        "INSERT INTO providers
             (tenant_id, name, endpoint, timeout_ms, max_in_flight, max_attempts, retry_base_ms,
              retry_max_ms, cost_per_message, credentials, unknown_window_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::float8, $10, $11) RETURNING id",
        p.tenant_id,
        &p.name,
        &p.endpoint,
        p.timeout_ms,
        p.max_in_flight,
        p.max_attempts,
        p.retry_base_ms,
        p.retry_max_ms,
        p.cost_per_message,
        &p.credentials,
        p.unknown_window_ms,
    )
    .fetch_one(pool)
    .await?;
    Ok(id)
}

#[derive(Debug, Clone)]
pub struct NewCampaign {
    pub tenant_id: Uuid,
    pub provider_id: Uuid,
    /// Takes what the primary provider cannot (at its rate limit, or while its breaker is
    /// open).
    pub overflow_provider_id: Option<Uuid>,
    pub name: String,
    pub channel: Channel,
    pub template: String,
    pub batch_size: i32,
}

#[derive(Debug, Clone)]
pub struct NewRecipient {
    pub address: String,
    pub variables: Map<String, Value>,
}

/// Rows per INSERT when loading recipients: large enough to be fast, small enough that one
/// statement's parameters stay modest.
const INSERT_CHUNK: usize = 10_000;

/// Creates a draft campaign and its recipients in one transaction, after checking that every
/// recipient has every variable the template uses. Duplicate addresses are kept once.
pub async fn create_campaign(
    pool: &PgPool,
    campaign: &NewCampaign,
    recipients: &[NewRecipient],
) -> Result<Uuid, CatalogError> {
    let needed = template::variables(&campaign.template)?;
    for (index, r) in recipients.iter().enumerate() {
        if let Some(missing) = needed
            .iter()
            .find(|name| r.variables.get(*name).is_none_or(Value::is_null))
        {
            return Err(CatalogError::Recipient {
                index,
                address: r.address.clone(),
                source: template::TemplateError::MissingVariable(missing.clone()),
            });
        }
    }

    let mut tx = pool.begin().await?;
    let id: Uuid = sqlx::query_scalar!(
        "INSERT INTO campaigns (tenant_id, provider_id, overflow_provider_id, name, channel, template, batch_size)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        campaign.tenant_id,
        campaign.provider_id,
        campaign.overflow_provider_id,
        &campaign.name,
        campaign.channel.as_str(),
        &campaign.template,
        campaign.batch_size,
    )
    .fetch_one(&mut *tx)
    .await?;

    for chunk in recipients.chunks(INSERT_CHUNK) {
        let addresses: Vec<String> = chunk.iter().map(|r| r.address.clone()).collect();
        let variables: Vec<Value> = chunk
            .iter()
            .map(|r| Value::Object(r.variables.clone()))
            .collect();
        let mut qb = audience::start_adding(id);
        qb.push("SELECT a AS address, v AS variables, n FROM unnest(")
            .push_bind(addresses)
            .push("::text[], ")
            .push_bind(variables)
            .push("::jsonb[]) WITH ORDINALITY AS u(a, v, n)");
        audience::finish_adding(qb, &mut tx).await?;
    }
    tx.commit().await?;
    Ok(id)
}

/// Schedules a draft campaign to start at `at` (now if `None`); the scheduler makes it
/// `running` at its first tick after that time.
pub async fn start_campaign(
    pool: &PgPool,
    id: Uuid,
    at: Option<DateTime<Utc>>,
) -> Result<(), CatalogError> {
    if start_campaigns(pool, &[id], at).await? == 1 {
        return Ok(());
    }
    let status: Option<String> =
        sqlx::query_scalar!("SELECT status FROM campaigns WHERE id = $1", id,)
            .fetch_optional(pool)
            .await?;
    match status {
        None => Err(CatalogError::CampaignNotFound(id)),
        Some(status) => Err(CatalogError::NotStartable { id, status }),
    }
}

/// Schedules the draft campaigns among `ids` to start at `at` (now if `None`), in one
/// transaction (a statement for the starts, one for the scheduler's wakes); returns how many were drafts (the others stay as they were).
/// Ten thousand campaigns started one by one take a commit each: 56 s on a busy two-core
/// machine, against well under a second for all of them here.
pub async fn start_campaigns(
    pool: &PgPool,
    ids: &[Uuid],
    at: Option<DateTime<Utc>>,
) -> Result<u64, CatalogError> {
    // The wakes go out at the commit, with the starts or not at all.
    let mut tx = pool.begin().await?;
    let started: Vec<Uuid> = sqlx::query_scalar!(
        "WITH drafts AS MATERIALIZED (
             -- Locked in id order, as by every statement that writes several campaign rows
             -- (the scheduler's claim among them).
             SELECT id FROM campaigns WHERE id = ANY($1) AND status = 'draft'
             ORDER BY id FOR NO KEY UPDATE
         )
         UPDATE campaigns c SET status = 'scheduled', start_at = coalesce($2, now()),
                started_at = CASE WHEN coalesce($2, now()) <= now() THEN now() END
         FROM drafts d
         WHERE c.id = d.id AND c.status = 'draft'
         RETURNING c.id",
        ids,
        at,
    )
    .fetch_all(&mut *tx)
    .await?;
    crate::campaigns::wake_if_due(&mut tx, &started).await?;
    tx.commit().await?;
    Ok(started.len() as u64)
}

/// A campaign's current status.
pub async fn campaign_status(pool: &PgPool, id: Uuid) -> Result<CampaignStatus, CatalogError> {
    let status: Option<String> =
        sqlx::query_scalar!("SELECT status FROM campaigns WHERE id = $1", id,)
            .fetch_optional(pool)
            .await?;
    let status = status.ok_or(CatalogError::CampaignNotFound(id))?;
    // The column's CHECK constraint admits only known values.
    Ok(status.parse().unwrap_or(CampaignStatus::Draft))
}
