//! The webhook endpoints, one per API, each naming the Herald provider whose secret signs
//! its receipts:
//!
//! - `POST /webhooks/twilio/{provider}`: Twilio message and call status callbacks, and a
//!   tenant's own number's inbound messages (their STOP and START);
//! - `GET /webhooks/whatsapp/{provider}`: Meta's subscription check;
//!   `POST /webhooks/whatsapp/{provider}`: WhatsApp status notifications;
//! - `POST /webhooks/http/{provider}`: a generic provider's receipts;
//! - `GET /healthz` (the process answers), `GET /readyz` (and reached PostgreSQL at its
//!   last check, and recorded its start as a refusal: the ops listener's state, so that a
//!   flood of it costs the database nothing).
//!
//! Each receipt webhook refused that its provider may have meant is noted
//! ([`crate::refusals`]).

use crate::generic;
use crate::intake::{Intake, Owner, Refusal};
use crate::limits::{self, Limits};
use crate::providers::{Known, Providers, Siblings, Signer};
use crate::refusals::{self, Refusals};
use crate::twilio;
use crate::whatsapp;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::{get, post};
use herald_shared::ops::metrics::RECEIPTS_RESULTS;
use herald_shared::provider_config::{ProviderConfig, ReceiptKey};
use herald_shared::signature;
use herald_store as store;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

#[derive(Clone)]
pub struct AppState {
    /// The ops listener's health, which checks the database on a connection of its own.
    pub health: herald_shared::ops::health::Health,
    pub providers: Providers,
    pub intake: Intake,
    /// What providers call this receiver (no trailing slash): Twilio signs the full URL.
    pub public_url: Arc<str>,
    /// What they called it before (`HERALD_RECEIVER_PREVIOUS_URLS`), no trailing slash.
    pub previous_urls: Arc<[String]>,
    /// Webhooks refused that their providers may have meant, to be recorded.
    pub refusals: Refusals,
    /// For the suppression lists inbound STOPs and STARTs change (rare: one statement each,
    /// not through the receipts' queue).
    pub pool: sqlx::PgPool,
}

/// The largest webhook body taken: Meta documents notifications of up to 3 MB, above axum's
/// default of 2 MiB (a body refused is retried whole, and every status in it is lost).
pub const BODY_LIMIT: usize = 4 * 1024 * 1024;

pub fn router(state: AppState, limits: Limits) -> Router {
    let webhooks = Router::new()
        .route("/webhooks/twilio/{provider}", post(twilio_status))
        .route(
            "/webhooks/whatsapp/{provider}",
            get(whatsapp_verify).post(whatsapp_status),
        )
        .route("/webhooks/http/{provider}", post(generic_receipts))
        // The body is read whole before the handler (`limits`); this is the handler's own
        // extractor's limit, kept equal.
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    // Outside the limits, to see their refusals too.
    let webhooks = limits::apply(webhooks, limits).route_layer(
        axum::middleware::from_fn_with_state(state.refusals.clone(), refusals::watch),
    );
    Router::new()
        .merge(webhooks)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(state)
}

impl AppState {
    async fn provider(&self, id: &str) -> Result<(Uuid, Arc<Known>), Refusal> {
        let id = Uuid::try_parse(id).map_err(|_| Refusal::NotFound)?;
        match self.providers.get(id).await {
            Ok(Some(known)) => Ok((id, known)),
            Ok(None) => Err(Refusal::NotFound),
            Err(error) => {
                tracing::warn!(%error, "cannot read the provider");
                Err(Refusal::Unavailable)
            }
        }
    }

    /// The provider named `id` one of whose secrets `signed` accepts the request's
    /// signature (an `Err` refuses it), and which: the copy in the cache, else, on a
    /// signature it refuses, the provider as stored now (see [`Providers::reread`]).
    async fn signed_by(
        &self,
        id: &str,
        signed: impl Fn(&ProviderConfig) -> Result<(), Refusal>,
    ) -> Result<(Uuid, Arc<Known>, Signer), Refusal> {
        let (provider_id, known) = self.provider(id).await?;
        // Refused, or no secret of this kind: either may have changed since it was read.
        let refusal = match signer(&known, &signed) {
            Ok(signer) => return Ok((provider_id, known, signer)),
            Err(refusal @ (Refusal::Forbidden(_) | Refusal::NotFound)) => refusal,
            Err(other) => return Err(other),
        };
        match self.providers.reread(provider_id).await {
            Ok(Some(fresh)) => {
                let signer = signer(&fresh, &signed).inspect_err(|_| {
                    tracing::warn!(%provider_id, "receipt with a bad signature refused");
                })?;
                Ok((provider_id, fresh, signer))
            }
            Ok(None) => {
                tracing::warn!(%provider_id, "receipt with a bad signature refused");
                Err(refusal)
            }
            // Its secret may have been rotated: the provider is asked to send it again.
            Err(error) => {
                tracing::warn!(%provider_id, %error, "cannot read the provider again");
                Err(Refusal::Unavailable)
            }
        }
    }
}

/// Which of `known`'s secrets `signed` accepts: the one in use, else the one its last
/// rotation replaced, while its grace lasts; the refusal of the one in use if neither.
fn signer(
    known: &Known,
    signed: impl Fn(&ProviderConfig) -> Result<(), Refusal>,
) -> Result<Signer, Refusal> {
    let mut first_refusal = None;
    for (signer, config) in known.signing() {
        match signed(config) {
            Ok(()) => return Ok(signer),
            Err(refusal) => {
                first_refusal.get_or_insert(refusal);
            }
        }
    }
    Err(first_refusal.unwrap_or(Refusal::NotFound))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn twilio_status(
    State(app): State<AppState>,
    Path(provider): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Refusal> {
    let params = twilio::form(&body)?;
    let path = uri.path_and_query().map_or("", |p| p.as_str());
    // Callbacks of requests made before the receiver's URL changed are signed with the URL
    // they were given then.
    let urls: Vec<String> = std::iter::once(&*app.public_url)
        .chain(app.previous_urls.iter().map(String::as_str))
        .map(|base| format!("{base}{path}"))
        .collect();
    let (provider_id, known, _) = app
        .signed_by(&provider, |config| {
            let Some(ReceiptKey::Twilio(token)) = config.receipts() else {
                return Err(Refusal::NotFound);
            };
            let signature = header(&headers, "x-twilio-signature")
                .ok_or(Refusal::Unauthorized("X-Twilio-Signature is missing"))?;
            if !urls
                .iter()
                .any(|url| signature::verify_twilio(token.expose(), url, &params, signature))
            {
                return Err(Refusal::Forbidden("X-Twilio-Signature does not match"));
            }
            Ok(())
        })
        .await?;
    let query = |name: &str| {
        uri.query().and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        })
    };
    let reference = query("ref");
    let seq = query("seq").and_then(|s| s.parse().ok());
    if let Some(consent) = twilio::consent(&params) {
        record_consent(&app, provider_id, known.tenant_id, consent).await?;
    }
    if let Some(receipt) = twilio::receipt(provider_id, &params, reference.as_deref(), seq)? {
        let owner = Owner::of(provider_id, known.tenant_id);
        // Twilio sends a status callback once (a failed connection aside).
        app.intake.store(owner, vec![receipt], false).await?;
    }
    Ok(StatusCode::OK)
}

/// An inbound STOP or START to a tenant's own Twilio number, on its suppression list for
/// SMS. A shared provider's number sends for several tenants, and which of them the
/// recipient meant cannot be told: Twilio's own refusal (21610) puts it on the list of each
/// tenant that sends to it next.
async fn record_consent(
    app: &AppState,
    provider_id: Uuid,
    tenant: Option<Uuid>,
    consent: twilio::Consent,
) -> Result<(), Refusal> {
    let Some(tenant) = tenant else {
        tracing::info!(%provider_id, "an opt-out or opt-in to a shared provider's number; left to the provider's own refusal");
        return Ok(());
    };
    let (address, opted_out) = match consent {
        twilio::Consent::OptedOut { address, keyword } => {
            (address, Some(format!("the recipient replied {keyword}")))
        }
        twilio::Consent::OptedIn { address } => (address, None),
    };
    // The number itself stays out of the log, as recipients' addresses do.
    let stop = opted_out.is_some();
    let consent = store::suppressions::Consent {
        tenant_id: tenant,
        channel: herald_shared::domain::Channel::Sms,
        address,
        opted_out,
        said_at: chrono::Utc::now(),
    };
    match app
        .intake
        .record_consent(Owner::Consents(tenant), consent)
        .await
    {
        Ok(()) => {
            tracing::info!(%provider_id, tenant_id = %tenant, stop, "a recipient's STOP or START recorded");
            Ok(())
        }
        Err(refusal) => {
            tracing::warn!(%provider_id, tenant_id = %tenant, stop, ?refusal, "a recipient's STOP or START not recorded now; answering 503");
            Err(refusal)
        }
    }
}

async fn whatsapp_verify(
    State(app): State<AppState>,
    Path(provider): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<String, Refusal> {
    let (_, known) = app.provider(&provider).await?;
    let Some(ReceiptKey::Meta { .. }) = known.config.receipts() else {
        return Err(Refusal::NotFound);
    };
    let field = |name: &str| {
        query
            .get(name)
            .ok_or_else(|| Refusal::BadRequest(format!("{name} is required")))
    };
    let (mode, token, challenge) = (
        field("hub.mode")?,
        field("hub.verify_token")?,
        field("hub.challenge")?,
    );
    // The replaced verify token too: a subscription check may be on its way when it changes.
    let matches = known.signing().any(|(_, config)| {
        matches!(config.receipts(), Some(ReceiptKey::Meta { verify_token: Some(expected), .. })
            if signature::same_secret(expected.expose(), token))
    });
    if mode != "subscribe" || !matches {
        return Err(Refusal::Forbidden("hub.verify_token does not match"));
    }
    Ok(challenge.clone())
}

/// The most other numbers of its Meta app a notification's statuses are read from the
/// database for (numbers remembered cost no read). Meta sends a number's statuses in
/// notifications of their own or a few together; anyone holding the app's secret (a tenant,
/// for its own provider) can sign one naming thousands, each a read, and statuses of the
/// numbers past this many are dropped (and counted) instead.
const MAX_NUMBERS_READ: usize = 8;

/// The one of `candidates` whose receipts are signed with `app_secret`: by the secret in
/// use, else by the one its last rotation replaced, while its grace lasts (one app's
/// providers are rotated one after another; a provider moved to another app within its
/// grace gives way to the one that uses the secret now).
fn signed_alike(candidates: Siblings, app_secret: &str) -> Option<Uuid> {
    let signs = |config: &ProviderConfig| {
        matches!(config.receipts(), Some(ReceiptKey::Meta { app_secret: secret, .. })
            if signature::same_secret(secret.expose(), app_secret))
    };
    [Signer::Current, Signer::Replaced]
        .into_iter()
        .find_map(|wanted| {
            candidates.iter().find_map(|(id, known)| {
                known
                    .signing()
                    .any(|(signer, config)| signer == wanted && signs(config))
                    .then_some(*id)
            })
        })
}

async fn whatsapp_status(
    State(app): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Refusal> {
    let (provider_id, known, signer) = app
        .signed_by(&provider, |config| {
            let Some(ReceiptKey::Meta { app_secret, .. }) = config.receipts() else {
                return Err(Refusal::NotFound);
            };
            let signature = header(&headers, "x-hub-signature-256")
                .ok_or(Refusal::Unauthorized("X-Hub-Signature-256 is missing"))?;
            if !signature::verify_hub(app_secret.expose(), &body, signature) {
                return Err(Refusal::Forbidden("X-Hub-Signature-256 does not match"));
            }
            Ok(())
        })
        .await?;
    // The secret that signed it finds the numbers' providers of the same app.
    let (Some(ReceiptKey::Meta { app_secret, .. }), ProviderConfig::WhatsApp(whatsapp)) =
        (known.signed_by(signer).receipts(), &known.config)
    else {
        return Err(Refusal::NotFound);
    };
    let mut receipts = Vec::new();
    let mut numbers: HashMap<String, Option<Uuid>> = HashMap::new();
    let mut reads = 0;
    let statuses = whatsapp::statuses(provider_id, &body)?;
    if statuses.unreadable > 0 {
        // Answered 200 all the same (Meta would send the same again, unreadable again), but
        // one may be a lost request's status: its owner's lost answers wait, as after a
        // refused webhook.
        metrics::counter!(RECEIPTS_RESULTS, "result" => "unreadable")
            .increment(statuses.unreadable as u64);
        app.refusals.note(provider_id, chrono::Utc::now());
    }
    for numbered in statuses.read {
        let mut receipt = numbered.receipt;
        if let Some(number) = numbered.phone_number_id
            && number != whatsapp.phone_number_id
        {
            // Another number of the same Meta app: its own provider, if the same tenant
            // has one signed by this app's secret.
            if !numbers.contains_key(&number) {
                let remembered =
                    app.remembered_sibling(&number, known.tenant_id, app_secret.expose());
                let sibling = match remembered {
                    Some(sibling) => Some(sibling),
                    // Past the reads, one remembered from longer ago still routes its status.
                    None if reads >= MAX_NUMBERS_READ
                        && let Some(stale) =
                            app.stale_sibling(&number, known.tenant_id, app_secret.expose()) =>
                    {
                        Some(stale)
                    }
                    None if reads >= MAX_NUMBERS_READ => {
                        // Dropped unread, answered 200 (Meta would send the same again):
                        // one may be a lost request's status, so the owner's numbers count
                        // it as a refused webhook, and their lost answers wait.
                        metrics::counter!(RECEIPTS_RESULTS, "result" => "numbers_past_limit")
                            .increment(1);
                        app.refusals.note(provider_id, chrono::Utc::now());
                        continue;
                    }
                    None => {
                        reads += 1;
                        app.sibling(&number, known.tenant_id, app_secret.expose())
                            .await?
                    }
                };
                numbers.insert(number.clone(), sibling);
            }
            let Some(sibling) = numbers[&number] else {
                // None: no message of Herald's. Kept as this provider's, it would be listed
                // among its tenant's orphans, and its events would count as this provider
                // reporting on later messages, which decides when a lost answer here is
                // sent again (`store::receipts::store`).
                tracing::debug!(%provider_id, number, "status of a number no provider of this tenant has: dropped");
                metrics::counter!(RECEIPTS_RESULTS, "result" => "unknown_number").increment(1);
                continue;
            };
            receipt.provider_id = sibling;
        }
        receipts.push(receipt);
    }
    let owner = Owner::of(provider_id, known.tenant_id);
    app.intake.store(owner, receipts, true).await?;
    Ok(StatusCode::OK)
}

impl AppState {
    /// The WhatsApp provider of phone number `number`, of the same owner (`tenant`, or the
    /// operator), whose app secret is `app_secret`, as remembered (no read).
    fn remembered_sibling(
        &self,
        number: &str,
        tenant: Option<Uuid>,
        app_secret: &str,
    ) -> Option<Uuid> {
        self.providers
            .remembered_by_number(number, tenant, false)
            .and_then(|found| signed_alike(found, app_secret))
    }

    /// As [`Self::remembered_sibling`], however long ago it was read.
    fn stale_sibling(&self, number: &str, tenant: Option<Uuid>, app_secret: &str) -> Option<Uuid> {
        self.providers
            .remembered_by_number(number, tenant, true)
            .and_then(|found| signed_alike(found, app_secret))
    }

    /// As [`Self::remembered_sibling`], read from the database (the secret may have been
    /// rotated since it was remembered). When no read can be had at once (others' reads of
    /// unknown numbers take the turns), what was remembered, however old, rather than a
    /// refusal.
    async fn sibling(
        &self,
        number: &str,
        tenant: Option<Uuid>,
        app_secret: &str,
    ) -> Result<Option<Uuid>, Refusal> {
        match self.providers.whatsapp_by_number(number, tenant).await {
            Ok(found) => Ok(signed_alike(found, app_secret)),
            Err(_) => self
                .stale_sibling(number, tenant, app_secret)
                .map(Some)
                .ok_or(Refusal::Unavailable),
        }
    }
}

async fn generic_receipts(
    State(app): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Refusal> {
    let (provider_id, known, _) = app
        .signed_by(&provider, |config| {
            let Some(ReceiptKey::Herald(secret)) = config.receipts() else {
                return Err(Refusal::NotFound);
            };
            let signature = header(&headers, signature::HERALD_SIGNATURE_HEADER)
                .ok_or(Refusal::Unauthorized("X-Herald-Signature is missing"))?;
            if !signature::verify_hub(secret.expose(), &body, signature) {
                return Err(Refusal::Forbidden("X-Herald-Signature does not match"));
            }
            Ok(())
        })
        .await?;
    let read = generic::receipts(provider_id, &body)?;
    if read.unreadable > 0 {
        // As WhatsApp's: the others are kept, and one may be a lost request's status (its
        // owner's lost answers wait, as after a refused webhook).
        tracing::warn!(%provider_id, unreadable = read.unreadable, "receipts in a list that cannot be read; skipped");
        metrics::counter!(RECEIPTS_RESULTS, "result" => "unreadable")
            .increment(read.unreadable as u64);
        app.refusals.note(provider_id, chrono::Utc::now());
    }
    let owner = Owner::of(provider_id, known.tenant_id);
    app.intake.store(owner, read.receipts, true).await?;
    Ok(StatusCode::OK)
}

async fn ready(State(app): State<AppState>) -> (StatusCode, &'static str) {
    let readiness = app.health.readiness();
    if readiness.ready {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, readiness.status)
    }
}
