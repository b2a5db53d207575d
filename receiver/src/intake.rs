//! Taking receipts in: why a webhook is refused, and the batched, durable store behind the
//! `2xx`. A provider retries a webhook that is not answered `2xx`, so a receipt is answered
//! only once it is committed, and every answer is fast: receipts arriving together are
//! stored (and applied to their recipients) in one statement.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use herald_shared::batch::Batcher;
use herald_shared::ops::metrics::{RECEIPTS, RECEIPTS_REFUSED};
use herald_store::receipts::{self, Receipt};
use serde_json::json;
use sqlx::PgPool;

/// Why a webhook is not taken. Nothing is stored for any of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 401: no signature.
    Unauthorized(&'static str),
    /// 403: a signature (or verify token) that does not match.
    Forbidden(&'static str),
    /// 404: no such provider, or not one of this endpoint's kind.
    NotFound,
    /// 400: the body is not what the provider's API sends.
    BadRequest(String),
    /// 503: the receipt could not be stored; the provider will retry.
    Unavailable,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, reason, error) = match self {
            Refusal::Unauthorized(why) => (StatusCode::UNAUTHORIZED, "unsigned", why.to_owned()),
            Refusal::Forbidden(why) => (StatusCode::FORBIDDEN, "bad_signature", why.to_owned()),
            Refusal::NotFound => (
                StatusCode::NOT_FOUND,
                "no_provider",
                "no such provider".to_owned(),
            ),
            Refusal::BadRequest(why) => (StatusCode::BAD_REQUEST, "malformed", why),
            Refusal::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not_stored",
                "cannot store receipts now; retry later".to_owned(),
            ),
        };
        metrics::counter!(RECEIPTS_REFUSED, "reason" => reason).increment(1);
        (status, Json(json!({ "error": error }))).into_response()
    }
}

/// A required text field: non-empty, at most `max` characters, no control characters.
pub fn text(field: &str, value: &str, max: usize) -> Result<String, Refusal> {
    if value.is_empty() || value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(Refusal::BadRequest(format!(
            "{field} must be 1 to {max} characters without control characters"
        )));
    }
    Ok(value.to_owned())
}

/// At most `max` characters of a free text, control characters dropped (PostgreSQL text
/// refuses NUL).
pub fn clip(value: &str, max: usize) -> String {
    value
        .chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect()
}

/// Most receipts one statement stores.
const MAX_BATCH: usize = 500;
/// One statement at a time: receipts that come while it runs make the next batch. (Two at a
/// time, as the worker does, left the second with a receipt or two each time: more, smaller
/// statements, and fewer receipts a second — measured 5,300 against 6,500 a second with 64
/// in flight.)
const DB_LANES: usize = 1;

#[derive(Clone)]
pub struct Intake {
    batcher: Batcher<Receipt, Result<(), ()>>,
}

impl Intake {
    pub fn start(pool: PgPool) -> Self {
        let batcher = Batcher::spawn_parallel(MAX_BATCH, DB_LANES, move |batch: Vec<Receipt>| {
            let pool = pool.clone();
            async move {
                match receipts::store(&pool, &batch).await {
                    Ok(stored) => {
                        tracing::debug!(
                            received = stored.received,
                            duplicates = stored.duplicates,
                            parked = stored.parked,
                            applied = stored.applied,
                            "receipts stored"
                        );
                        vec![Ok(()); batch.len()]
                    }
                    Err(error) => {
                        tracing::warn!(%error, count = batch.len(), "cannot store receipts; answering 503");
                        vec![Err(()); batch.len()]
                    }
                }
            }
        });
        Self { batcher }
    }

    /// Stores `receipts` durably (each in whatever batch it joins); `Err` if any could not
    /// be, so the provider sends them again (what was stored is then a duplicate).
    pub async fn store(&self, receipts: Vec<Receipt>) -> Result<(), Refusal> {
        let labels: Vec<(String, String)> = receipts
            .iter()
            .map(|r| (r.provider_id.to_string(), r.status.to_string()))
            .collect();
        let calls = receipts.into_iter().map(|r| self.batcher.call(r));
        let mut refused = false;
        for (result, (provider, status)) in futures::future::join_all(calls)
            .await
            .into_iter()
            .zip(labels)
        {
            if matches!(result, Ok(Ok(()))) {
                metrics::counter!(RECEIPTS, "provider" => provider, "status" => status)
                    .increment(1);
            } else {
                refused = true;
            }
        }
        if refused {
            return Err(Refusal::Unavailable);
        }
        Ok(())
    }
}
