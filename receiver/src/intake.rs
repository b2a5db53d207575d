//! Taking receipts in: why a webhook is refused, and the batched, durable store behind the
//! `2xx`. A provider retries a webhook that is not answered `2xx`, so a receipt is answered
//! only once it is committed, and every answer is fast: receipts arriving together are
//! stored (and applied to their recipients) in one statement.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Datelike, Utc};
use herald_shared::batch::Batcher;
use herald_shared::db::within;
use herald_shared::ops::metrics::{RECEIPTS, RECEIPTS_REFUSED, RECEIPTS_RESULTS};
use herald_store::receipts::{self, Receipt, Stored};
use serde_json::json;
use sqlx::PgPool;
use std::time::Duration;

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

/// Whether a provider's time for a receipt is one to keep. It is informational (statuses
/// are ordered by rank, not time), and a signed body may carry any year chrono reads,
/// thousands of years before what PostgreSQL stores: such a time is dropped, not the
/// receipt.
pub fn plausible(time: DateTime<Utc>) -> bool {
    (2000..=9999).contains(&time.year())
}

/// Most receipts one statement stores.
const MAX_BATCH: usize = 500;
/// One statement at a time: receipts that come while it runs make the next batch. (Two at a
/// time, as the worker does, left the second with a receipt or two each time: more, smaller
/// statements, and fewer receipts a second — measured 5,300 against 6,500 a second with 64
/// in flight.)
const DB_LANES: usize = 1;
/// Longest a request waits for its receipts to be stored before it is answered 503 (they
/// are still stored when their statement runs; the provider's retry is then a duplicate).
/// Twilio gives up on a callback after 15 s, and a statement held up (a lock, a database
/// that stopped answering) must not hold every provider's connections open with it.
const STORE_WAIT: Duration = Duration::from_secs(10);

/// What became of a statement's receipts: the metric operators watch for receipts that do
/// not find their messages (parked, later orphaned) and for providers that send copies.
fn count_results(stored: &Stored) {
    let firsts = stored.received - stored.duplicates;
    for (result, count) in [
        ("matched", firsts - stored.parked),
        ("parked", stored.parked),
        ("duplicate", stored.duplicates),
    ] {
        if let Ok(count @ 1..) = u64::try_from(count) {
            metrics::counter!(RECEIPTS_RESULTS, "result" => result).increment(count);
        }
    }
}

#[derive(Clone)]
pub struct Intake {
    batcher: Batcher<Receipt, Result<(), ()>>,
}

impl Intake {
    pub fn start(pool: PgPool) -> Self {
        let batcher = Batcher::spawn_parallel(MAX_BATCH, DB_LANES, move |batch: Vec<Receipt>| {
            let pool = pool.clone();
            async move {
                // Bounded: on a connection that leads nowhere (a failover), the lane's one
                // statement would hold every later receipt for as long as TCP takes to notice.
                match within(receipts::store(&pool, &batch)).await {
                    Ok(stored) => {
                        tracing::debug!(
                            received = stored.received,
                            duplicates = stored.duplicates,
                            parked = stored.parked,
                            applied = stored.applied,
                            "receipts stored"
                        );
                        count_results(&stored);
                        vec![Ok(()); batch.len()]
                    }
                    // A statement PostgreSQL refused for what it holds (not an outage, a
                    // restart or a deadlock, which would fail each receipt alone as well and
                    // only take 500 statements to say so): one receipt it cannot take must
                    // not fail the others in its batch, other tenants' among them, so each
                    // is stored alone.
                    Err(error)
                        if batch.len() > 1
                            && matches!(error, sqlx::Error::Database(_))
                            && !herald_shared::db::is_transient(&error) =>
                    {
                        tracing::warn!(%error, count = batch.len(), "a batch of receipts refused; storing them one by one");
                        let mut results = Vec::with_capacity(batch.len());
                        for receipt in &batch {
                            let alone =
                                within(receipts::store(&pool, std::slice::from_ref(receipt))).await;
                            match &alone {
                                Ok(stored) => count_results(stored),
                                Err(error) => {
                                    tracing::warn!(%error, provider_id = %receipt.provider_id, "cannot store a receipt; answering 503")
                                }
                            }
                            results.push(alone.map(drop).map_err(drop));
                        }
                        results
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
    pub async fn store(&self, mut receipts: Vec<Receipt>) -> Result<(), Refusal> {
        for receipt in &mut receipts {
            receipt.provider_time = receipt.provider_time.filter(|&t| plausible(t));
        }
        let labels: Vec<(String, String)> = receipts
            .iter()
            .map(|r| (r.provider_id.to_string(), r.status.to_string()))
            .collect();
        let calls = receipts.into_iter().map(|r| self.batcher.call(r));
        let Ok(results) = tokio::time::timeout(STORE_WAIT, futures::future::join_all(calls)).await
        else {
            tracing::warn!(waited = ?STORE_WAIT, "receipts not stored in time; answering 503");
            return Err(Refusal::Unavailable);
        };
        let mut refused = false;
        for (result, (provider, status)) in results.into_iter().zip(labels) {
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

#[cfg(test)]
mod tests {
    use super::plausible;
    use chrono::{DateTime, Utc};

    #[test]
    fn only_times_postgresql_stores_and_a_provider_could_mean_are_kept() {
        let at = |text: &str| text.parse::<DateTime<Utc>>().unwrap();
        assert!(plausible(at("2026-11-29T10:00:00Z")));
        assert!(!plausible(at("-5000-01-01T00:00:00Z")));
        assert!(!plausible(at("1970-01-01T00:00:00Z")));
        assert!(!plausible(at("+12000-01-01T00:00:00Z")));
        let whatsapp = DateTime::<Utc>::from_timestamp(-300_000_000_000, 0).unwrap();
        assert!(!plausible(whatsapp));
    }
}
