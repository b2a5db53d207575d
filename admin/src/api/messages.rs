//! Transactional messages: single messages (or batches of up to 1,000) that a tenant's own
//! services send, through the pipeline campaigns use.
//!
//! Each message becomes a recipient of its tenant's *stream* for its provider, channel,
//! overflow provider and quiet hours: a hidden campaign of kind `messages` that is always running
//! (`kind = 'messages'` in the schema). So one claim, one lease, one set of rate limits, caps, breakers and
//! receipts serve campaigns and messages alike, and the scheduler's fair plan serves a
//! tenant's stream before that tenant's campaigns, within the tenant's share only.
//!
//! A message is answered `202` only once it is committed; the commit wakes the scheduler,
//! which dispatches it at once rather than at its next tick (`herald_shared::wake`). An
//! `Idempotency-Key` (or a batch item's `idempotency_key`) seen in the last 24 hours, or
//! later while its message is not finished, returns the first request's message and sends
//! nothing; the same key with another request is refused (422). A tenant may have
//! at most `max_queued_messages` messages accepted and not yet finished, and at most
//! `max_messages_per_day` (if the operator set one) a day; past either the answer is 429 with
//! `Retry-After`.

use super::JsonBody;
use super::QueryParams;
use super::campaigns::QuietHours;
use super::page::{self, Page};
use crate::auth::Caller;
use crate::error::{ApiError, FieldError};
use crate::idempotency::{self, valid_key};
use crate::state::AppState;
use crate::{limits, phone, validate};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Datelike, NaiveTime, SubsecRound, Utc};
use herald_shared::domain::{Channel, RecipientState};
use herald_shared::template;
use herald_store::messages::{self, MessageReceipt, MessageRows, Stream, StreamKey};
use herald_store::tenants::Scope;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// Most messages one batch request may carry.
pub const MAX_BATCH: usize = 1_000;

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    /// Operators only (required for them); ignored for tenant keys.
    pub tenant_id: Option<Uuid>,
    /// The recipient's phone number (E.164, or national with the tenant's `default_region`).
    pub to: String,
    #[schema(schema_with = crate::api::openapi::rules::channel)]
    pub channel: String,
    /// A provider the tenant may use: its own or a shared one. Omit to use the tenant's
    /// default provider for the channel (`PUT /tenants/{id}/default-providers/{channel}`).
    pub provider_id: Option<Uuid>,
    /// Optional second provider (not `provider_id`), used only when `provider_id` has no
    /// room (or is behind on its commitment). Omitted with `provider_id`: the default's.
    pub overflow_provider_id: Option<Uuid>,
    /// The message as sent. Give either `text`, or `template` with `variables`.
    #[schema(max_length = 4096)]
    pub text: Option<String>,
    /// `{{variable}}` placeholders filled from `variables` when the message is accepted.
    #[schema(max_length = 4096)]
    pub template: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: Map<String, Value>,
    /// Not sent after this time (it ends `expired`); in the future.
    pub expires_at: Option<DateTime<Utc>>,
    /// Not sent inside this daily window (a reminder at 3 a.m. waits for the morning); its
    /// zone defaults to the tenant's. Omit for messages that may go at any hour, such as
    /// one-time codes.
    pub quiet_hours: Option<QuietHours>,
    /// In a batch, this message's own idempotency key (for a single message, the
    /// `Idempotency-Key` header may carry it instead).
    #[schema(min_length = 1, max_length = 255, pattern = "^[ -~]+$")]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMessages {
    /// 1–1000 messages of one tenant, accepted all together or not at all.
    #[schema(min_items = 1, max_items = 1000)]
    pub messages: Vec<NewMessage>,
}

/// A transactional message and what became of it.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Message {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub to: String,
    #[schema(schema_with = crate::api::openapi::rules::channel)]
    pub channel: String,
    pub provider_id: Uuid,
    pub overflow_provider_id: Option<Uuid>,
    pub text: Option<String>,
    /// `pending` and `queued` wait, `sending` and `unknown` are in flight, `sent`,
    /// `failed`, `expired` and `cancelled` are final.
    #[schema(schema_with = crate::api::openapi::rules::recipient_state)]
    pub state: String,
    /// The provider's latest word (its receipts): `delivered`, `read`, `undelivered`…
    pub delivery_status: Option<String>,
    pub delivery_error: Option<String>,
    pub attempts: i32,
    /// The provider the latest attempt went to.
    pub sent_via: Option<Uuid>,
    pub provider_message_id: Option<String>,
    /// The price of the provider it was sent through, once sent (`cost_per_message`).
    pub cost: Option<f64>,
    pub last_error: Option<String>,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    #[schema(value_type = Option<QuietHours>)]
    pub quiet_hours: Option<sqlx::types::Json<QuietHours>>,
    /// The stream is held: its provider refused Herald's credentials (rotating them
    /// resumes it).
    pub held: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageDetail {
    #[serde(flatten)]
    pub message: Message,
    pub receipts: Vec<MessageReceipt>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptedMessages {
    /// In the order of the request.
    pub messages: Vec<Message>,
}

/// A message checked and ready to store.
#[derive(Debug, Clone)]
struct Checked {
    /// Its place in the request (errors name it).
    index: usize,
    tenant: Uuid,
    address: String,
    channel: String,
    provider: Uuid,
    overflow: Option<Uuid>,
    variables: Map<String, Value>,
    expires_at: Option<DateTime<Utc>>,
    /// Its quiet hours (start, end) and their zone (the tenant's when it has none).
    quiet: Option<(NaiveTime, NaiveTime)>,
    zone: String,
    key: Option<String>,
    hash: Vec<u8>,
    /// The request's hash with `to` as stored, as keys held from before 2026-12-07 were
    /// hashed: their retries still match.
    hash_as_stored: Vec<u8>,
}

impl Checked {
    fn stream_key(&self) -> StreamKey {
        StreamKey {
            tenant: self.tenant,
            provider: self.provider,
            overflow: self.overflow,
            channel: self.channel.clone(),
            quiet: self.quiet,
            zone: self.zone.clone(),
        }
    }
}

#[utoipa::path(post, path = "/messages", tag = "messages", request_body = NewMessage,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[ -~]+$", description = "Seen in the last 24 hours, or later while its message is not finished: the first request's message is returned and nothing is sent again; with another request: 422.")),
    responses((status = 202, description = "Committed; sent as soon as its lane has room", body = Message,
                headers(("Idempotent-Replayed" = String, description = "`true` when the key was seen before"))),
              (status = 429, description = "The tenant has `max_queued_messages` waiting, or sent `max_messages_per_day` today; `Retry-After` says when to try again", body = crate::error::ErrorBody)))]
pub async fn send(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(mut body): JsonBody<NewMessage>,
) -> Result<Response, ApiError> {
    if let Some(key) = idempotency::from_header(&headers)? {
        match &body.idempotency_key {
            Some(given) if *given != key => {
                return Err(ApiError::field(
                    "idempotency_key",
                    "differs from the Idempotency-Key header",
                ));
            }
            _ => body.idempotency_key = Some(key),
        }
    }
    let (mut messages, replayed) = accept(&state.pool, caller, vec![body], "").await?;
    let message = messages.pop().ok_or(ApiError::NotFound("message"))?;
    let mut response = (StatusCode::ACCEPTED, Json(message)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert(idempotency::REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// The first variable `template` uses whose value in `variables` is blank.
fn blank_variable(template: &str, variables: &Map<String, Value>) -> Option<String> {
    template::variables(template)
        .ok()?
        .into_iter()
        .find(|name| variables.get(name).is_some_and(template::is_blank))
}

#[utoipa::path(post, path = "/messages/batch", tag = "messages", request_body = NewMessages,
    responses((status = 202, description = "All committed", body = AcceptedMessages),
              (status = 429, description = "The tenant has `max_queued_messages` waiting, or sent `max_messages_per_day` today; `Retry-After` says when to try again", body = crate::error::ErrorBody)))]
pub async fn send_batch(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<NewMessages>,
) -> Result<(StatusCode, Json<AcceptedMessages>), ApiError> {
    // Ignored, it would let a retried batch send twice.
    if headers.contains_key(idempotency::HEADER) {
        return Err(ApiError::field(
            "Idempotency-Key",
            "a batch takes each message's own idempotency_key instead",
        ));
    }
    if body.messages.is_empty() || body.messages.len() > MAX_BATCH {
        return Err(ApiError::field(
            "messages",
            format!("must hold 1 to {MAX_BATCH} messages"),
        ));
    }
    let (messages, _) = accept(&state.pool, caller, body.messages, "messages").await?;
    Ok((StatusCode::ACCEPTED, Json(AcceptedMessages { messages })))
}

/// Checks, then stores all of `items` in one transaction (or none); answers each item's
/// message in order, and whether any was a replay of an earlier request.
async fn accept(
    pool: &PgPool,
    caller: Caller,
    items: Vec<NewMessage>,
    prefix: &str,
) -> Result<(Vec<Message>, bool), ApiError> {
    let field = |index: usize, name: &str| {
        if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}[{index}].{name}")
        }
    };
    let count = items.len();
    let mut checked = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    let mut lookups = Lookups::default();
    // Replays are known first and not checked again: a retry answers the message its key
    // was given, as the first answer said, whatever changed since (today's checks could
    // refuse it: the tenant's default provider removed, its region changed).
    let held = held_keys(pool, caller, &items).await?;
    let mut replays: Vec<Replay> = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        if let Ok(tenant) = caller.owning_tenant(item.tenant_id)
            && let Some(key) = &item.idempotency_key
            && let Some((_, hash)) = held.get(&(tenant, key.clone()))
            && *hash == request_hash(tenant, &item)
        {
            replays.push(Replay {
                index,
                tenant,
                key: key.clone(),
                hash: hash.clone(),
            });
            continue;
        }
        // Not a replay as it came: a new request, another one under a held key, or one
        // hashed as keys were before (checked, then compared both ways).
        match check(pool, caller, item, &mut lookups).await? {
            Ok(message) => checked.push(Checked { index, ..message }),
            Err(problems) => errors.extend(problems.into_iter().map(|(name, reason)| FieldError {
                field: field(index, name),
                reason,
            })),
        }
    }
    // Every item, checked or a replay, in the request's order: (index, tenant, key).
    let mut all: Vec<(usize, Uuid, Option<&str>)> = checked
        .iter()
        .map(|c| (c.index, c.tenant, c.key.as_deref()))
        .chain(
            replays
                .iter()
                .map(|r| (r.index, r.tenant, Some(r.key.as_str()))),
        )
        .collect();
    all.sort_unstable_by_key(|(index, ..)| *index);
    if let Some(&(_, first, _)) = all.first() {
        for &(index, tenant, _) in &all {
            if tenant != first {
                errors.push(FieldError {
                    field: field(index, "tenant_id"),
                    reason: "a batch holds one tenant's messages".into(),
                });
            }
        }
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for &(index, _, key) in &all {
        if let Some(key) = key
            && seen.insert(key, index).is_some()
        {
            errors.push(FieldError {
                field: field(index, "idempotency_key"),
                reason: "repeats an earlier message's key in this batch".into(),
            });
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::fields("messages; none was accepted", errors));
    }
    let Some(&(_, tenant, _)) = all.first() else {
        return Ok((Vec::new(), false));
    };

    let mut tx = pool.begin().await?;
    messages::lock_tenant(&mut tx, tenant).await?;
    let keys: Vec<String> = all
        .iter()
        .filter_map(|(_, _, key)| key.map(str::to_owned))
        .collect();
    let earlier = messages::earlier_requests(&mut tx, tenant, &keys).await?;
    // Per item of the request: the message it replays, if any.
    let mut ids: Vec<Option<Uuid>> = vec![None; count];
    for replay in &replays {
        match earlier.get(&replay.key) {
            Some((id, hash)) if *hash == replay.hash => ids[replay.index] = Some(*id),
            Some(_) => errors.push(FieldError {
                field: field(replay.index, "idempotency_key"),
                reason: KEY_HELD.into(),
            }),
            // Released since it was read (its message finished, its day just passed): the
            // request is new now, and must be checked as one.
            None => {
                return Err(ApiError::Unavailable(
                    "an idempotency key was released as this request came: send it again".into(),
                ));
            }
        }
    }
    for message in &checked {
        match message.key.as_ref().and_then(|key| earlier.get(key)) {
            Some((id, hash)) if *hash == message.hash || *hash == message.hash_as_stored => {
                ids[message.index] = Some(*id)
            }
            Some(_) => errors.push(FieldError {
                field: field(message.index, "idempotency_key"),
                reason: KEY_HELD.into(),
            }),
            // A new message (not a replay, whose expiry may have passed since): its expiry
            // must still be ahead.
            None if message.expires_at.is_some_and(|at| at <= Utc::now()) => {
                errors.push(FieldError {
                    field: field(message.index, "expires_at"),
                    reason: "must be in the future".into(),
                })
            }
            None => {}
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::fields("messages; none was accepted", errors));
    }
    let replayed = ids.iter().any(Option::is_some);
    // Positions in `checked` of the messages to store.
    let fresh: Vec<usize> = (0..checked.len())
        .filter(|&i| ids[checked[i].index].is_none())
        .collect();
    // What the fresh messages are at commit, known without reading them back.
    let mut stored: HashMap<Uuid, Message> = HashMap::new();
    if !fresh.is_empty() {
        admit(&mut tx, tenant, fresh.len()).await?;
        let new = store(&mut tx, &checked, &fresh, &field).await?;
        let new_ids: Vec<Uuid> = new.iter().map(|m| m.id).collect();
        stored.extend(new.into_iter().map(|m| (m.id, m)));
        // Delivered at commit: the scheduler dispatches them now rather than at its tick.
        // Both lanes a message may take: the overflow's serves it when the primary cannot.
        let providers: Vec<Uuid> = fresh
            .iter()
            .flat_map(|&i| std::iter::once(checked[i].provider).chain(checked[i].overflow))
            .collect();
        messages::wake(&mut tx, &providers).await?;
        for (&position, id) in fresh.iter().zip(new_ids) {
            ids[checked[position].index] = Some(id);
        }
    }
    let ids: Vec<Uuid> = ids.into_iter().flatten().collect();
    // Replays answer what became of the first request's message: read before the commit,
    // so that a read that fails cannot answer an error for messages already accepted (a
    // client retrying would send the new ones twice).
    let earlier: Vec<Uuid> = ids
        .iter()
        .filter(|id| !stored.contains_key(id))
        .copied()
        .collect();
    if !earlier.is_empty() {
        stored.extend(
            messages::fetch::<Message>(&mut *tx, Scope::Tenant(tenant), &earlier)
                .await?
                .into_iter()
                .map(|m| (m.id, m)),
        );
    }
    tx.commit().await?;
    if !fresh.is_empty() {
        tracing::info!(tenant_id = %tenant, accepted = fresh.len(), "transactional messages accepted");
    }
    let messages = ids.iter().filter_map(|id| stored.remove(id)).collect();
    Ok((messages, replayed))
}

/// A held key's request again, answered with its message.
struct Replay {
    /// Its place in the request.
    index: usize,
    tenant: Uuid,
    key: String,
    hash: Vec<u8>,
}

/// Why a key another request holds is refused.
const KEY_HELD: &str = "is held by another request (a key is held 24 hours, and until \
                        its message is finished)";

/// The keys `items` name that their tenants hold, with their messages and requests'
/// hashes, by tenant and key.
async fn held_keys(
    pool: &PgPool,
    caller: Caller,
    items: &[NewMessage],
) -> Result<HashMap<(Uuid, String), (Uuid, Vec<u8>)>, ApiError> {
    let mut by_tenant: HashMap<Uuid, Vec<String>> = HashMap::new();
    for item in items {
        if let Ok(tenant) = caller.owning_tenant(item.tenant_id)
            && let Some(key) = item.idempotency_key.as_ref().filter(|k| valid_key(k))
        {
            by_tenant.entry(tenant).or_default().push(key.clone());
        }
    }
    let mut held = HashMap::new();
    for (tenant, keys) in by_tenant {
        for (key, found) in messages::held_keys(pool, tenant, &keys).await? {
            held.insert((tenant, key), found);
        }
    }
    Ok(held)
}

/// A provider and its optional overflow.
type Route = (Uuid, Option<Uuid>);

/// What checking a batch looks up once per batch rather than once per message.
#[derive(Default)]
struct Lookups {
    /// Per tenant, if it exists: its default region and time zone.
    tenants: HashMap<Uuid, Option<(Option<String>, String)>>,
    /// Per provider and tenant, the provider if the tenant may use it.
    providers: HashMap<(Uuid, Uuid), Option<herald_store::providers::Usable>>,
    /// Per tenant and channel, its default provider and overflow.
    defaults: HashMap<(Uuid, String), Option<Route>>,
    zones: HashMap<String, bool>,
}

/// A message's problems, by field.
type Problems = Vec<(&'static str, String)>;

/// Checks one message; an `Err` inside is the caller's mistakes, field by field.
async fn check(
    pool: &PgPool,
    caller: Caller,
    item: NewMessage,
    lookups: &mut Lookups,
) -> Result<Result<Checked, Problems>, ApiError> {
    let tenant = match caller.owning_tenant(item.tenant_id) {
        Ok(tenant) => tenant,
        Err(_) => {
            return Ok(Err(vec![(
                "tenant_id",
                "required when using an operator key".into(),
            )]));
        }
    };
    let known = match lookups.tenants.get(&tenant) {
        Some(known) => known.clone(),
        None => {
            let row = herald_store::tenants::region_and_zone(pool, tenant).await?;
            lookups.tenants.insert(tenant, row.clone());
            row
        }
    };
    let Some((region, tenant_zone)) = known else {
        return Ok(Err(vec![("tenant_id", "no such tenant".into())]));
    };
    let mut problems: Problems = Vec::new();
    let address = match phone::normalize(
        &item.to,
        region.as_deref().and_then(|r| phone::region(r).ok()),
    ) {
        Ok(address) => address,
        Err(reason) => {
            problems.push(("to", reason));
            String::new()
        }
    };
    let channel = validate::channel(&item.channel)
        .map_err(|reason| problems.push(("channel", reason)))
        .ok();
    // Bounded as an upload's values are: they are stored with the message and travel in
    // each of its dispatches.
    if item.variables.len() > limits::MAX_COLUMNS {
        problems.push((
            "variables",
            format!("at most {} variables", limits::MAX_COLUMNS),
        ));
    } else if let Some((name, problem)) = item
        .variables
        .iter()
        .find_map(|(name, value)| limits::check_value(value).err().map(|p| (name, p)))
    {
        let (limits::ValueProblem::TooLarge(reason) | limits::ValueProblem::Invalid(reason)) =
            problem;
        problems.push(("variables", format!("`{}` {reason}", validate::clip(name))));
    }
    // A blank value sends "Hi !": refused as a campaign's upload refuses the row.
    let blank = item
        .template
        .as_deref()
        .and_then(|t| blank_variable(t, &item.variables));
    let text = match (&item.text, &item.template) {
        (Some(_), Some(_)) => {
            problems.push(("text", "give either text or template, not both".into()));
            None
        }
        (None, None) => {
            problems.push(("text", "required (or a template with its variables)".into()));
            None
        }
        (Some(text), None) => Some(("text", text.clone())),
        // The template's own length first: rendering a long one is work for nothing.
        (None, Some(t)) if t.chars().count() > limits::MAX_TEMPLATE_CHARS => {
            problems.push((
                "template",
                format!("is longer than {} characters", limits::MAX_TEMPLATE_CHARS),
            ));
            None
        }
        (None, Some(_)) if blank.is_some() => {
            problems.push((
                "variables",
                format!(
                    "`{}` is blank, and the template uses it",
                    validate::clip(blank.as_deref().unwrap_or_default())
                ),
            ));
            None
        }
        (None, Some(t)) => match template::render(t, &item.variables) {
            Ok(text) => Some(("template", text)),
            Err(error) => {
                problems.push(("template", error.to_string()));
                None
            }
        },
    };
    if let Some((name, text)) = &text {
        if text.trim().is_empty() {
            problems.push((*name, "must not be empty".into()));
        } else if text.chars().count() > limits::MAX_TEMPLATE_CHARS {
            problems.push((
                *name,
                format!("is longer than {} characters", limits::MAX_TEMPLATE_CHARS),
            ));
        }
    }
    // Whether it is still ahead is judged once replays are known (`accept`).
    if let Some(Err(reason)) = item.expires_at.map(validate::timestamp) {
        problems.push(("expires_at", reason));
    }
    if let Some(key) = &item.idempotency_key
        && !valid_key(key)
    {
        problems.push(("idempotency_key", idempotency::KEY_RULE.to_owned()));
    }
    let mut quiet = None;
    let mut zone = tenant_zone;
    if let Some(q) = &item.quiet_hours {
        match super::campaigns::quiet_window(q) {
            Ok(window) => quiet = Some(window),
            Err(found) => problems.extend(found),
        }
        if let Some(given) = &q.time_zone {
            let known = match lookups.zones.get(given) {
                Some(&known) => known,
                None => {
                    let known = herald_store::tenants::known_time_zone(pool, given).await?;
                    lookups.zones.insert(given.clone(), known);
                    known
                }
            };
            if known {
                zone.clone_from(given);
            } else {
                problems.push((
                    "quiet_hours.time_zone",
                    format!("`{}` is not an IANA time zone", validate::clip(given)),
                ));
            }
        }
    }
    // No provider named: the tenant's default for the channel, with its overflow unless
    // the message names one.
    let (provider, overflow) = match item.provider_id {
        Some(provider) => (Some(provider), item.overflow_provider_id),
        None => {
            let key = (tenant, item.channel.clone());
            let default = match lookups.defaults.get(&key) {
                Some(known) => *known,
                None => {
                    let found =
                        herald_store::tenants::default_provider(pool, tenant, &item.channel)
                            .await?;
                    lookups.defaults.insert(key, found);
                    found
                }
            };
            match default {
                Some((provider, overflow)) => {
                    (Some(provider), item.overflow_provider_id.or(overflow))
                }
                None => {
                    problems.push((
                        "provider_id",
                        format!(
                            "required: the tenant has no default provider for `{}` \
                             (PUT /tenants/{{id}}/default-providers/{{channel}})",
                            validate::clip(&item.channel)
                        ),
                    ));
                    (None, None)
                }
            }
        }
    };
    // A default provider is checked as a named one: one set before the kinds were
    // checked against channels may not fit, and the answer says where it came from.
    let defaulted = |named: bool, reason: String| {
        if named {
            reason
        } else {
            // A reason is a predicate ("is a twilio_voice provider…") or a finding ("no such
            // provider"); either reads after the default it is about.
            let joint = if reason.starts_with("is ") { " " } else { ": " };
            format!(
                "the tenant's default for `{}`{joint}{reason} (PUT /tenants/{{id}}/default-providers/{{channel}})",
                validate::clip(&item.channel)
            )
        }
    };
    if let Some(provider) = provider
        && let Some(reason) = misfit(pool, lookups, provider, tenant, channel).await?
    {
        problems.push(("provider_id", defaulted(item.provider_id.is_some(), reason)));
    }
    if let (Some(provider), Some(overflow)) = (provider, overflow) {
        if overflow == provider {
            problems.push((
                "overflow_provider_id",
                "must differ from provider_id".into(),
            ));
        } else if let Some(reason) = misfit(pool, lookups, overflow, tenant, channel).await? {
            let named = item.overflow_provider_id.is_some();
            problems.push(("overflow_provider_id", defaulted(named, reason)));
        }
    }
    let Some(provider) = provider.filter(|_| problems.is_empty()) else {
        return Ok(Err(problems));
    };
    let text = text.map(|(_, text)| text).unwrap_or_default();
    // The request as it came: a retry sends the same, whatever the tenant's settings (its
    // region, which reads the number) are by then.
    let hash = request_hash(tenant, &item);
    let hash_as_stored = {
        let mut stored = item.clone();
        stored.to.clone_from(&address);
        request_hash(tenant, &stored)
    };
    let mut variables = item.variables;
    variables.insert("text".into(), Value::String(text));
    Ok(Ok(Checked {
        index: 0,
        tenant,
        address,
        channel: item.channel,
        provider,
        overflow,
        variables,
        expires_at: item.expires_at,
        quiet,
        zone,
        key: item.idempotency_key,
        hash,
        hash_as_stored,
    }))
}

/// Why `provider` cannot carry the message, if it cannot ([`super::provider_fit`]), its
/// kind looked up once per batch.
async fn misfit(
    pool: &PgPool,
    lookups: &mut Lookups,
    provider: Uuid,
    tenant: Uuid,
    channel: Option<Channel>,
) -> Result<Option<String>, sqlx::Error> {
    let usable = match lookups.providers.get(&(provider, tenant)) {
        Some(known) => known.clone(),
        None => {
            let usable = herald_store::providers::usable_by(pool, provider, tenant).await?;
            lookups.providers.insert((provider, tenant), usable.clone());
            usable
        }
    };
    Ok(super::provider_fit::judge(usable.as_ref(), channel))
}

/// What makes two requests the same request: everything but the key itself.
fn request_hash(tenant: Uuid, item: &NewMessage) -> Vec<u8> {
    let mut item = item.clone();
    item.tenant_id = Some(tenant);
    item.idempotency_key = None;
    // Serializing plain data cannot fail.
    Sha256::digest(serde_json::to_vec(&item).unwrap_or_default()).to_vec()
}

/// Refuses `adding` more messages past the tenant's quota of unfinished ones (with a
/// `Retry-After` from how fast its messages are going out) or past its daily cap (with one
/// until its next midnight).
async fn admit(tx: &mut PgConnection, tenant: Uuid, adding: usize) -> Result<(), ApiError> {
    let messages::Admission {
        waiting,
        quota,
        per_second,
        daily_cap,
        today,
        to_midnight,
    } = messages::admission(tx, tenant).await?;
    let adding = i64::try_from(adding).unwrap_or(i64::MAX);
    if adding > i64::from(quota) {
        return Err(ApiError::field(
            "messages",
            format!("holds more than the tenant's max_queued_messages ({quota})"),
        ));
    }
    if let Some(cap) = daily_cap {
        if adding > i64::from(cap) {
            // No day would take it: not a reason to come back at midnight.
            return Err(ApiError::field(
                "messages",
                format!("holds more than the tenant's max_messages_per_day ({cap})"),
            ));
        }
        if today + adding > i64::from(cap) {
            return Err(ApiError::Busy {
                message: format!(
                    "this tenant has sent {today} of its {cap} messages for today (max_messages_per_day); \
                 nothing was accepted"
                ),
                retry_after: to_midnight.ceil().clamp(1.0, 86_400.0) as u32,
            });
        }
    }
    if waiting + adding <= i64::from(quota) {
        return Ok(());
    }
    Err(ApiError::Busy {
        message: format!(
            "{waiting} messages of this tenant are waiting to be sent (max_queued_messages: {quota}); \
             nothing was accepted"
        ),
        retry_after: retry_after(waiting + adding - i64::from(quota), per_second),
    })
}

/// Seconds until `excess` messages have gone out at `per_second` (1–60; 5 when nothing
/// has gone out lately, so there is no rate to go by).
pub fn retry_after(excess: i64, per_second: f64) -> u32 {
    if per_second <= 0.0 || !per_second.is_finite() {
        return 5;
    }
    let seconds = (excess.max(1) as f64 / per_second).ceil();
    seconds.clamp(1.0, 60.0) as u32
}

/// Stores the `fresh` items of `checked`; answers them as they stand at commit, in the same
/// order. `field` names a message's field in the request (for a refusal).
///
/// One statement writes both rows of each message: a burst of 50,000 is 50 of them, and
/// reading the batch back for the answer cost as much again (it is known here already).
async fn store(
    tx: &mut PgConnection,
    checked: &[Checked],
    fresh: &[usize],
    field: &impl Fn(usize, &str) -> String,
) -> Result<Vec<Message>, ApiError> {
    let mut streams: HashMap<StreamKey, Stream> = HashMap::new();
    for &index in fresh {
        if let std::collections::hash_map::Entry::Vacant(entry) =
            streams.entry(checked[index].stream_key())
        {
            let Some(stream) = messages::stream(&mut *tx, entry.key()).await? else {
                let max = messages::MAX_STREAMS_PER_TENANT;
                return Err(ApiError::fields(
                    "messages; none was accepted",
                    vec![FieldError {
                        field: field(checked[index].index, "quiet_hours"),
                        reason: format!(
                            "would open this tenant's stream number {}: its messages go out in \
                             at most {max} streams, one for each combination of provider, \
                             overflow provider, channel, quiet hours and time zone they use",
                            max + 1
                        ),
                    }],
                ));
            };
            entry.insert(stream);
        }
    }
    let message_ids: Vec<Uuid> = fresh.iter().map(|_| Uuid::new_v4()).collect();
    let mut new = MessageRows {
        ids: message_ids.clone(),
        ..MessageRows::default()
    };
    for &index in fresh {
        let c = &checked[index];
        new.streams.push(streams[&c.stream_key()].id);
        new.addresses.push(c.address.clone());
        new.variables.push(Value::Object(c.variables.clone()));
        new.expiries.push(c.expires_at);
        new.keys.push(c.key.clone());
        new.hashes.push(c.hash.clone());
    }
    let created_at = messages::insert(tx, checked[fresh[0]].tenant, &new).await?;
    Ok(fresh
        .iter()
        .zip(message_ids)
        .map(|(&index, id)| {
            let c = &checked[index];
            let held = streams[&c.stream_key()].held.clone();
            accepted(c, id, created_at, held)
        })
        .collect())
}

/// A message just stored, as [`messages::fetch`] would read it before anything happened to it.
fn accepted(c: &Checked, id: Uuid, created_at: DateTime<Utc>, held: Option<String>) -> Message {
    Message {
        id,
        tenant_id: c.tenant,
        to: c.address.clone(),
        channel: c.channel.clone(),
        provider_id: c.provider,
        overflow_provider_id: c.overflow,
        text: c
            .variables
            .get("text")
            .and_then(Value::as_str)
            .map(str::to_owned),
        state: RecipientState::Pending.as_str().to_owned(),
        delivery_status: None,
        delivery_error: None,
        attempts: 0,
        sent_via: None,
        provider_message_id: None,
        cost: None,
        last_error: None,
        idempotency_key: c.key.clone(),
        created_at,
        sent_at: None,
        // As stored: PostgreSQL keeps microseconds.
        expires_at: c.expires_at.map(|at| at.trunc_subsecs(6)),
        quiet_hours: c.quiet.map(|(start, end)| {
            sqlx::types::Json(QuietHours {
                start: start.format("%H:%M").to_string(),
                end: end.format("%H:%M").to_string(),
                time_zone: Some(c.zone.clone()),
            })
        }),
        held,
    }
}

#[utoipa::path(get, path = "/messages/{id}", tag = "messages",
    responses((status = 200, body = MessageDetail), (status = 404, body = crate::error::ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<MessageDetail>, ApiError> {
    let message = messages::fetch::<Message>(&state.pool, caller.scope(), &[id])
        .await?
        .pop()
        .ok_or(ApiError::NotFound("message"))?;
    let receipts = messages::receipts(&state.pool, id).await?;
    Ok(Json(MessageDetail { message, receipts }))
}

/// Withdraws a message that still waits (`pending`, `queued`): it ends `cancelled` and is
/// never sent. Cancelling one already cancelled changes nothing; one in flight (`sending`,
/// `unknown`) or final is a `409` naming its state, and so is one waiting after a request
/// whose answer was lost (it may have been sent).
#[utoipa::path(post, path = "/messages/{id}/cancel", tag = "messages",
    params(("id" = Uuid, Path, description = "The message's id")),
    responses((status = 200, body = Message), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Message>, ApiError> {
    match messages::cancel(&state.pool, caller.scope(), id).await? {
        None => return Err(ApiError::NotFound("message")),
        Some(messages::Cancelled::TooLate(state)) => {
            return Err(ApiError::Conflict(format!(
                "the message is `{state}`: only a message still waiting (pending, queued) can \
                 be cancelled"
            )));
        }
        Some(messages::Cancelled::MaybeSent) => {
            return Err(ApiError::Conflict(
                "an earlier request for the message may have been sent (its answer was lost): \
                 it cannot be withdrawn"
                    .into(),
            ));
        }
        Some(messages::Cancelled::Now) => {}
    }
    messages::fetch::<Message>(&state.pool, caller.scope(), &[id])
        .await?
        .pop()
        .map(Json)
        .ok_or(ApiError::NotFound("message"))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
// Read by `QueryParams`, which utoipa cannot place as it places axum's `Query`.
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only messages in this state.
    #[param(schema_with = crate::api::openapi::rules::recipient_state)]
    pub state: Option<String>,
    /// Only messages accepted at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only messages accepted before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only this tenant's messages (a tenant key sees only its own anyway).
    pub tenant_id: Option<Uuid>,
    /// Only messages to this address: as stored, or a phone number as people write it
    /// (`+33 6 12 34 56 78` finds `+33612345678`; without its country code, read in the
    /// default region of the tenants listed, as their uploads are).
    pub to: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// At most this many (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// Newest first; the id breaks ties.
type MessageKey = (DateTime<Utc>, Uuid);

#[utoipa::path(get, path = "/messages", tag = "messages", params(ListQuery),
    responses((status = 200, body = Page<Message>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<Page<Message>>, ApiError> {
    if let Some(name) = &query.state
        && name.parse::<RecipientState>().is_err()
    {
        return Err(ApiError::field(
            "state",
            format!("unknown state `{}`", validate::clip(name)),
        ));
    }
    for (name, at) in [("since", query.since), ("until", query.until)] {
        if let Some(Err(reason)) = at.map(validate::timestamp) {
            return Err(ApiError::field(name, reason));
        }
    }
    let limit = page::limit(query.limit)?;
    let after: Option<MessageKey> = page::decode(query.cursor.as_deref())?;
    if after.is_some_and(|(at, _)| !(1..=9999).contains(&at.year())) {
        return Err(page::forged());
    }
    let to = super::tenants::address_forms(
        &state.pool,
        caller.scope(),
        query.tenant_id,
        None,
        query.to.as_deref(),
    )
    .await?;
    let filter = messages::ListFilter {
        tenant: query.tenant_id,
        state: query.state.as_deref(),
        to: &to,
        since: query.since,
        until: query.until,
        after,
        limit: page::fetch_limit(limit),
    };
    let rows: Vec<Message> = messages::list(&state.pool, caller.scope(), &filter).await?;
    Ok(Json(Page::of(rows, limit, |m| (m.created_at, m.id))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(value: Value) -> NewMessage {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn retry_after_follows_the_rate_and_stays_within_a_minute() {
        assert_eq!(retry_after(100, 50.0), 2);
        assert_eq!(retry_after(1, 1000.0), 1);
        assert_eq!(retry_after(1_000_000, 1.0), 60);
        assert_eq!(retry_after(10, 0.0), 5);
    }

    #[test]
    fn the_key_is_not_part_of_the_request_but_everything_else_is() {
        let tenant = Uuid::from_u128(1);
        let base = json!({"to": "+15551230001", "channel": "sms",
                          "provider_id": Uuid::from_u128(2), "text": "code 1234"});
        let mut keyed = base.clone();
        keyed["idempotency_key"] = json!("k1");
        let mut other = base.clone();
        other["text"] = json!("code 9999");
        let hash = |v: &Value| request_hash(tenant, &message(v.clone()));
        assert_eq!(hash(&base), hash(&keyed));
        assert_ne!(hash(&base), hash(&other));
        assert_ne!(
            hash(&base),
            request_hash(Uuid::from_u128(3), &message(base.clone()))
        );
    }
}
