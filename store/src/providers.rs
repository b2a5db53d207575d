//! Providers: what the tick reads of them (paces, free lines, commitments, the fleet's
//! allowances), what a worker loads to send through one and its lines for calls, and what
//! the receiver reads to check a provider's receipts.

use sqlx::PgPool;
use uuid::Uuid;

/// The pace (requests per second) of each of `providers` that has a rate limit.
pub async fn provider_paces(
    pool: &PgPool,
    providers: &[Uuid],
) -> Result<Vec<(Uuid, f64)>, sqlx::Error> {
    let rows: Vec<(Uuid, i32, i32)> = sqlx::query_as(
        "SELECT id, rate_limit, rate_window_ms FROM providers
         WHERE id = ANY($1) AND rate_limit IS NOT NULL",
    )
    .bind(providers)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, limit, window_ms)| {
            let window = std::time::Duration::from_millis(u64::try_from(window_ms).unwrap_or(1000));
            (
                id,
                herald_shared::rate_limit::per_second(u32::try_from(limit).unwrap_or(1), window),
            )
        })
        .collect())
}

/// Lines still free of each of `providers` that caps its live calls (calls placed and not
/// yet ended, fleet-wide).
pub async fn free_lines(
    pool: &PgPool,
    providers: &[Uuid],
) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT p.id, p.max_live_calls - (SELECT count(*) FROM recipients r
                                          WHERE r.live_until > now() AND r.sent_via = p.id)
         FROM providers p WHERE p.id = ANY($1) AND p.max_live_calls IS NOT NULL",
    )
    .bind(providers)
    .fetch_all(pool)
    .await
}

/// One provider's monthly commitment, with this month's sends.
#[derive(Debug, Clone, Copy, PartialEq, sqlx::FromRow)]
pub struct CommitmentRow {
    pub provider_id: Uuid,
    /// Messages agreed for the month.
    pub monthly_commitment: i32,
    /// Sent through the provider so far this month.
    pub sent_this_month: i64,
    /// Share of the month gone by, 0–1.
    pub month_elapsed: f64,
}

/// Every provider's commitment (few providers carry one), with this month's sends.
pub async fn commitments(pool: &PgPool) -> Result<Vec<CommitmentRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT provider_id, monthly_commitment, sent_this_month, month_elapsed
         FROM provider_commitments",
    )
    .fetch_all(pool)
    .await
}

/// For each of `providers`, the fewest requests any live worker may have in flight to it,
/// among those that may have any (the allowance each worker publishes with its heartbeat,
/// see the worker's `fleet`); 0 while no live worker may. It sizes the lane's AMQP messages
/// (`herald_shared::queue::message::per_message`), and a lane at 0 gets nothing: no worker
/// could take it, and a worker that starts later would take whole batches cut for nobody.
pub async fn smallest_allowances(
    pool: &PgPool,
    providers: &[Uuid],
) -> Result<Vec<(Uuid, i32)>, sqlx::Error> {
    sqlx::query_as(
        // Live: seen within the workers' six seconds (the worker's `fleet::LIVE_FOR`).
        "SELECT p.id, coalesce((SELECT min((w.caps ->> p.id::text)::int) FROM workers w
                                WHERE w.seen_at >= now() - interval '6 seconds'
                                  AND (w.caps ->> p.id::text)::int > 0),
                               0)
         FROM providers p WHERE p.id = ANY($1)",
    )
    .bind(providers)
    .fetch_all(pool)
    .await
}

/// A provider as a worker loads it to send through it: its API, its credentials (sealed at
/// rest, as stored), its retry policy and its pace. The worker parses and opens it into its
/// typed configuration.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProviderRow {
    pub id: Uuid,
    pub kind: String,
    pub endpoint: String,
    pub settings: serde_json::Value,
    pub credentials: serde_json::Value,
    pub timeout_ms: i32,
    pub max_attempts: i32,
    pub retry_base_ms: i32,
    pub retry_max_ms: i32,
    /// Requests per `rate_window_ms`, fleet-wide, when the provider has a rate limit.
    pub rate_limit: Option<i32>,
    pub rate_window_ms: i32,
    /// What a request without an answer means (`herald_shared::provider_config`'s names).
    pub unknown_outcome: String,
    pub unknown_window_ms: i32,
    pub live_call_timeout_ms: i32,
    /// Bumped by each credential rotation.
    pub revision: i32,
    /// A tenant's own provider (not shared by the operator).
    pub restricted: bool,
}

/// Provider `id`, if it exists.
pub async fn load(pool: &PgPool, id: Uuid) -> Result<Option<ProviderRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, kind, endpoint, settings, credentials, timeout_ms,
                max_attempts, retry_base_ms, retry_max_ms, rate_limit, rate_window_ms,
                unknown_outcome, unknown_window_ms, live_call_timeout_ms, revision,
                tenant_id IS NOT NULL AS restricted
         FROM providers WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Every provider's fleet-wide cap on requests in flight.
pub async fn in_flight_caps(pool: &PgPool) -> Result<Vec<(Uuid, i32)>, sqlx::Error> {
    sqlx::query_as("SELECT id, max_in_flight FROM providers")
        .fetch_all(pool)
        .await
}

/// Takes one of the provider's lines (and one of its tenant's) for the call to recipient
/// `recipient` (dispatch `seq`), held for `hold_ms` at most unless its final status frees
/// it sooner; `false` when the provider's or the tenant's lines are all busy. One at a time
/// per provider and per tenant (`herald_take_live_call`), so the caps hold fleet-wide.
pub async fn take_line(
    pool: &PgPool,
    recipient: i64,
    seq: i32,
    provider: Uuid,
    tenant: Uuid,
    hold_ms: i32,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT herald_take_live_call($1, $2, $3, $4, $5)")
        .bind(recipient)
        .bind(seq)
        .bind(provider)
        .bind(tenant)
        .bind(hold_ms)
        .fetch_one(pool)
        .await
}

/// A provider as the receiver reads it to check its receipts' signatures: its owner, API and
/// credentials (sealed at rest, as stored).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WebhookRow {
    pub id: Uuid,
    /// `None`: an operator's provider.
    pub tenant_id: Option<Uuid>,
    pub kind: String,
    pub endpoint: String,
    pub settings: serde_json::Value,
    pub credentials: serde_json::Value,
}

/// Provider `id` as the receiver reads it, if it exists.
pub async fn webhook_row(pool: &PgPool, id: Uuid) -> Result<Option<WebhookRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, tenant_id, kind, endpoint, settings, credentials FROM providers
         WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The WhatsApp providers of `tenant` (`None`: the operator's) for the phone number
/// `phone_number_id`.
pub async fn whatsapp_by_number(
    pool: &PgPool,
    phone_number_id: &str,
    tenant: Option<Uuid>,
) -> Result<Vec<WebhookRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, tenant_id, kind, endpoint, settings, credentials FROM providers
         WHERE kind = 'whatsapp' AND settings->>'phone_number_id' = $1
           AND tenant_id IS NOT DISTINCT FROM $2",
    )
    .bind(phone_number_id)
    .bind(tenant)
    .fetch_all(pool)
    .await
}
