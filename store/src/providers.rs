//! Providers: what the tick reads of them (paces, free lines, commitments, the fleet's
//! allowances), what a worker loads to send through one and its lines for calls, and what
//! the receiver reads to check a provider's receipts; and the admin's providers (created,
//! listed, their commitments and credentials changed).

use crate::tenants::Scope;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

/// The pace (requests per second) of each of `providers` that has a rate limit.
pub async fn provider_paces(
    pool: &PgPool,
    providers: &[Uuid],
) -> Result<Vec<(Uuid, f64)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT id, rate_limit AS "rate_limit!", rate_window_ms FROM providers
         WHERE id = ANY($1) AND rate_limit IS NOT NULL"#,
        providers,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let window =
                std::time::Duration::from_millis(u64::try_from(row.rate_window_ms).unwrap_or(1000));
            let limit = u32::try_from(row.rate_limit).unwrap_or(1);
            (row.id, herald_shared::rate_limit::per_second(limit, window))
        })
        .collect())
}

/// Lines still free of each of `providers` that caps its live calls (calls placed and not
/// yet ended, fleet-wide).
pub async fn free_lines(
    pool: &PgPool,
    providers: &[Uuid],
) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT p.id, p.max_live_calls - (SELECT count(*) FROM recipients r
                                          WHERE r.live_until > now() AND r.sent_via = p.id)
                AS "free!"
         FROM providers p WHERE p.id = ANY($1) AND p.max_live_calls IS NOT NULL"#,
        providers,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.free)).collect())
}

/// One provider's monthly commitment, with this month's sends.
#[derive(Debug, Clone, Copy, PartialEq)]
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
    // A view: its columns' nullability is not known to the checker, the view's rows have
    // all four.
    sqlx::query_as!(
        CommitmentRow,
        r#"SELECT provider_id AS "provider_id!", monthly_commitment AS "monthly_commitment!",
                sent_this_month AS "sent_this_month!", month_elapsed AS "month_elapsed!"
         FROM provider_commitments"#,
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
    let rows = sqlx::query!(
        // Live: seen within the workers' six seconds (the worker's `fleet::LIVE_FOR`).
        r#"SELECT p.id, coalesce((SELECT min((w.caps ->> p.id::text)::int) FROM workers w
                                WHERE w.seen_at >= now() - interval '6 seconds'
                                  AND (w.caps ->> p.id::text)::int > 0),
                               0) AS "allowance!"
         FROM providers p WHERE p.id = ANY($1)"#,
        providers,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.allowance)).collect())
}

/// A provider as a worker loads it to send through it: its API, its credentials (sealed at
/// rest, as stored), its retry policy and its pace. The worker parses and opens it into its
/// typed configuration.
#[derive(Debug, Clone)]
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
    sqlx::query_as!(
        ProviderRow,
        r#"SELECT id, kind, endpoint, settings, credentials, timeout_ms,
                max_attempts, retry_base_ms, retry_max_ms, rate_limit, rate_window_ms,
                unknown_outcome, unknown_window_ms, live_call_timeout_ms, revision,
                tenant_id IS NOT NULL AS "restricted!"
         FROM providers WHERE id = $1"#,
        id,
    )
    .fetch_optional(pool)
    .await
}

/// The fleet-wide cap on requests in flight of every provider a worker consumes the lane
/// of: those in use, and retired ones while something unfinished still names them (a
/// campaign or message that checked the provider just before its retirement, lost answers
/// still settling). Retired ones with nothing left cost no worker a channel.
pub async fn in_flight_caps(pool: &PgPool) -> Result<Vec<(Uuid, i32)>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT p.id, p.max_in_flight FROM providers p
         WHERE p.retired_at IS NULL
            OR EXISTS (SELECT 1 FROM campaigns c
                       WHERE (c.provider_id = p.id OR c.overflow_provider_id = p.id)
                         AND c.status <> 'completed' AND c.settled_at IS NULL
                         AND herald_campaign_unfinished(c))"
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.max_in_flight)).collect())
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
    sqlx::query_scalar!(
        r#"SELECT herald_take_live_call($1, $2, $3, $4, $5) AS "taken!""#,
        recipient,
        seq,
        provider,
        tenant,
        hold_ms,
    )
    .fetch_one(pool)
    .await
}

/// A provider as the receiver reads it to check its receipts' signatures: its owner, API and
/// credentials (sealed at rest, as stored).
#[derive(Debug, Clone)]
pub struct WebhookRow {
    pub id: Uuid,
    /// `None`: an operator's provider.
    pub tenant_id: Option<Uuid>,
    pub kind: String,
    pub endpoint: String,
    pub settings: serde_json::Value,
    pub credentials: serde_json::Value,
    /// The credentials the last rotation replaced (sealed), while receipts signed with them
    /// are still taken; `None` after that.
    pub previous_credentials: Option<serde_json::Value>,
    pub previous_credentials_until: Option<DateTime<Utc>>,
}

/// [`WebhookRow`]s of the providers `$where` picks (the replaced credentials only while
/// their grace lasts).
macro_rules! query_webhook_row {
    ($where:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            WebhookRow,
            "SELECT id, tenant_id, kind, endpoint, settings, credentials,
                    CASE WHEN previous_credentials_until > now() THEN previous_credentials END
                        AS previous_credentials,
                    CASE WHEN previous_credentials_until > now()
                         THEN previous_credentials_until END AS previous_credentials_until
             FROM providers "
                + $where
            $(, $arg)*
        )
    };
}

/// Provider `id` as the receiver reads it, if it exists.
pub async fn webhook_row(pool: &PgPool, id: Uuid) -> Result<Option<WebhookRow>, sqlx::Error> {
    query_webhook_row!("WHERE id = $1", id)
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
    query_webhook_row!(
        "WHERE kind = 'whatsapp' AND settings->>'phone_number_id' = $1
           AND tenant_id IS NOT DISTINCT FROM $2",
        phone_number_id,
        tenant,
    )
    .fetch_all(pool)
    .await
}

// What the admin reads and writes of providers. A tenant's scope sees its own providers and
// the shared ones (`tenant_id IS NULL`), every statement below the same way:
// `($n::uuid IS NULL OR tenant_id = $n OR tenant_id IS NULL)`.

#[derive(Debug, Serialize, ToSchema)]
pub struct Provider {
    pub id: Uuid,
    /// `null`: an operator-owned provider every tenant may use.
    pub tenant_id: Option<Uuid>,
    pub name: String,
    pub kind: String,
    /// The whole URL for `http`; the API's base URL for the other kinds. `null` for a tenant
    /// looking at a shared provider: where the operator's providers live is not theirs to see.
    pub endpoint: Option<String>,
    /// Non-secret, per-kind settings (see API.md).
    #[schema(value_type = Object)]
    pub settings: Value,
    pub has_credentials: bool,
    pub timeout_ms: i32,
    /// Requests in flight to this provider at most, across the whole worker fleet.
    pub max_in_flight: i32,
    pub max_attempts: i32,
    pub retry_base_ms: i32,
    pub retry_max_ms: i32,
    /// Requests allowed per `rate_window_ms` across all workers; `null`: unlimited.
    pub rate_limit: Option<i32>,
    /// What one message costs through this provider (any currency); `null`: not given.
    pub cost_per_message: Option<f64>,
    pub rate_window_ms: i32,
    /// What a request whose answer never came leads to: `await_receipt` (wait
    /// `unknown_window_ms` for a receipt, then look the message up where the API can and
    /// retry; where it cannot, retry once receipts for later messages have come, fail after
    /// ten windows without, half an hour at least), `retry` (at once: only for a provider that honours the idempotency key) or
    /// `fail` (after the window).
    pub unknown_outcome: String,
    pub unknown_window_ms: i32,
    /// Calls live at once through this provider, fleet-wide; `null`: no cap.
    pub max_live_calls: Option<i32>,
    /// A call without a final status callback stops holding a line after this long.
    pub live_call_timeout_ms: i32,
    /// Where this provider's receipts go: set it as the provider's webhook (WhatsApp: the
    /// Meta app's callback URL); Twilio and generic providers are told per request.
    pub receipt_path: String,
    /// Messages a calendar month (UTC) agreed with this provider; `null`: none. Routing
    /// between a primary and its overflow prefers the one further behind its commitment.
    pub monthly_commitment: Option<i32>,
    /// Messages sent through this provider this calendar month (UTC); `null` for a shared
    /// provider seen with a tenant key (other tenants' volume is not its to see).
    pub sent_this_month: Option<i64>,
    /// What an even pace through the month asks of the commitment by now; `null`: no
    /// commitment.
    pub commitment_due_by_now: Option<i64>,
    /// Receipts signed with the credentials the last rotation replaced are taken until then
    /// (the rotation's `grace_seconds`); `null`: none are.
    pub previous_credentials_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// When it was retired (`DELETE /providers/{id}`): nothing new may name it; `null`: in
    /// use.
    pub retired_at: Option<DateTime<Utc>>,
}

/// `sqlx::query_as!` into [`Provider`]: the statement is `$before`, [`Provider`]'s columns,
/// then `$after`, so the columns are written once and every statement is still checked.
macro_rules! query_provider {
    ($before:literal, $after:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            Provider,
            $before
                + r#"id, tenant_id, name, kind, endpoint AS "endpoint?", settings,
                     credentials <> '{}'::jsonb AS "has_credentials!",
                     timeout_ms, max_in_flight, max_attempts, retry_base_ms, retry_max_ms,
                     rate_limit, rate_window_ms, cost_per_message::float8 AS cost_per_message,
                     unknown_outcome, unknown_window_ms, max_live_calls, live_call_timeout_ms,
                     '/webhooks/' || CASE kind WHEN 'http' THEN 'http' WHEN 'whatsapp' THEN 'whatsapp'
                                               ELSE 'twilio' END || '/' || id AS "receipt_path!",
                     monthly_commitment,
                     coalesce((SELECT sum(m.sent) FROM provider_month_sent m
                               WHERE m.provider_id = providers.id
                                 AND m.month = date_trunc('month', now() AT TIME ZONE 'UTC')::date),
                              0)::int8 AS "sent_this_month?",
                     (SELECT round(c.monthly_commitment * c.month_elapsed)::int8
                      FROM provider_commitments c
                      WHERE c.provider_id = providers.id) AS commitment_due_by_now,
                     CASE WHEN previous_credentials_until > now() THEN previous_credentials_until END
                         AS previous_credentials_until,
                     created_at, retired_at"#
                + $after
            $(, $arg)*
        )
    };
}

/// A new provider, validated by the caller, its credentials sealed for its `id`.
#[derive(Debug, Clone)]
pub struct NewProviderRow<'a> {
    pub id: Uuid,
    /// `None`: shared by every tenant.
    pub tenant_id: Option<Uuid>,
    pub name: &'a str,
    pub kind: &'a str,
    pub endpoint: Option<String>,
    pub settings: serde_json::Value,
    pub sealed_credentials: serde_json::Value,
    pub timeout_ms: i32,
    pub max_in_flight: i32,
    pub max_attempts: i32,
    pub retry_base_ms: i32,
    pub retry_max_ms: i32,
    pub rate_limit: Option<i32>,
    pub rate_window_ms: i32,
    pub cost_per_message: Option<f64>,
    pub unknown_outcome: &'a str,
    pub unknown_window_ms: i32,
    pub max_live_calls: Option<i32>,
    pub live_call_timeout_ms: i32,
    pub monthly_commitment: Option<i32>,
}

/// Creates a provider; a name already taken is the unique constraint's error.
/// Creates a provider, unless it is a tenant's and the tenant has `max` in use already
/// (`None`). Each provider in use is a lane every worker consumes (a channel and a consumer
/// on each worker's connection), so one tenant may not add them without bound. Counted
/// under a lock of the tenant's own, held to the commit, so that requests at once cannot
/// pass the bound together.
pub async fn create(
    pool: &PgPool,
    p: &NewProviderRow<'_>,
    max: i64,
) -> Result<Option<Provider>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if let Some(tenant) = p.tenant_id {
        sqlx::query!(
            "SELECT pg_advisory_xact_lock(hashtextextended('herald.providers.' || $1::text, 0))",
            tenant as _,
        )
        .execute(&mut *tx)
        .await?;
        let kept = sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM providers WHERE tenant_id = $1 AND retired_at IS NULL"#,
            tenant,
        )
        .fetch_one(&mut *tx)
        .await?;
        if kept >= max {
            return Ok(None);
        }
    }
    let provider = query_provider!(
        "INSERT INTO providers (tenant_id, name, kind, endpoint, settings, credentials, timeout_ms,
                                max_in_flight, max_attempts, retry_base_ms, retry_max_ms,
                                rate_limit, rate_window_ms, cost_per_message, unknown_outcome,
                                unknown_window_ms, max_live_calls, live_call_timeout_ms, id,
                                monthly_commitment)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::float8, $15, $16,
                 $17, $18, $19, $20)
         RETURNING ",
        "",
        p.tenant_id,
        p.name,
        p.kind,
        p.endpoint.as_deref(),
        &p.settings,
        &p.sealed_credentials,
        p.timeout_ms,
        p.max_in_flight,
        p.max_attempts,
        p.retry_base_ms,
        p.retry_max_ms,
        p.rate_limit,
        p.rate_window_ms,
        p.cost_per_message,
        p.unknown_outcome,
        p.unknown_window_ms,
        p.max_live_calls,
        p.live_call_timeout_ms,
        p.id,
        p.monthly_commitment,
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(provider))
}

/// The providers `scope` sees, by name; the retired ones too if `retired`.
pub async fn list(
    pool: &PgPool,
    scope: Scope,
    retired: bool,
) -> Result<Vec<Provider>, sqlx::Error> {
    query_provider!(
        "SELECT ",
        " FROM providers
         WHERE ($1::uuid IS NULL OR tenant_id = $1 OR tenant_id IS NULL)
           AND ($2 OR retired_at IS NULL)
         ORDER BY name",
        scope as _,
        retired,
    )
    .fetch_all(pool)
    .await
}

/// Provider `id`, if `scope` sees it.
pub async fn get(pool: &PgPool, scope: Scope, id: Uuid) -> Result<Option<Provider>, sqlx::Error> {
    query_provider!(
        "SELECT ",
        " FROM providers
         WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2 OR tenant_id IS NULL)",
        id,
        scope as _,
    )
    .fetch_optional(pool)
    .await
}

/// The owner of provider `id` (`Some(None)`: shared), if `scope` sees it.
pub async fn owner<'e>(
    db: impl sqlx::PgExecutor<'e>,
    scope: Scope,
    id: Uuid,
) -> Result<Option<Option<Uuid>>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT tenant_id FROM providers
         WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2 OR tenant_id IS NULL)",
        id,
        scope as _,
    )
    .fetch_optional(db)
    .await
}

/// Sets provider `id`'s monthly commitment (`None`: none).
pub async fn set_commitment(
    pool: &PgPool,
    id: Uuid,
    monthly_commitment: Option<i32>,
) -> Result<Provider, sqlx::Error> {
    query_provider!(
        "UPDATE providers SET monthly_commitment = $2 WHERE id = $1 RETURNING ",
        "",
        id,
        monthly_commitment,
    )
    .fetch_one(pool)
    .await
}

/// What checking new credentials needs of provider `id`: its owner, kind, endpoint and
/// settings; locked until the transaction ends, if `scope` sees it.
#[derive(Debug, Clone)]
pub struct ApiShape {
    pub tenant_id: Option<Uuid>,
    pub kind: String,
    pub endpoint: String,
    pub settings: serde_json::Value,
}

pub async fn lock_shape(
    tx: &mut PgConnection,
    scope: Scope,
    id: Uuid,
) -> Result<Option<ApiShape>, sqlx::Error> {
    sqlx::query_as!(
        ApiShape,
        "SELECT tenant_id, kind, endpoint, settings FROM providers
         WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2 OR tenant_id IS NULL)
         FOR UPDATE",
        id,
        scope as _,
    )
    .fetch_optional(tx)
    .await
}

/// Replaces provider `id`'s credentials (sealed) and bumps its revision, which tells the
/// workers their cached copy is stale. Receipts signed with the credentials replaced are
/// still taken for `grace_seconds` (none at 0: a leaked secret), those replaced before them
/// no longer; `None` keeps the ones replaced before as they are (the same credentials
/// again).
pub async fn replace_credentials(
    tx: &mut PgConnection,
    id: Uuid,
    sealed: &serde_json::Value,
    grace_seconds: Option<i32>,
) -> Result<Provider, sqlx::Error> {
    // None replaced when there were none (`{}`).
    query_provider!(
        "UPDATE providers SET credentials = $2, revision = revision + 1,
                previous_credentials =
                    CASE WHEN $3::int4 IS NULL THEN previous_credentials
                         WHEN $3 > 0 AND credentials <> '{}'::jsonb THEN credentials END,
                previous_credentials_until =
                    CASE WHEN $3::int4 IS NULL THEN previous_credentials_until
                         WHEN $3 > 0 AND credentials <> '{}'::jsonb
                         THEN now() + make_interval(secs => $3) END
         WHERE id = $1 RETURNING ",
        "",
        id,
        sealed,
        grace_seconds,
    )
    .fetch_one(tx)
    .await
}

/// A provider a tenant may name (its own, or an operator's shared one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usable {
    pub kind: String,
    /// Retired: nothing new may name it.
    pub retired: bool,
}

/// `provider` if `tenant` may name it; `None` if it may not, or there is no such provider.
pub async fn usable_by(
    pool: &PgPool,
    provider: Uuid,
    tenant: Uuid,
) -> Result<Option<Usable>, sqlx::Error> {
    sqlx::query_as!(
        Usable,
        r#"SELECT kind, retired_at IS NOT NULL AS "retired!" FROM providers
           WHERE id = $1 AND (tenant_id = $2 OR tenant_id IS NULL)"#,
        provider,
        tenant,
    )
    .fetch_optional(pool)
    .await
}

/// What retiring a provider did.
#[derive(Debug)]
pub enum Retired {
    /// Retired now, or before.
    Done(Box<Provider>),
    /// Still named by what is not finished: the first such use found, in words.
    InUse(String),
    /// No such provider that the scope sees.
    NotFound,
    /// A shared provider, and the scope a tenant's.
    Shared,
}

/// Retires provider `id`, if nothing unfinished names it ([`first_unfinished_use`]).
pub async fn retire(pool: &PgPool, scope: Scope, id: Uuid) -> Result<Retired, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // A tenant's key is refused a shared provider before any lock is taken.
    match owner(&mut *tx, scope, id).await? {
        None => return Ok(Retired::NotFound),
        Some(None) if scope.tenant().is_some() => return Ok(Retired::Shared),
        Some(_) => {}
    }
    // The row lock first, then the checks in statements of their own: each reads what was
    // committed when it began, so a campaign or message that named the provider and was
    // committed before the lock was granted is seen. A default set meanwhile waits for this
    // lock and then finds the provider retired (`tenants::set_default_provider`); a campaign
    // or message that checked the provider just before and commits after is still sent, as
    // the provider is kept.
    let retired = sqlx::query_scalar!(
        r#"SELECT retired_at IS NOT NULL AS "retired!" FROM providers WHERE id = $1 FOR UPDATE"#,
        id,
    )
    .fetch_one(&mut *tx)
    .await?;
    // Retired before: the same answer, whatever names it since (a campaign or message that
    // checked it just before).
    if !retired && let Some(by) = first_unfinished_use(&mut tx, id).await? {
        return Ok(Retired::InUse(by));
    }
    let provider = query_provider!(
        "UPDATE providers SET retired_at = coalesce(retired_at, now()) WHERE id = $1 RETURNING ",
        "",
        id,
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Retired::Done(Box::new(provider)))
}

/// The first unfinished thing that names provider `id`, in words: a tenant's default, a
/// campaign not completed (or cancelled with recipients still settling), a stream with
/// messages not yet final.
async fn first_unfinished_use(
    tx: &mut PgConnection,
    id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    let default = sqlx::query_scalar!(
        r#"SELECT 'the default ' || channel || ' provider of tenant ' || tenant_id AS "use!"
           FROM tenant_default_providers
           WHERE provider_id = $1 OR overflow_provider_id = $1
           ORDER BY tenant_id, channel LIMIT 1"#,
        id,
    )
    .fetch_optional(&mut *tx)
    .await?;
    if default.is_some() {
        return Ok(default);
    }
    sqlx::query_scalar!(
        r#"SELECT CASE WHEN c.kind = 'messages'
                       THEN 'transactional messages of tenant ' || c.tenant_id || ' not yet final'
                       ELSE 'campaign ' || c.id || ' (' || c.status || ')' END AS "use!"
           FROM campaigns c
           WHERE (c.provider_id = $1 OR c.overflow_provider_id = $1)
             -- The partial indexes' predicate (the function is false outside it).
             AND c.status <> 'completed' AND c.settled_at IS NULL
             AND herald_campaign_unfinished(c)
           ORDER BY c.created_at LIMIT 1"#,
        id,
    )
    .fetch_optional(&mut *tx)
    .await
}

/// Every provider's id, in order (what resealing the credentials walks).
pub async fn ids(pool: &PgPool) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!("SELECT id FROM providers ORDER BY id",)
        .fetch_all(pool)
        .await
}

/// A provider's stored (sealed) credentials: the ones in use, and the ones its last rotation
/// replaced while their receipts are still taken.
#[derive(Debug, Clone)]
pub struct StoredCredentials {
    pub credentials: serde_json::Value,
    /// `None` once their grace is over.
    pub previous_credentials: Option<serde_json::Value>,
    /// Replaced credentials whose grace is over are still stored (to be dropped).
    pub expired_previous: bool,
}

/// Provider `id`'s stored credentials, locked until the caller's transaction ends.
pub async fn lock_credentials(
    tx: &mut PgConnection,
    id: Uuid,
) -> Result<Option<StoredCredentials>, sqlx::Error> {
    sqlx::query_as!(
        StoredCredentials,
        r#"SELECT credentials,
                  CASE WHEN previous_credentials_until > now() THEN previous_credentials END
                      AS previous_credentials,
                  coalesce(previous_credentials_until <= now(), false) AS "expired_previous!"
           FROM providers WHERE id = $1 FOR UPDATE"#,
        id,
    )
    .fetch_optional(tx)
    .await
}

/// Stores provider `id`'s credentials sealed anew (under the current key). They are the
/// same credentials, so the revision stays: the workers' opened copies are still right.
/// The replaced ones keep their time; `None` drops them.
pub async fn reseal_credentials(
    tx: &mut PgConnection,
    id: Uuid,
    sealed: &StoredCredentials,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE providers SET credentials = $2, previous_credentials = $3,
                previous_credentials_until = CASE WHEN $3::jsonb IS NOT NULL
                                                  THEN previous_credentials_until END
         WHERE id = $1",
        id,
        sealed.credentials,
        sealed.previous_credentials,
    )
    .execute(tx)
    .await?;
    Ok(())
}
