//! Campaigns: create, read, the start / pause / resume / cancel actions, progress and errors.
//!
//! Status changes are single conditional UPDATEs (`WHERE status IN (…)`), so two operators
//! racing on the same campaign cannot both win; the scheduler and the workers read the new
//! status at their next statement (pause takes effect within a tick: the scheduler stops
//! releasing and the workers hand back whatever is still in the queue).

use super::QueryParams;
use super::page::{self, Page};
use super::{JsonBody, OptionalJsonBody};
use crate::auth::Caller;
use crate::error::{ApiError, FieldError, from_constraint};
use crate::idempotency;
use crate::state::AppState;
use crate::{limits, validate};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Datelike, NaiveTime, Utc};
use herald_shared::domain::CampaignStatus;
use herald_shared::template;
use herald_store as store;
use herald_store::campaigns::{ErrorCount, Transition};
use herald_store::segments::filter::Filter;
use herald_store::tenants::Scope;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

#[derive(Debug, Serialize, Deserialize, ToSchema, Clone, PartialEq, Eq)]
// A misspelt `timezone` would otherwise keep the window in the tenant's zone.
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// Local time the window opens, `HH:MM`.
    #[schema(schema_with = crate::api::openapi::rules::clock_time)]
    pub start: String,
    /// Local time it closes, `HH:MM` (before `start`: the window spans midnight; not equal
    /// to `start`).
    #[schema(schema_with = crate::api::openapi::rules::clock_time)]
    pub end: String,
    /// IANA zone PostgreSQL knows; defaults to the tenant's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Progress {
    #[schema(schema_with = crate::api::openapi::rules::campaign_status)]
    pub status: String,
    /// Why Herald paused the campaign itself: its provider refused the account (credentials,
    /// sender). Fix the provider (say, rotate its credentials) and resume. `null` otherwise.
    pub pause_reason: Option<String>,
    pub total: i64,
    pub pending: i64,
    pub queued: i64,
    pub sending: i64,
    /// Requests whose answer never came: waiting for a receipt (or the provider's window)
    /// before anything is sent again.
    pub unknown: i64,
    pub sent: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub expired: i64,
    /// Calls placed and not yet ended (voice campaigns).
    pub live_calls: i64,
    /// What the providers' receipts say of the sends.
    pub delivery: Delivery,
    /// Sends per second over the last 10 seconds.
    pub send_rate: f64,
    pub eta_seconds: Option<f64>,
    pub time_to_first_send_ms: Option<i64>,
    pub started_at: Option<DateTime<Utc>>,
    pub first_sent_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Campaign {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// The tenant's name, so that an operator's listing reads without a lookup.
    pub tenant_name: String,
    pub name: String,
    pub provider_id: Uuid,
    /// Takes what the primary provider cannot (at its rate limit, or while it is failing).
    pub overflow_provider_id: Option<Uuid>,
    #[schema(schema_with = crate::api::openapi::rules::channel)]
    pub channel: String,
    pub template: String,
    #[schema(schema_with = crate::api::openapi::rules::campaign_status)]
    pub status: String,
    pub batch_size: i32,
    pub weight: i32,
    pub start_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub quiet_hours: Option<QuietHours>,
    pub segment_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub progress: Progress,
    /// Sends and their cost per provider that sent them.
    pub by_provider: Vec<ProviderSends>,
}

/// A campaign's sends through one provider.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderSends {
    pub provider_id: Uuid,
    pub provider: String,
    pub sent: i64,
    /// `sent × cost_per_message`; `null` when the provider has no cost.
    pub cost: Option<f64>,
    /// What this provider's receipts say of its sends.
    pub delivery: Delivery,
}

/// What receipts say of a set of sends, by each recipient's latest status.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Delivery {
    /// Recipients by latest status (`delivered`, `read`, `undelivered`, `failed`, `sent`,
    /// the call statuses `completed`, `busy`, `no-answer`, …).
    pub statuses: std::collections::BTreeMap<String, i64>,
    /// Reached the recipient: delivered or read (a call: completed).
    pub delivered: i64,
    /// Of those, read.
    pub read: i64,
    /// Taken by the provider but not delivered (a call: busy, no answer, canceled).
    pub undelivered: i64,
    /// Taken by the provider, then reported failed.
    pub failed: i64,
    /// `delivered / sent`; `null` before the first send.
    pub delivered_rate: Option<f64>,
    /// `read / sent`.
    pub read_rate: Option<f64>,
}

impl From<herald_store::progress::DeliverySummary> for Delivery {
    fn from(s: herald_store::progress::DeliverySummary) -> Self {
        Self {
            statuses: s.statuses,
            delivered: s.delivered,
            read: s.read,
            undelivered: s.undelivered,
            failed: s.failed,
            delivered_rate: s.delivered_rate,
            read_rate: s.read_rate,
        }
    }
}

/// Fills in each campaign's sends per provider, and what the receipts say, overall and per
/// provider.
async fn with_sends(
    pool: &PgPool,
    mut campaigns: Vec<Campaign>,
) -> Result<Vec<Campaign>, ApiError> {
    use herald_store::progress::DeliverySummary;
    let ids: Vec<Uuid> = campaigns.iter().map(|c| c.id).collect();
    let mut sends = herald_store::progress::provider_sends(pool, &ids).await?;
    let deliveries = herald_store::progress::delivery_counts(pool, &ids).await?;
    for campaign in &mut campaigns {
        let counts = || deliveries.iter().filter(|d| d.campaign_id == campaign.id);
        campaign.progress.delivery = DeliverySummary::of(
            counts().map(|d| (d.status.as_str(), d.n)),
            campaign.progress.sent,
        )
        .into();
        campaign.by_provider = sends
            .extract_if(.., |s| s.campaign_id == campaign.id)
            .map(|s| ProviderSends {
                delivery: DeliverySummary::of(
                    counts()
                        .filter(|d| d.provider_id == s.provider_id)
                        .map(|d| (d.status.as_str(), d.n)),
                    s.sent,
                )
                .into(),
                provider_id: s.provider_id,
                provider: s.provider,
                sent: s.sent,
                cost: s.cost,
            })
            .collect();
    }
    Ok(campaigns)
}

impl From<store::campaigns::Listed> for Campaign {
    fn from(r: store::campaigns::Listed) -> Self {
        let k = r.counts;
        let progress = Progress {
            status: r.status.clone(),
            pause_reason: r.pause_reason,
            eta_seconds: if r.status == "running" {
                k.eta_seconds()
            } else {
                None
            },
            time_to_first_send_ms: k.time_to_first_send().map(|d| d.num_milliseconds()),
            total: k.total,
            pending: k.pending,
            queued: k.queued,
            sending: k.sending,
            unknown: k.unknown,
            sent: k.sent,
            failed: k.failed,
            cancelled: k.cancelled,
            expired: k.expired,
            live_calls: k.live_calls,
            delivery: Delivery::default(),
            send_rate: k.send_rate,
            started_at: k.started_at,
            first_sent_at: k.first_sent_at,
            completed_at: k.completed_at,
        };
        let quiet_hours = match (r.quiet_start, r.quiet_end) {
            (Some(start), Some(end)) => Some(QuietHours {
                start: start.format("%H:%M").to_string(),
                end: end.format("%H:%M").to_string(),
                time_zone: Some(r.time_zone),
            }),
            _ => None,
        };
        Campaign {
            id: r.id,
            tenant_id: r.tenant_id,
            tenant_name: r.tenant_name,
            name: r.name,
            provider_id: r.provider_id,
            overflow_provider_id: r.overflow_provider_id,
            channel: r.channel,
            template: r.template,
            status: r.status,
            batch_size: r.batch_size,
            weight: r.weight,
            start_at: r.start_at,
            expires_at: r.expires_at,
            quiet_hours,
            segment_id: r.segment_id,
            created_at: r.created_at,
            progress,
            by_provider: Vec::new(),
        }
    }
}

async fn fetch_one(pool: &PgPool, scope: Scope, id: Uuid) -> Result<Campaign, ApiError> {
    let campaign = store::campaigns::listed(pool, scope, id)
        .await?
        .map(Campaign::from)
        .ok_or(ApiError::NotFound("campaign"))?;
    let mut campaigns = with_sends(pool, vec![campaign]).await?;
    campaigns.pop().ok_or(ApiError::NotFound("campaign"))
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCampaign {
    /// Operators only (required for them); ignored for tenant keys.
    pub tenant_id: Option<Uuid>,
    #[schema(schema_with = crate::api::openapi::rules::name)]
    pub name: String,
    /// A provider the tenant may use: its own or a shared one.
    pub provider_id: Uuid,
    /// Optional second provider (not `provider_id`): it takes only what `provider_id` cannot
    /// (its rate limit reached, or its circuit breaker open), never because of a single 429.
    pub overflow_provider_id: Option<Uuid>,
    #[schema(schema_with = crate::api::openapi::rules::channel)]
    pub channel: String,
    /// Message text with `{{variable}}` placeholders filled per recipient (not blank; past
    /// the length limit: 413).
    #[schema(schema_with = crate::api::openapi::rules::template)]
    pub template: String,
    /// The most recipients one scheduler pass gives the campaign: how finely its sends are
    /// interleaved with others', not a rate (its lane is topped up again as soon as workers
    /// empty it).
    #[serde(default = "default_batch_size")]
    #[schema(minimum = 1, maximum = 100000, default = 1000)]
    pub batch_size: i32,
    #[serde(default = "one")]
    #[schema(minimum = 1, maximum = 1000, default = 1)]
    pub weight: i32,
    /// Not before it is started (default: at once).
    pub start_at: Option<DateTime<Utc>>,
    /// In the future, and after `start_at`.
    pub expires_at: Option<DateTime<Utc>>,
    pub quiet_hours: Option<QuietHours>,
    pub segment_id: Option<Uuid>,
}

fn default_batch_size() -> i32 {
    1_000
}

fn one() -> i32 {
    1
}

#[utoipa::path(post, path = "/campaigns", tag = "campaigns", request_body = NewCampaign,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[ -~]+$",
            description = "Seen with this tenant's create in the last 24 hours: that request's campaign is answered (as it is now) and no other is made; with another request: 422.")),
    responses((status = 201, body = Campaign,
                headers(("Idempotent-Replayed" = String, description = "`true` when the key was seen before"))),
              (status = 409, description = "The key's day ended as this request came: send it again", body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<NewCampaign>,
) -> Result<Response, ApiError> {
    let key = idempotency::from_header(&headers)?;
    let tenant = caller.owning_tenant(body.tenant_id)?;
    let pool = &state.pool;
    let hash = idempotency::request_hash(tenant, &body);
    // A replay answers the first request's campaign, checked then, whatever today's checks
    // would say (its provider since retired, say).
    if let Some(key) = &key
        && let Some(campaign) = replay(pool, caller, tenant, key, &hash).await?
    {
        return Ok(campaign);
    }
    let tenant_zone = store::tenants::time_zone(pool, tenant).await?;
    let Some(tenant_zone) = tenant_zone else {
        return Err(ApiError::field("tenant_id", "no such tenant"));
    };

    if body.template.chars().count() > limits::MAX_TEMPLATE_CHARS {
        return Err(ApiError::TooLarge(format!(
            "`template` is longer than {} characters",
            limits::MAX_TEMPLATE_CHARS
        )));
    }
    let mut fields = Vec::new();
    let mut bad = |field: &str, reason: String| {
        fields.push(FieldError {
            field: field.to_owned(),
            reason,
        })
    };
    for (field, at) in [("start_at", body.start_at), ("expires_at", body.expires_at)] {
        if let Some(Err(reason)) = at.map(validate::timestamp) {
            bad(field, reason);
        }
    }
    if let Err(reason) = validate::name(&body.name) {
        bad("name", reason);
    }
    let channel = validate::channel(&body.channel)
        .map_err(|reason| bad("channel", reason))
        .ok();
    if body.template.trim().is_empty() {
        bad("template", "must not be empty".into());
    } else if let Err(error) = template::variables(&body.template) {
        bad("template", error.to_string());
    }
    if !(1..=100_000).contains(&body.batch_size) {
        bad("batch_size", "must be between 1 and 100000".into());
    }
    if !(1..=1000).contains(&body.weight) {
        bad("weight", "must be between 1 and 1000".into());
    }
    if let Some(expires) = body.expires_at {
        if expires <= Utc::now() {
            bad("expires_at", "must be in the future".into());
        } else if body.start_at.is_some_and(|start| start >= expires) {
            bad("expires_at", "must be after start_at".into());
        }
    }
    let mut quiet: Option<(NaiveTime, NaiveTime)> = None;
    let mut zone = tenant_zone;
    if let Some(q) = &body.quiet_hours {
        match quiet_window(q) {
            Ok(window) => quiet = Some(window),
            Err(problems) => {
                for (field, reason) in problems {
                    bad(field, reason);
                }
            }
        }
        if let Some(z) = &q.time_zone {
            zone = z.clone();
        }
    }
    if !store::tenants::known_time_zone(pool, &zone).await? {
        bad(
            "quiet_hours.time_zone",
            format!("`{}` is not an IANA time zone", validate::clip(&zone)),
        );
    }
    if let Some(reason) =
        super::provider_fit::misfit(pool, body.provider_id, tenant, channel).await?
    {
        bad("provider_id", reason);
    }
    if let Some(overflow) = body.overflow_provider_id {
        if overflow == body.provider_id {
            bad(
                "overflow_provider_id",
                "must differ from provider_id".into(),
            );
        } else if let Some(reason) =
            super::provider_fit::misfit(pool, overflow, tenant, channel).await?
        {
            bad("overflow_provider_id", reason);
        }
    }
    if let Some(segment) = body.segment_id
        && !store::segments::owned_by(pool, segment, tenant).await?
    {
        bad("segment_id", "no such segment".into());
    }
    if !fields.is_empty() {
        return Err(ApiError::fields("campaign", fields));
    }

    let row = store::campaigns::NewCampaignRow {
        tenant_id: tenant,
        provider_id: body.provider_id,
        overflow_provider_id: body.overflow_provider_id,
        name: body.name.trim(),
        channel: &body.channel,
        template: &body.template,
        batch_size: body.batch_size,
        weight: body.weight,
        start_at: body.start_at,
        expires_at: body.expires_at,
        quiet,
        time_zone: &zone,
        segment_id: body.segment_id,
        idempotency: key.as_deref().map(|key| (key, hash.as_slice())),
    };
    let id = match store::campaigns::create(pool, &row).await {
        Ok(id) => id,
        // The same key's first request committed since this one looked: its campaign.
        Err(sqlx::Error::Database(db))
            if db.constraint() == Some(store::campaigns::IDEMPOTENCY_KEY) =>
        {
            let replayed = match &key {
                Some(key) => replay(pool, caller, tenant, key, &hash).await?,
                None => None,
            };
            return replayed.ok_or_else(|| {
                ApiError::Conflict(
                    "the idempotency key was released as this request came: send it again".into(),
                )
            });
        }
        Err(error) => return Err(from_constraint(error, "campaign")),
    };
    tracing::info!(campaign_id = %id, tenant_id = %tenant, "campaign created");
    Ok((
        StatusCode::CREATED,
        Json(fetch_one(pool, caller.scope(), id).await?),
    )
        .into_response())
}

/// The answer to a create under idempotency key `key` that tenant `tenant` used in the last
/// 24 hours: its campaign, marked replayed, if the request is the same (`hash`); refused
/// naming the key if it is another. `None` if the key is not held.
async fn replay(
    pool: &PgPool,
    caller: Caller,
    tenant: Uuid,
    key: &str,
    hash: &[u8],
) -> Result<Option<Response>, ApiError> {
    let Some((id, held_hash)) = store::campaigns::held_key(pool, tenant, key).await? else {
        return Ok(None);
    };
    if held_hash != hash {
        return Err(ApiError::field(
            "Idempotency-Key",
            "was used in the last 24 hours with another request",
        ));
    }
    let mut response = (
        StatusCode::CREATED,
        Json(fetch_one(pool, caller.scope(), id).await?),
    )
        .into_response();
    response
        .headers_mut()
        .insert(idempotency::REPLAYED, HeaderValue::from_static("true"));
    Ok(Some(response))
}

/// A daily quiet window's opening and closing times, or what is wrong with them, by field.
pub(crate) fn quiet_window(
    q: &QuietHours,
) -> Result<(NaiveTime, NaiveTime), Vec<(&'static str, String)>> {
    match (validate::clock_time(&q.start), validate::clock_time(&q.end)) {
        (Ok(start), Ok(end)) if start == end => Err(vec![(
            "quiet_hours.end",
            "must differ from quiet_hours.start".into(),
        )]),
        (Ok(start), Ok(end)) => Ok((start, end)),
        (start, end) => Err([("quiet_hours.start", start), ("quiet_hours.end", end)]
            .into_iter()
            .filter_map(|(field, result)| result.err().map(|reason| (field, reason)))
            .collect()),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
// Read by `QueryParams`, which utoipa cannot place as it places axum's `Query`.
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only campaigns in this status.
    #[param(schema_with = crate::api::openapi::rules::campaign_status)]
    pub status: Option<String>,
    /// Only this tenant's campaigns (a tenant key sees only its own anyway).
    pub tenant_id: Option<Uuid>,
    /// Only campaigns whose name contains this text (case-insensitive).
    pub name: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// At most this many (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// Newest first; the id breaks ties between campaigns created in the same microsecond.
type CampaignKey = (DateTime<Utc>, Uuid);

#[utoipa::path(get, path = "/campaigns", tag = "campaigns", params(ListQuery),
    responses((status = 200, body = Page<Campaign>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<Page<Campaign>>, ApiError> {
    if let Some(status) = &query.status
        && status.parse::<CampaignStatus>().is_err()
    {
        return Err(ApiError::field(
            "status",
            format!("unknown status `{}`", validate::clip(status)),
        ));
    }
    let limit = page::limit(query.limit)?;
    let after: Option<CampaignKey> = page::decode(query.cursor.as_deref())?;
    // A time chrono reads but PostgreSQL cannot store is refused here, naming the cursor.
    if after.is_some_and(|(at, _)| !(1..=9999).contains(&at.year())) {
        return Err(page::forged());
    }
    let filter = store::campaigns::ListFilter {
        status: query.status.as_deref(),
        tenant: query.tenant_id,
        name: query
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty()),
        after,
        limit: page::fetch_limit(limit),
    };
    let rows = store::campaigns::list(&state.pool, caller.scope(), &filter).await?;
    let mut page = Page::of(rows.into_iter().map(Campaign::from).collect(), limit, |c| {
        (c.created_at, c.id)
    });
    page.items = with_sends(&state.pool, page.items).await?;
    Ok(Json(page))
}

#[utoipa::path(get, path = "/campaigns/{id}", tag = "campaigns",
    responses((status = 200, body = Campaign), (status = 404, body = crate::error::ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Campaign>, ApiError> {
    Ok(Json(fetch_one(&state.pool, caller.scope(), id).await?))
}

#[utoipa::path(get, path = "/campaigns/{id}/progress", tag = "campaigns",
    responses((status = 200, body = Progress), (status = 404, body = crate::error::ErrorBody)))]
pub async fn progress(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Progress>, ApiError> {
    Ok(Json(
        fetch_one(&state.pool, caller.scope(), id).await?.progress,
    ))
}

#[utoipa::path(get, path = "/campaigns/{id}/errors", tag = "campaigns",
    responses((status = 200, body = Vec<ErrorCount>), (status = 404, body = crate::error::ErrorBody)))]
pub async fn errors(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Vec<ErrorCount>>, ApiError> {
    ensure_visible(&state.pool, caller, id).await?;
    Ok(Json(
        store::campaigns::failure_reasons(&state.pool, id).await?,
    ))
}

/// 404 unless the campaign exists and the caller may see it.
pub async fn ensure_visible(pool: &PgPool, caller: Caller, id: Uuid) -> Result<(), ApiError> {
    if store::campaigns::visible(pool, caller.scope(), id).await? {
        Ok(())
    } else {
        Err(ApiError::NotFound("campaign"))
    }
}

/// Runs a conditional status change; a campaign in another status is a 409 naming it.
async fn transition(
    pool: &PgPool,
    caller: Caller,
    id: Uuid,
    action: &str,
    change: Transition,
) -> Result<Json<Campaign>, ApiError> {
    ensure_visible(pool, caller, id).await?;
    match store::campaigns::transition(pool, id, change).await? {
        None => tracing::info!(campaign_id = %id, action, "campaign status changed"),
        // Answered as the first time was: a retry must not read as a failure.
        Some(status) if change.reached(&status) => {
            tracing::debug!(campaign_id = %id, action, %status, "campaign status already so");
        }
        Some(status) => {
            return Err(ApiError::Conflict(format!(
                "cannot {action} a campaign that is {status}"
            )));
        }
    }
    Ok(Json(fetch_one(pool, caller.scope(), id).await?))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// When to start (default: the campaign's `start_at`, or now).
    pub start_at: Option<DateTime<Utc>>,
}

#[utoipa::path(post, path = "/campaigns/{id}/start", tag = "campaigns", request_body(content = StartRequest, description = "optional"),
    responses((status = 200, body = Campaign), (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    // Optional: `start` alone means "now, or at the campaign's start_at".
    OptionalJsonBody(request): OptionalJsonBody<StartRequest>,
) -> Result<Json<Campaign>, ApiError> {
    let pool = &state.pool;
    ensure_visible(pool, caller, id).await?;
    let mut tx = pool.begin().await?;
    let store::campaigns::Startable {
        status,
        tenant_id: tenant,
        template: template_text,
        segment_id: segment,
        expires_at,
    } = store::campaigns::lock_for_start(&mut tx, id).await?;
    if status != "draft" {
        return Err(ApiError::Conflict(format!(
            "cannot start a campaign that is {status}"
        )));
    }
    if expires_at.is_some_and(|e| e <= Utc::now()) {
        return Err(ApiError::field(
            "expires_at",
            "the campaign has already expired",
        ));
    }
    if let Some(start) = request.start_at {
        validate::timestamp(start).map_err(|reason| ApiError::field("start_at", reason))?;
        if expires_at.is_some_and(|expires| start >= expires) {
            return Err(ApiError::field(
                "start_at",
                "must be before the campaign's expires_at",
            ));
        }
    }
    // A look first without the lock, so that a tenant at its bound is refused before a
    // segment's audience is written (it is counted again, under the lock, last).
    too_many_active(
        store::campaigns::active_campaigns(&mut tx, tenant).await?,
        state.max_active_campaigns,
    )?;
    if let Some(segment) = segment {
        materialize_segment(&mut tx, id, tenant, segment, &template_text).await?;
    }
    if !store::campaigns::has_recipients(&mut tx, id).await? {
        return Err(ApiError::field(
            "recipients",
            "the campaign has no recipients: upload some or give it a segment that matches contacts",
        ));
    }
    // Counted last, under the tenant's start lock held to the commit: a big segment's
    // audience written above holds up none of the tenant's other starts.
    let active = store::campaigns::lock_starts(&mut tx, tenant).await?;
    too_many_active(active, state.max_active_campaigns)?;
    store::campaigns::schedule(&mut tx, id, request.start_at).await?;
    tx.commit().await?;
    tracing::info!(campaign_id = %id, tenant_id = %tenant, "campaign scheduled to start");
    Ok(Json(fetch_one(pool, caller.scope(), id).await?))
}

/// The refusal of a start when the tenant already has `active` campaigns scheduled, running
/// or paused, `max` or more.
fn too_many_active(active: i64, max: i64) -> Result<(), ApiError> {
    if active >= max {
        return Err(ApiError::Conflict(format!(
            "the tenant has {active} campaigns scheduled, running or paused, the most it may \
             have at once (HERALD_ADMIN_MAX_ACTIVE_CAMPAIGNS_PER_TENANT): start this one once \
             one of them ends"
        )));
    }
    Ok(())
}

/// Copies the segment's matching contacts into the campaign's recipients (inside the start
/// transaction). Every matching contact must have every variable the template uses.
async fn materialize_segment(
    tx: &mut sqlx::PgConnection,
    campaign: Uuid,
    tenant: Uuid,
    segment: Uuid,
    template_text: &str,
) -> Result<(), ApiError> {
    let filter_text = store::segments::filter_text(&mut *tx, segment).await?;
    // Checked and copied from one state of the contacts: an upload of the tenant's waits.
    store::contacts::hold_still(&mut *tx, tenant).await?;
    let filter = Filter::parse(&filter_text)
        .map_err(|e| ApiError::field("segment_id", format!("the segment's filter: {e}")))?;
    let needed = template::variables(template_text)
        .map_err(|e| ApiError::field("template", e.to_string()))?;
    let lacking = store::segments::lacking(&mut *tx, tenant, &filter, &needed).await?;
    if !lacking.is_empty() {
        return Err(ApiError::field(
            "template",
            format!(
                "contacts of the segment lack (or leave blank) a variable the template uses ({}), e.g. {}",
                needed.join(", "),
                lacking.join(", ")
            ),
        ));
    }
    // As an upload refuses a row whose text would be too long for any provider, rather than
    // leave it to fail when the scheduler renders it.
    let (fixed, uses) =
        template::shape(template_text).map_err(|e| ApiError::field("template", e.to_string()))?;
    let too_long = store::segments::too_long(
        &mut *tx,
        tenant,
        &filter,
        fixed,
        &uses,
        template::MAX_TEXT_CHARS,
    )
    .await?;
    if !too_long.is_empty() {
        return Err(ApiError::field(
            "template",
            format!(
                "the text would be longer than {} characters once rendered for contacts of the segment, e.g. {}",
                template::MAX_TEXT_CHARS,
                too_long.join(", ")
            ),
        ));
    }
    let inserted = store::segments::materialize(&mut *tx, campaign, tenant, &filter).await?;
    tracing::info!(campaign_id = %campaign, %segment, inserted, "segment materialized");
    Ok(())
}

#[utoipa::path(post, path = "/campaigns/{id}/pause", tag = "campaigns",
    responses((status = 200, body = Campaign), (status = 409, body = crate::error::ErrorBody)))]
pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Campaign>, ApiError> {
    transition(&state.pool, caller, id, "pause", Transition::Pause).await
}

#[utoipa::path(post, path = "/campaigns/{id}/resume", tag = "campaigns",
    responses((status = 200, body = Campaign), (status = 409, body = crate::error::ErrorBody)))]
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Campaign>, ApiError> {
    transition(&state.pool, caller, id, "resume", Transition::Resume).await
}

#[utoipa::path(post, path = "/campaigns/{id}/cancel", tag = "campaigns",
    responses((status = 200, body = Campaign), (status = 409, body = crate::error::ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Campaign>, ApiError> {
    transition(&state.pool, caller, id, "cancel", Transition::Cancel).await
}
