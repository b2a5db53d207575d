//! A campaign's recipients: the streamed, all-or-nothing upload and the listing.

use super::QueryParams;
use super::page::{self, Page};
use crate::api::campaigns::ensure_visible;
use crate::auth::Caller;
use crate::error::{ApiError, RowError};
use crate::phone;
use crate::staging;
use crate::state::AppState;
use crate::upload::Format;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use herald_shared::template;
use herald_store as store;
use herald_store::recipients::audience::Recipient;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

#[derive(Debug, Serialize, ToSchema)]
pub struct UploadResult {
    /// Data rows in the upload.
    pub received: u64,
    /// Recipients added.
    pub inserted: u64,
    /// Rows dropped because their address was already in the upload or the campaign.
    pub duplicates: u64,
}

#[utoipa::path(post, path = "/campaigns/{id}/recipients", tag = "recipients",
    request_body(description = "CSV with an `address` (or `phone`) column, other columns becoming the recipient's variables; NDJSON or a JSON array of {address, variables}. Rows are checked one by one: an invalid row is named in the 422's `rows` and nothing is added.",
        content((String = "text/csv"), (String = "application/x-ndjson"),
                (Vec<crate::upload::JsonRow> = "application/json"))),
    responses((status = 200, body = UploadResult), (status = 408, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody), (status = 413, body = crate::error::ErrorBody),
              (status = 415, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody)))]
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<UploadResult>, ApiError> {
    let format = Format::of_request(&headers)?;
    let pool = &state.pool;
    ensure_visible(pool, caller, id).await?;
    let _slot = state.uploads.take(caller.scope().tenant())?;
    let mut tx = pool.begin().await?;
    // Locked for the whole upload, so a concurrent start waits for it (never starts on half
    // an audience).
    let store::campaigns::Uploadable {
        status,
        template: template_text,
        default_region: region,
        expired,
    } = store::campaigns::lock_for_upload(&mut tx, id).await?;
    let region = region.as_deref().and_then(|r| phone::region(r).ok());
    if !matches!(status.as_str(), "draft" | "scheduled") {
        return Err(ApiError::Conflict(format!(
            "recipients can be added to draft or scheduled campaigns; this one is {status}"
        )));
    }
    // A scheduled campaign past its expiry is completed (never started): recipients added
    // now would never be sent, and ones committed just as the scheduler completes it would
    // be left waiting in a finished campaign. Asked again before the commit.
    if status == "scheduled" && expired {
        return Err(expired_refusal());
    }
    let needed = template::variables(&template_text)
        .map_err(|e| ApiError::field("template", e.to_string()))?;

    let received = staging::stage(
        &mut tx,
        body,
        format,
        staging::Timing::of(&state),
        region,
        false,
        |row| {
            if let Some(name) = needed
                .iter()
                // An empty CSV cell is a missing variable.
                .find(|name| row.fields.get(*name).is_none_or(template::is_blank))
            {
                return Some(RowError {
                    row: row.number,
                    field: Some(name.clone()),
                    reason: format!(
                        "the template uses `{{{{{name}}}}}` but this row has no `{name}`"
                    ),
                });
            }
            // Each value may be short and the text still too long for any provider: refused
            // here, as a single message is, rather than failed when the scheduler renders it.
            match template::render(&template_text, &row.fields) {
                Err(error @ template::TemplateError::TooLong(_)) => Some(RowError {
                    row: row.number,
                    field: None,
                    reason: error.to_string(),
                }),
                _ => None,
            }
        },
    )
    .await?;
    // First occurrence of an address wins; addresses already in the campaign are kept.
    let inserted = store::recipients::audience::add_staged(&mut tx, id).await?;
    if status == "scheduled" && store::campaigns::expired_now(&mut tx, id).await? {
        return Err(expired_refusal());
    }
    tx.commit().await?;
    tracing::info!(campaign_id = %id, received, inserted, "recipients uploaded");
    Ok(Json(UploadResult {
        received,
        inserted,
        duplicates: received - inserted,
    }))
}

fn expired_refusal() -> ApiError {
    ApiError::Conflict(
        "this scheduled campaign is past its expiry: recipients added now would never be sent; \
         nothing was added"
            .into(),
    )
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
// Read by `QueryParams`, which utoipa cannot place as it places axum's `Query`.
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only recipients in this state.
    #[param(schema_with = crate::api::openapi::rules::recipient_state)]
    pub state: Option<String>,
    /// Only recipients whose receipts went as far as this delivery status (the furthest
    /// they reported: `undelivered`, `failed` are the ones sent that never arrived).
    #[param(schema_with = crate::api::openapi::rules::delivery_status)]
    pub delivery: Option<String>,
    /// Only the recipient with this address: as stored, or a phone number as people write
    /// it (`+33 6 12 34 56 78` finds `+33612345678`; without its country code, read in the
    /// default region of the campaign's tenant, as its upload was).
    pub address: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// At most this many (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/campaigns/{id}/recipients", tag = "recipients", params(ListQuery),
    responses((status = 200, body = Page<Recipient>), (status = 404, body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<Page<Recipient>>, ApiError> {
    ensure_visible(&state.pool, caller, id).await?;
    if let Some(name) = &query.state
        && name
            .parse::<herald_shared::domain::RecipientState>()
            .is_err()
    {
        return Err(ApiError::field(
            "state",
            format!("unknown state `{}`", crate::validate::clip(name)),
        ));
    }
    // As stored: `accepted` is Twilio's other word for `queued`.
    let delivery = match &query.delivery {
        None => None,
        Some(name) => Some(
            name.parse::<herald_shared::delivery::DeliveryStatus>()
                .map_err(|_| {
                    ApiError::field(
                        "delivery",
                        format!("unknown delivery status `{}`", crate::validate::clip(name)),
                    )
                })?
                .as_str(),
        ),
    };
    let limit = page::limit(query.limit)?;
    let after: Option<String> = page::decode(query.cursor.as_deref())?;
    if after.as_deref().is_some_and(|a| a.contains('\0')) {
        return Err(page::forged());
    }
    let address = super::tenants::address_forms(
        &state.pool,
        caller.scope(),
        None,
        Some(id),
        query.address.as_deref(),
    )
    .await?;
    let rows = store::recipients::audience::list(
        &state.pool,
        id,
        store::recipients::audience::Filter {
            state: query.state.as_deref(),
            delivery,
        },
        &address,
        after,
        page::fetch_limit(limit),
    )
    .await?;
    Ok(Json(Page::of(rows, limit, |r: &Recipient| {
        r.address.clone()
    })))
}
