//! Taking receipts in: why a webhook is refused, and the batched, durable store behind the
//! `2xx`. A provider retries a webhook that is not answered `2xx`, so a receipt is answered
//! only once it is committed, and every answer is fast: receipts arriving together are
//! stored (and applied to their recipients) in one statement. Recipients' STOP and START
//! (Twilio's inbound messages, sent once as its status callbacks are) go the same way.

use crate::fair_queue::{Crowded, FairQueue};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Datelike, Utc};
use herald_shared::db::within;
use herald_shared::ops::metrics::{CONSENTS, RECEIPTS, RECEIPTS_REFUSED, RECEIPTS_RESULTS};
use herald_store::receipts::{self, Receipt};
use herald_store::suppressions::{self, Consent, ConsentsRecorded};
use serde_json::json;
use sqlx::PgPool;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};
use uuid::Uuid;

/// Why a webhook is not taken. Nothing is stored for any of these, but for receipts and
/// consents kept while the database is away ([`Refusal::Unavailable`]).
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
    /// 413: larger than any webhook of the provider's API (read before any signature is
    /// checked: not noted as the provider's refusal).
    TooLarge(&'static str),
    /// 503: the webhook could not be stored (yet: one that came while the database was
    /// away is kept and stored once it is back); the provider may retry.
    Unavailable,
    /// 503: its owner has too many webhooks waiting to be stored (see
    /// [`MAX_WAITING_PER_OWNER`]); nothing of the request was stored.
    Crowded,
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
            Refusal::TooLarge(why) => {
                metrics::counter!(RECEIPTS_REFUSED, "reason" => "too_large").increment(1);
                let response = (StatusCode::PAYLOAD_TOO_LARGE, Json(json!({ "error": why })));
                return crate::refusals::no_provider_sends(response.into_response());
            }
            Refusal::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not_stored",
                "cannot store webhooks now; retry later".to_owned(),
            ),
            Refusal::Crowded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "crowded",
                "too many of this owner's webhooks are waiting to be stored; retry later"
                    .to_owned(),
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

/// Most receipts one statement stores. One statement runs at a time: receipts that come
/// while it runs make the next batch. (Two at a time, as the worker does, left the second
/// with a receipt or two each time: more, smaller statements, and fewer receipts a second —
/// measured 5,300 against 6,500 a second with 64 in flight.)
const MAX_BATCH: usize = 500;
/// Longest a request waits for its receipts to be stored before it is answered 503 (they
/// are still stored when their statement runs; the provider's retry is then a duplicate).
/// Twilio gives up on a callback after 15 s, and a statement held up (a lock, a database
/// that stopped answering) must not hold every provider's connections open with it.
const STORE_WAIT: Duration = Duration::from_secs(10);

/// What became of a statement's receipts: the metric operators watch for receipts that do
/// not find their messages (parked, later orphaned) and for providers that send copies.
fn count_results(stored: &receipts::Stored) {
    tracing::debug!(
        received = stored.received,
        duplicates = stored.duplicates,
        parked = stored.parked,
        applied = stored.applied,
        "receipts stored"
    );
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

/// Whose webhooks share a turn of the store: a tenant's providers' receipts together (a
/// tenant could otherwise take a turn per provider it creates), one operator's provider's,
/// or a tenant's recipients' STOP and START (kept apart from its receipts: a campaign's
/// callbacks kept through a long outage must not fill the bound that its recipients'
/// STOPs, never sent again either, need).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    Tenant(Uuid),
    Operator(Uuid),
    Consents(Uuid),
}

impl Owner {
    /// The owner of `provider`'s receipts: its tenant's, or the operator's provider itself.
    pub fn of(provider: Uuid, tenant: Option<Uuid>) -> Self {
        tenant.map_or(Self::Operator(provider), Self::Tenant)
    }
}

/// Most receipts one owner may have waiting for the store at once: ten statements' worth,
/// about a second and a half of the store's pace. More (bodies of up to 1,000 receipts, on
/// many connections) are refused at once with 503: the provider sends them again, and its
/// requests hold no place while others wait. A provider that posts receipts one at a time
/// (Twilio, which does not send one again) never comes near it: its requests are bounded by
/// the receiver's request places first. A tenant's recipients' STOP and START have a bound of
/// their own ([`Owner::Consents`]).
const MAX_WAITING_PER_OWNER: usize = 10 * MAX_BATCH;

/// Most receipts waiting in all before each owner is held to an equal part of it: requests
/// answered 503 at their deadline leave their receipts waiting, and many owners each at
/// their own bound would otherwise hold the receiver's memory without end.
const MAX_WAITING: usize = 100 * MAX_BATCH;

type Answer = oneshot::Sender<Result<(), ()>>;

/// What a webhook brings to be stored.
enum Input {
    Receipt(Receipt),
    /// A recipient's STOP or START: lost to an outage, a STOP would leave the recipient
    /// messaged through every other provider, a START refused until the tenant noticed.
    Consent(Consent),
}

/// Receipts and consents waiting for their statements, and the store task's wake-up.
struct Waiting {
    queue: Mutex<FairQueue<Owner, (Input, Answer)>>,
    arrived: Notify,
    /// The last statement found the database away (down, restarting, out of reach): the
    /// store task is trying its batch again, and receipts arriving meanwhile are answered
    /// 503 at once, kept for it only if their provider does not send them again (Twilio's,
    /// and recipients' STOP and START).
    away: AtomicBool,
    /// Receipts and consents of the batch the store task is storing (taken from the queue).
    storing: AtomicUsize,
    /// The receiver is stopping ([`Intake::drain`]): a batch the database was away for is
    /// tried again at once, then every [`AWAY_PAUSE`], not after a pause grown long.
    stopping: AtomicBool,
    hurry: Notify,
}

/// The first pause before a batch the database was away for is tried again, doubled each
/// time up to [`AWAY_PAUSE_MAX`].
const AWAY_PAUSE: Duration = Duration::from_millis(250);
const AWAY_PAUSE_MAX: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Intake {
    waiting: Arc<Waiting>,
}

impl Intake {
    /// Starts the store task: one batch at a time, each taking up to [`MAX_BATCH`] receipts
    /// and consents shared out among the owners with some waiting.
    pub fn start(pool: PgPool) -> Self {
        let waiting = Arc::new(Waiting {
            queue: Mutex::new(FairQueue::new(MAX_WAITING_PER_OWNER, MAX_WAITING)),
            arrived: Notify::new(),
            away: AtomicBool::new(false),
            storing: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            hurry: Notify::new(),
        });
        let task = waiting.clone();
        tokio::spawn(async move {
            loop {
                let jobs = {
                    let mut queue = task.lock();
                    let jobs = queue.take(MAX_BATCH);
                    task.storing.store(jobs.len(), Ordering::Relaxed);
                    jobs
                };
                if jobs.is_empty() {
                    task.arrived.notified().await;
                    continue;
                }
                let mut receipts = Pending::default();
                let mut consents = Pending::default();
                for (input, answer) in jobs {
                    match input {
                        Input::Receipt(receipt) => receipts.push(receipt, answer),
                        Input::Consent(consent) => consents.push(consent, answer),
                    }
                }
                // While the database is away the batch is kept and tried again, its requests
                // answered 503 at their deadline meanwhile: a provider that sends a webhook
                // only once (Twilio's status callbacks and inbound messages) would otherwise
                // lose them to any outage, a restart or a failover. What waits stays within
                // the queue's bounds; past them, webhooks are refused whole. Each part is
                // answered once stored, and not stored again (a receipt stored twice is a
                // duplicate); the second is not tried while the first finds the database
                // away.
                let mut pause = AWAY_PAUSE;
                while !(receipts.store(&pool).await && consents.store(&pool).await) {
                    task.away.store(true, Ordering::Relaxed);
                    let wait = if task.stopping.load(Ordering::Relaxed) {
                        AWAY_PAUSE
                    } else {
                        pause
                    };
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = task.hurry.notified() => {}
                    }
                    pause = (pause * 2).min(AWAY_PAUSE_MAX);
                }
                task.away.store(false, Ordering::Relaxed);
                task.storing.store(0, Ordering::Relaxed);
            }
        });
        Self { waiting }
    }

    /// Stores `receipts` durably (each in whatever batch it joins), `owner`'s (see
    /// [`Owner`]); `Err` if any could not be, so the provider sends them again (what was
    /// stored is then a duplicate), or if `owner` has too many waiting already (nothing of
    /// these is stored then). While the database is away, receipts of a provider that
    /// sends a refused webhook again (`sent_again`: Meta, generic providers) are refused
    /// at once and not kept: each of its resends would otherwise add another copy, and the
    /// copies would crowd out the owner's receipts that no provider sends again (Twilio's),
    /// which are kept.
    pub async fn store(
        &self,
        owner: Owner,
        mut receipts: Vec<Receipt>,
        sent_again: bool,
    ) -> Result<(), Refusal> {
        if sent_again && self.waiting.away.load(Ordering::Relaxed) {
            return Err(Refusal::Unavailable);
        }
        for receipt in &mut receipts {
            receipt.provider_time = receipt.provider_time.filter(|&t| plausible(t));
        }
        let labels: Vec<(String, String)> = receipts
            .iter()
            .map(|r| (r.provider_id.to_string(), r.status.to_string()))
            .collect();
        let stored = self
            .take_in(owner, receipts.into_iter().map(Input::Receipt).collect())
            .await?;
        for (stored, (provider, status)) in stored.iter().zip(labels) {
            if *stored {
                metrics::counter!(RECEIPTS, "provider" => provider, "status" => status)
                    .increment(1);
            }
        }
        if stored.contains(&false) {
            return Err(Refusal::Unavailable);
        }
        Ok(())
    }

    /// Records a recipient's STOP or START durably, in the order it came among its owner's:
    /// kept while the database is away, as a Twilio receipt is (`Err` then, as for one
    /// that could not be recorded: Twilio does not send an inbound message again, but it
    /// tries the number's fallback URL, if any, and its log shows the failure).
    pub async fn record_consent(&self, owner: Owner, consent: Consent) -> Result<(), Refusal> {
        match self.take_in(owner, vec![Input::Consent(consent)]).await? {
            recorded if recorded.contains(&false) => Err(Refusal::Unavailable),
            _ => Ok(()),
        }
    }

    /// Queues `inputs` for the store task and waits for them: whether each was stored.
    async fn take_in(&self, owner: Owner, inputs: Vec<Input>) -> Result<Vec<bool>, Refusal> {
        let (jobs, answers): (Vec<(Input, Answer)>, Vec<_>) = inputs
            .into_iter()
            .map(|input| {
                let (answer, answered) = oneshot::channel();
                ((input, answer), answered)
            })
            .unzip();
        if self.waiting.lock().push(owner, jobs.into_iter()) == Err(Crowded) {
            tracing::warn!(
                ?owner,
                "too many of this owner's webhooks waiting; answering 503"
            );
            return Err(Refusal::Crowded);
        }
        self.waiting.arrived.notify_one();
        if self.waiting.away.load(Ordering::Relaxed) {
            // Kept, and stored once the database is back.
            return Err(Refusal::Unavailable);
        }
        let Ok(results) =
            tokio::time::timeout(STORE_WAIT, futures::future::join_all(answers)).await
        else {
            tracing::warn!(waited = ?STORE_WAIT, "webhooks not stored in time; answering 503");
            return Err(Refusal::Unavailable);
        };
        Ok(results
            .into_iter()
            .map(|result| matches!(result, Ok(Ok(()))))
            .collect())
    }
}

impl Intake {
    /// The receiver is stopping: a batch the database was away for is tried again at once
    /// (or as soon as its attempt in progress ends), then every [`AWAY_PAUSE`].
    pub fn stopping(&self) {
        self.waiting.stopping.store(true, Ordering::Relaxed);
        // A permit kept if the store task is not waiting now: its next pause ends at once.
        self.waiting.hurry.notify_one();
    }

    /// Waits, `within` at most, until every receipt and consent taken is stored: those kept
    /// while the database was away (Twilio's, whose webhooks are answered 503 then but never
    /// sent again) would otherwise be lost with the process at a stop. Answers how many were
    /// still waiting.
    pub async fn drain(&self, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        self.stopping();
        loop {
            let left = self.waiting.lock().len() + self.waiting.storing.load(Ordering::Relaxed);
            if left == 0 || tokio::time::Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Waiting {
    fn lock(&self) -> std::sync::MutexGuard<'_, FairQueue<Owner, (Input, Answer)>> {
        // The queue is left whole by every operation, even one that panicked.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the store task stores in one statement a batch.
trait Stored: Sized {
    type Done;
    async fn store(pool: &PgPool, batch: &[Self]) -> Result<Self::Done, sqlx::Error>;
    /// Counts what a statement stored.
    fn count(batch: &[Self], done: &Self::Done);
}

impl Stored for Receipt {
    type Done = receipts::Stored;
    async fn store(pool: &PgPool, batch: &[Self]) -> Result<Self::Done, sqlx::Error> {
        receipts::store(pool, batch).await
    }
    fn count(_: &[Self], done: &Self::Done) {
        count_results(done);
    }
}

impl Stored for Consent {
    type Done = ConsentsRecorded;
    async fn store(pool: &PgPool, batch: &[Self]) -> Result<Self::Done, sqlx::Error> {
        suppressions::record_consents(pool, batch).await
    }
    fn count(batch: &[Self], done: &Self::Done) {
        count_consents(batch, done);
    }
}

/// Items of one kind taken for a statement, and their requests' answers until sent.
struct Pending<T> {
    items: Vec<T>,
    answers: Option<Vec<Answer>>,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            answers: Some(Vec::new()),
        }
    }
}

impl<T: Stored> Pending<T> {
    fn push(&mut self, item: T, answer: Answer) {
        self.items.push(item);
        self.answers.get_or_insert_default().push(answer);
    }

    /// Stores the items and answers their requests, unless done already: `false` if the
    /// database was away (tried again later).
    async fn store(&mut self, pool: &PgPool) -> bool {
        let Some(answers) = self.answers.take() else {
            return true;
        };
        let Some(results) = store_batch(pool, &self.items).await else {
            self.answers = Some(answers);
            return false;
        };
        for (answer, result) in answers.into_iter().zip(results) {
            // The request may have been answered 503 at its deadline meanwhile.
            let _ = answer.send(result);
        }
        true
    }
}

/// Stores one batch in one statement: an answer per item, or `None` if the database was
/// away (the same statement may pass later: see `is_transient`), then or while storing
/// the items one by one (each may be stored again then: a receipt as a duplicate, a
/// consent to no effect). An empty batch is stored at once.
async fn store_batch<T: Stored>(pool: &PgPool, batch: &[T]) -> Option<Vec<Result<(), ()>>> {
    if batch.is_empty() {
        return Some(Vec::new());
    }
    // Bounded: on a connection that leads nowhere (a failover), the one statement would
    // hold every later webhook for as long as TCP takes to notice.
    match within(T::store(pool, batch)).await {
        Ok(done) => {
            T::count(batch, &done);
            Some(vec![Ok(()); batch.len()])
        }
        // A statement PostgreSQL refused for what it holds (not an outage, a restart or a
        // deadlock, which would fail each item alone as well and only take 500 statements
        // to say so): one item it cannot take must not fail the others in its batch, other
        // tenants' among them, so each is stored alone.
        Err(error)
            if batch.len() > 1
                && matches!(error, sqlx::Error::Database(_))
                && !herald_shared::db::is_transient(&error) =>
        {
            tracing::warn!(%error, count = batch.len(), "a batch refused; storing its items one by one");
            let mut results = Vec::with_capacity(batch.len());
            for item in batch.chunks(1) {
                let alone = within(T::store(pool, item)).await;
                match &alone {
                    Ok(done) => T::count(item, done),
                    Err(error) if herald_shared::db::is_transient(error) => {
                        tracing::warn!(%error, count = batch.len(), "cannot store webhooks now; keeping them to try again");
                        return None;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot store a webhook's item; answering 503")
                    }
                }
                results.push(alone.map(drop).map_err(drop));
            }
            Some(results)
        }
        Err(error) if herald_shared::db::is_transient(&error) => {
            tracing::warn!(%error, count = batch.len(), "cannot store webhooks now; keeping them to try again");
            None
        }
        Err(error) => {
            tracing::warn!(%error, count = batch.len(), "cannot store webhooks; answering 503");
            Some(vec![Err(()); batch.len()])
        }
    }
}

/// Logs and counts a statement's STOPs and STARTs recorded.
fn count_consents(batch: &[Consent], recorded: &ConsentsRecorded) {
    tracing::debug!(
        count = batch.len(),
        listed = recorded.listed,
        taken_off = recorded.taken_off,
        "recipients' STOP or START recorded"
    );
    for consent in batch {
        let said = if consent.opted_out.is_some() {
            "stop"
        } else {
            "start"
        };
        metrics::counter!(CONSENTS, "said" => said).increment(1);
    }
}
