//! Webhooks refused that their provider may have meant: a 5xx (no room, the database
//! away, no answer in time) or a body refused whole (400, 408, 413). The provider sends each
//! again later, and until it does, what it held is unknown. A recipient whose request's
//! answer was lost, at a provider that cannot be asked about a message, is sent again only
//! once the provider's receipts speak of later messages and never of it
//! (`herald_store::recipients::reconcile::receipts_since`): a refused webhook may have held
//! its receipt, so refusals are recorded per provider, and such a recipient waits instead.
//!
//! Recorded in memory as they happen (a refusal may come from a database that is away) and
//! written once a second, the latest per provider, until the write goes through. A
//! receiver's start counts as a refusal of every such provider: while none listened,
//! webhooks went unanswered, and only the providers know which.

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};
use herald_shared::ops::health::Health;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The readiness check that passes once this start is recorded as a refusal.
pub const START_RECORDED: &str = "start recorded";

/// How often refusals are written.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// The most providers held unwritten: refusals come before any signature is checked, so a
/// flood naming made-up providers while the database is away must not grow this for ever.
/// Past it, new providers' refusals are dropped (those held are still kept current).
const MAX_PENDING: usize = 10_000;

/// The latest refusal per provider not yet written.
#[derive(Debug, Clone, Default)]
pub struct Refusals(Arc<Mutex<HashMap<Uuid, DateTime<Utc>>>>);

impl Refusals {
    pub fn note(&self, provider: Uuid, at: DateTime<Utc>) {
        let mut pending = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(latest) = pending.get_mut(&provider) {
            *latest = (*latest).max(at);
        } else if pending.len() < MAX_PENDING {
            pending.insert(provider, at);
        }
    }

    fn take(&self) -> HashMap<Uuid, DateTime<Utc>> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Writes what is pending; kept for the next try if the write fails.
    pub async fn flush(&self, pool: &PgPool) {
        let taken = self.take();
        if taken.is_empty() {
            return;
        }
        let (providers, times): (Vec<Uuid>, Vec<DateTime<Utc>>) = taken.iter().unzip();
        let written = herald_shared::db::within(herald_store::receipts::note_refused(
            pool, &providers, &times,
        ))
        .await;
        if let Err(error) = written {
            tracing::warn!(%error, providers = taken.len(), "cannot record refused webhooks yet");
            for (provider, at) in taken {
                self.note(provider, at);
            }
        }
    }
}

/// Writes refusals until `stop`, and once more then (cancelled once the server has
/// answered its last request, so that what those refused is written too).
pub async fn keep_writing(refusals: Refusals, pool: PgPool, stop: CancellationToken) {
    let mut every = tokio::time::interval(FLUSH_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => refusals.flush(&pool).await,
            () = stop.cancelled() => {
                refusals.flush(&pool).await;
                return;
            }
        }
    }
}

/// Records this receiver's start as a refusal of every provider that cannot be asked about
/// a message (see `herald_store::receipts::note_receiver_started`), trying again each
/// second until it is written (the database may be away as the receiver starts) or `stop`.
/// Until then the receiver is not ready ([`START_RECORDED`]): a provider created meanwhile
/// would take the late write for a refusal after its first requests.
pub async fn note_start(pool: PgPool, health: Health, stop: CancellationToken) {
    loop {
        match herald_store::receipts::note_receiver_started(&pool).await {
            Ok(providers) => {
                tracing::info!(providers, "this start recorded as a refusal of receipts");
                health.report(START_RECORDED, Ok(()));
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot record this start yet; trying again");
                health.report(START_RECORDED, Err(format!("not recorded yet: {error}")));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(FLUSH_EVERY) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Whether a webhook answered `status` was refused after its provider may have meant it.
/// A missing or wrong signature (401, 403) or an unknown provider (404) is no provider's.
pub fn refused(status: StatusCode) -> bool {
    status.is_server_error()
        || matches!(
            status,
            StatusCode::BAD_REQUEST | StatusCode::REQUEST_TIMEOUT | StatusCode::PAYLOAD_TOO_LARGE
        )
}

/// Marks a refusal of a body no provider sends (larger than any webhook of its API): anyone
/// may post one naming any provider, before any signature is checked, so it is not noted as
/// the provider's (each would hold every lost answer of that provider back 15 minutes). A
/// body cut off, or one that came too slowly, may have been a provider's, and is noted.
#[derive(Debug, Clone, Copy)]
pub struct NoProviderSends;

/// Marks `response` as [`NoProviderSends`].
pub fn no_provider_sends(mut response: Response) -> Response {
    response.extensions_mut().insert(NoProviderSends);
    response
}

/// Whether `response` refused a webhook its provider may have meant.
fn noted(response: &Response) -> bool {
    refused(response.status()) && response.extensions().get::<NoProviderSends>().is_none()
}

/// The provider a webhook's path names (`/webhooks/{api}/{provider}`).
fn provider_in(path: &str) -> Option<Uuid> {
    let mut parts = path.strip_prefix("/webhooks/")?.split('/');
    let (_api, provider) = (parts.next()?, parts.next()?);
    Uuid::try_parse(provider).ok()
}

/// Notes each receipt webhook (a `POST`) refused, by the provider its path names.
pub async fn watch(State(refusals): State<Refusals>, request: Request, next: Next) -> Response {
    let provider = (request.method() == Method::POST)
        .then(|| provider_in(request.uri().path()))
        .flatten();
    let response = next.run(request).await;
    if let Some(provider) = provider
        && noted(&response)
    {
        refusals.note(provider, Utc::now());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_a_provider_may_have_meant_are_told_by_status_and_path() {
        let id = Uuid::from_u128(7);
        assert_eq!(provider_in(&format!("/webhooks/whatsapp/{id}")), Some(id));
        assert_eq!(provider_in(&format!("/webhooks/http/{id}/")), Some(id));
        assert_eq!(provider_in("/webhooks/whatsapp/not-a-provider"), None);
        assert_eq!(provider_in("/healthz"), None);
        for status in [503, 500, 400, 408, 413] {
            assert!(refused(StatusCode::from_u16(status).unwrap()), "{status}");
        }
        for status in [200, 401, 403, 404] {
            assert!(!refused(StatusCode::from_u16(status).unwrap()), "{status}");
        }
    }

    #[test]
    fn a_body_no_provider_sends_is_noted_for_none() {
        let refusal = |status: u16| {
            Response::builder()
                .status(status)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        assert!(noted(&refusal(400)));
        assert!(!noted(&no_provider_sends(refusal(400))));
        assert!(!noted(&no_provider_sends(refusal(413))));
        assert!(!noted(&refusal(200)));
    }

    #[test]
    fn the_latest_refusal_of_each_provider_is_kept() {
        let refusals = Refusals::default();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let at = |s: i64| DateTime::<Utc>::from_timestamp(s, 0).unwrap();
        refusals.note(a, at(20));
        refusals.note(a, at(10));
        refusals.note(b, at(5));
        let taken = refusals.take();
        assert_eq!((taken[&a], taken[&b]), (at(20), at(5)));
        assert!(refusals.take().is_empty());
        // Bounded: past the most held, new providers are dropped; those held kept current.
        for i in 0..MAX_PENDING as u128 + 10 {
            refusals.note(Uuid::from_u128(1_000 + i), at(1));
        }
        refusals.note(Uuid::from_u128(1_000), at(9));
        let taken = refusals.take();
        assert_eq!(taken.len(), MAX_PENDING);
        assert_eq!(taken[&Uuid::from_u128(1_000)], at(9));
    }
}
