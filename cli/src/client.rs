//! A typed client for the admin API (`/api/v1`, see `admin/API.md`): one method per endpoint.

use std::marker::PhantomData;
use std::time::Duration;

use reqwest::{Body, RequestBuilder, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use crate::model::{
    Campaign, Contact, DefaultProvider, Erasure, ErrorBody, ErrorCount, Key, Message, NewCampaign,
    NewErasure, NewKey, NewMessage, NewProvider, NewSegment, NewSuppressions, NewTenant, Page,
    Progress, Provider, Recipient, RotatedKey, Segment, SegmentCount, Suppression,
    SuppressionsAdded, Tenant, UploadSummary, Webhook, WebhookEvent,
};

/// Bounds a hung server rather than a slow action: starting a segment campaign materializes
/// its whole audience within the request. Longer than the server's own deadline
/// (`HERALD_ADMIN_REQUEST_TIMEOUT_MS`, 300 s by default), whose 503 says more than a
/// timeout here would.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(310);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Progress polls are cheap on the server; a slow one is better retried than waited for.
const POLL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A 4xx: the server understood and said no. Nothing was written. `retry_after`: the
    /// seconds its `Retry-After` asked to wait (a 429's quota or busy slots).
    #[error("{}{}", refused_message(*.status, .body), retry_hint(*.retry_after))]
    Refused {
        status: u16,
        body: ErrorBody,
        retry_after: Option<u64>,
    },
    #[error("cannot reach the admin server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// A request that changes something reached the server (or may have), and its answer
    /// never came whole: whether it was carried out cannot be told here.
    #[error(
        "no answer from the admin server at {url} to the {method} ({reason}); it may have been \
         carried out: look (list or show) before repeating it (a message sent or a campaign \
         created with --idempotency-key is safe to send again)"
    )]
    NoAnswer {
        url: String,
        method: String,
        reason: String,
    },
    /// A 5xx.
    #[error("the admin server failed (HTTP {status}): {message}{}", retry_hint(*.retry_after))]
    Server {
        status: u16,
        message: String,
        retry_after: Option<u64>,
    },
    /// A success status whose body is not the JSON the API documents.
    #[error("unexpected response from the admin server: {0}")]
    UnexpectedResponse(String),
}

impl ApiError {
    /// The process exit code for this error: 1 when the API refused, 3 when it could not
    /// answer properly (network, 5xx, garbage) or asked to try again later (429).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Refused { status: 429, .. } => 3,
            Self::Refused { .. } => 1,
            Self::Unreachable { .. }
            | Self::NoAnswer { .. }
            | Self::Server { .. }
            | Self::UnexpectedResponse(_) => 3,
        }
    }

    /// Whether trying the same request again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { .. } | Self::Server { .. } | Self::Refused { status: 429, .. }
        )
    }
}

fn retry_hint(retry_after: Option<u64>) -> String {
    retry_after.map_or_else(String::new, |s| format!(" — try again in {s} s"))
}

fn refused_message(status: u16, body: &ErrorBody) -> String {
    // A 403's own message says what access it needs (an operator's key, a tenant's `full`
    // key rather than a `send` one, the operator for a shared provider).
    let hint = match status {
        401 => " — check --key / HERALD_API_KEY",
        _ => "",
    };
    format!("{} (HTTP {status}){hint}", body.message)
}

/// A successful answer: the JSON as the server sent it (for `--json`), read as `T` on demand.
#[derive(Debug)]
pub struct Reply<T> {
    raw: Value,
    kind: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Reply<T> {
    fn new(raw: Value) -> Self {
        Self {
            raw,
            kind: PhantomData,
        }
    }

    pub fn raw(&self) -> &Value {
        &self.raw
    }

    pub fn parse(&self) -> Result<T, ApiError> {
        T::deserialize(&self.raw).map_err(|e| ApiError::UnexpectedResponse(e.to_string()))
    }
}

/// Which page of a list to fetch: after `cursor` (the previous page's `next_cursor`; none for
/// the first), at most `limit` items.
#[derive(Debug, Clone)]
pub struct PageAt {
    pub cursor: Option<String>,
    pub limit: u32,
}

/// A list's filters, as query parameters (`("status", "running")`).
pub type Filters = Vec<(&'static str, String)>;

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    key: String,
}

impl Client {
    /// `base` is the server's root (`http://host:8080`, or with a path prefix behind a proxy).
    pub fn new(base: Url, key: String) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("herald-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| ApiError::Unreachable {
                url: base.to_string(),
                reason: error_chain(&e),
            })?;
        Ok(Self { http, base, key })
    }

    // --- tenants (operator) ---

    pub async fn create_tenant(&self, tenant: &NewTenant) -> Result<Reply<Tenant>, ApiError> {
        self.post(&["tenants"], tenant).await
    }

    pub async fn list_tenants(&self) -> Result<Reply<Vec<Tenant>>, ApiError> {
        self.get(&["tenants"], &[]).await
    }

    /// Changes the settings `changes` names (a JSON object; `null` removes one).
    pub async fn update_tenant(
        &self,
        id: Uuid,
        changes: &Value,
    ) -> Result<Reply<Tenant>, ApiError> {
        let url = self.url(&["tenants", &id.to_string()], &[]);
        self.send(self.http.patch(url).json(changes), Some(REQUEST_TIMEOUT))
            .await
    }

    pub async fn get_tenant(&self, id: Uuid) -> Result<Reply<Tenant>, ApiError> {
        self.get(&["tenants", &id.to_string()], &[]).await
    }

    pub async fn list_default_providers(
        &self,
        tenant: Uuid,
    ) -> Result<Reply<Vec<DefaultProvider>>, ApiError> {
        self.get(&["tenants", &tenant.to_string(), "default-providers"], &[])
            .await
    }

    pub async fn set_default_provider(
        &self,
        tenant: Uuid,
        channel: &str,
        provider: Uuid,
        overflow: Option<Uuid>,
    ) -> Result<Reply<DefaultProvider>, ApiError> {
        let body = serde_json::json!({ "provider_id": provider, "overflow_provider_id": overflow });
        let url = self.url(
            &["tenants", &tenant.to_string(), "default-providers", channel],
            &[],
        );
        self.send(self.http.put(url).json(&body), Some(REQUEST_TIMEOUT))
            .await
    }

    pub async fn remove_default_provider(
        &self,
        tenant: Uuid,
        channel: &str,
    ) -> Result<Reply<Value>, ApiError> {
        self.delete(&["tenants", &tenant.to_string(), "default-providers", channel])
            .await
    }

    pub async fn set_webhook(
        &self,
        tenant: Uuid,
        url: &str,
        rotate_secret: bool,
        grace_seconds: i64,
    ) -> Result<Reply<Webhook>, ApiError> {
        let body = if rotate_secret {
            serde_json::json!({ "url": url, "rotate_secret": true, "grace_seconds": grace_seconds })
        } else {
            serde_json::json!({ "url": url })
        };
        let url = self.url(&["tenants", &tenant.to_string(), "webhook"], &[]);
        self.send(self.http.put(url).json(&body), Some(REQUEST_TIMEOUT))
            .await
    }

    pub async fn get_webhook(&self, tenant: Uuid) -> Result<Reply<Webhook>, ApiError> {
        self.get(&["tenants", &tenant.to_string(), "webhook"], &[])
            .await
    }

    pub async fn recover_webhook_events(
        &self,
        tenant: Uuid,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Reply<Value>, ApiError> {
        let url = self.url(&["tenants", &tenant.to_string(), "webhook", "recover"], &[]);
        let body = serde_json::json!({ "since": since });
        self.send(self.http.post(url).json(&body), Some(REQUEST_TIMEOUT))
            .await
    }

    pub async fn list_webhook_events(
        &self,
        tenant: Uuid,
        filters: &Filters,
        at: &PageAt,
    ) -> Result<Reply<Page<WebhookEvent>>, ApiError> {
        self.page(
            &["tenants", &tenant.to_string(), "webhook", "events"],
            filters,
            at,
        )
        .await
    }

    /// Queues a `webhook.test` event for the tenant's webhook.
    pub async fn test_webhook(&self, tenant: Uuid) -> Result<Reply<Value>, ApiError> {
        self.post(
            &["tenants", &tenant.to_string(), "webhook", "test"],
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn remove_webhook(&self, tenant: Uuid) -> Result<Reply<Value>, ApiError> {
        self.delete(&["tenants", &tenant.to_string(), "webhook"])
            .await
    }

    pub async fn create_tenant_key(
        &self,
        id: Uuid,
        name: &str,
        access: &str,
    ) -> Result<Reply<NewKey>, ApiError> {
        // Only when it is not the default: a server from before keys had an access refuses
        // the field.
        let mut body = serde_json::json!({ "name": name });
        if access != "full" {
            body["access"] = access.into();
        }
        self.post(&["tenants", &id.to_string(), "keys"], &body)
            .await
    }

    pub async fn list_keys(&self) -> Result<Reply<Vec<Key>>, ApiError> {
        self.get(&["keys"], &[]).await
    }

    pub async fn revoke_key(&self, id: Uuid) -> Result<Reply<Key>, ApiError> {
        self.post(&["keys", &id.to_string(), "revoke"], &serde_json::json!({}))
            .await
    }

    pub async fn rotate_key(
        &self,
        id: Uuid,
        grace_seconds: u64,
    ) -> Result<Reply<RotatedKey>, ApiError> {
        let body = serde_json::json!({ "grace_seconds": grace_seconds });
        self.post(&["keys", &id.to_string(), "rotate"], &body).await
    }

    // --- providers ---

    pub async fn rotate_provider_credentials(
        &self,
        id: Uuid,
        credentials: &Value,
        grace_seconds: Option<u64>,
    ) -> Result<Reply<Provider>, ApiError> {
        let mut body = serde_json::json!({ "credentials": credentials });
        if let Some(grace) = grace_seconds {
            body["grace_seconds"] = grace.into();
        }
        let url = self.url(&["providers", &id.to_string(), "credentials"], &[]);
        self.send(self.http.put(url).json(&body), Some(REQUEST_TIMEOUT))
            .await
    }

    pub async fn create_provider(
        &self,
        provider: &NewProvider,
    ) -> Result<Reply<Provider>, ApiError> {
        self.post(&["providers"], provider).await
    }

    pub async fn set_provider_commitment(
        &self,
        id: Uuid,
        per_month: Option<u32>,
    ) -> Result<Reply<Provider>, ApiError> {
        let body = serde_json::json!({ "monthly_commitment": per_month });
        let url = self.url(&["providers", &id.to_string(), "commitment"], &[]);
        self.send(self.http.put(url).json(&body), Some(REQUEST_TIMEOUT))
            .await
    }

    pub async fn list_providers(&self, retired: bool) -> Result<Reply<Vec<Provider>>, ApiError> {
        let query: &[(&str, String)] = if retired {
            &[("retired", "true".to_owned())]
        } else {
            &[]
        };
        self.get(&["providers"], query).await
    }

    /// Retires provider `id` (`DELETE /providers/{id}`, answered 200 with the provider).
    pub async fn retire_provider(&self, id: Uuid) -> Result<Reply<Provider>, ApiError> {
        self.delete(&["providers", &id.to_string()]).await
    }

    pub async fn get_provider(&self, id: Uuid) -> Result<Reply<Provider>, ApiError> {
        self.get(&["providers", &id.to_string()], &[]).await
    }

    // --- campaigns ---

    /// Creates a draft; the same `idempotency_key` again returns the first campaign.
    pub async fn create_campaign(
        &self,
        campaign: &NewCampaign,
        idempotency_key: Option<&str>,
    ) -> Result<Reply<Campaign>, ApiError> {
        let mut request = self.http.post(self.url(&["campaigns"], &[])).json(campaign);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        self.send(request, Some(REQUEST_TIMEOUT)).await
    }

    pub async fn list_campaigns(
        &self,
        filters: &Filters,
        at: &PageAt,
    ) -> Result<Reply<Page<Campaign>>, ApiError> {
        self.page(&["campaigns"], filters, at).await
    }

    pub async fn get_campaign(&self, id: Uuid) -> Result<Reply<Campaign>, ApiError> {
        self.get(&["campaigns", &id.to_string()], &[]).await
    }

    pub async fn start_campaign(
        &self,
        id: Uuid,
        start_at: Option<chrono::DateTime<chrono::FixedOffset>>,
    ) -> Result<Reply<Campaign>, ApiError> {
        let body = match start_at {
            Some(at) => serde_json::json!({ "start_at": at }),
            None => serde_json::json!({}),
        };
        self.post(&["campaigns", &id.to_string(), "start"], &body)
            .await
    }

    pub async fn pause_campaign(&self, id: Uuid) -> Result<Reply<Campaign>, ApiError> {
        self.campaign_action(id, "pause").await
    }

    pub async fn resume_campaign(&self, id: Uuid) -> Result<Reply<Campaign>, ApiError> {
        self.campaign_action(id, "resume").await
    }

    pub async fn cancel_campaign(&self, id: Uuid) -> Result<Reply<Campaign>, ApiError> {
        self.campaign_action(id, "cancel").await
    }

    async fn campaign_action(&self, id: Uuid, action: &str) -> Result<Reply<Campaign>, ApiError> {
        // An empty object rather than no body, so a server reading optional JSON options
        // for every action accepts it.
        self.post(
            &["campaigns", &id.to_string(), action],
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn campaign_progress(&self, id: Uuid) -> Result<Reply<Progress>, ApiError> {
        let url = self.url(&["campaigns", &id.to_string(), "progress"], &[]);
        self.send(self.http.get(url), Some(POLL_TIMEOUT)).await
    }

    pub async fn campaign_errors(&self, id: Uuid) -> Result<Reply<Vec<ErrorCount>>, ApiError> {
        self.get(&["campaigns", &id.to_string(), "errors"], &[])
            .await
    }

    /// Streams `body` as the campaign's audience; `content_type` says its format.
    pub async fn upload_recipients(
        &self,
        id: Uuid,
        content_type: &str,
        body: Body,
    ) -> Result<Reply<UploadSummary>, ApiError> {
        let url = self.url(&["campaigns", &id.to_string(), "recipients"], &[]);
        self.upload(url, content_type, body).await
    }

    pub async fn list_recipients(
        &self,
        id: Uuid,
        filters: &Filters,
        at: &PageAt,
    ) -> Result<Reply<Page<Recipient>>, ApiError> {
        self.page(&["campaigns", &id.to_string(), "recipients"], filters, at)
            .await
    }

    // --- contacts and segments ---

    /// Streams `body` into the tenant's contacts (upsert by address).
    pub async fn upload_contacts(
        &self,
        tenant_id: Option<Uuid>,
        content_type: &str,
        body: Body,
    ) -> Result<Reply<UploadSummary>, ApiError> {
        let query: Vec<_> = tenant_id
            .map(|t| ("tenant_id", t.to_string()))
            .into_iter()
            .collect();
        let url = self.url(&["contacts"], &query);
        self.upload(url, content_type, body).await
    }

    pub async fn list_contacts(
        &self,
        filters: &Filters,
        at: &PageAt,
    ) -> Result<Reply<Page<Contact>>, ApiError> {
        self.page(&["contacts"], filters, at).await
    }

    /// Deletes contact `id` (answered 204, no body).
    pub async fn delete_contact(&self, id: i64) -> Result<Reply<Value>, ApiError> {
        self.delete(&["contacts", &id.to_string()]).await
    }

    pub async fn erase(&self, body: &NewErasure) -> Result<Reply<Erasure>, ApiError> {
        self.post(&["erasures"], body).await
    }

    pub async fn add_suppressions(
        &self,
        body: &NewSuppressions,
    ) -> Result<Reply<SuppressionsAdded>, ApiError> {
        self.post(&["suppressions"], body).await
    }

    pub async fn list_suppressions(
        &self,
        filters: &Filters,
        at: &PageAt,
    ) -> Result<Reply<Page<Suppression>>, ApiError> {
        self.page(&["suppressions"], filters, at).await
    }

    /// Removes suppression `id` (answered 204, no body).
    pub async fn remove_suppression(&self, id: i64) -> Result<Reply<Value>, ApiError> {
        self.delete(&["suppressions", &id.to_string()]).await
    }

    pub async fn create_segment(&self, segment: &NewSegment) -> Result<Reply<Segment>, ApiError> {
        self.post(&["segments"], segment).await
    }

    /// Deletes segment `id` (answered 204, no body).
    pub async fn delete_segment(&self, id: Uuid) -> Result<Reply<Value>, ApiError> {
        self.delete(&["segments", &id.to_string()]).await
    }

    pub async fn list_segments(&self) -> Result<Reply<Vec<Segment>>, ApiError> {
        self.get(&["segments"], &[]).await
    }

    pub async fn get_segment(&self, id: Uuid) -> Result<Reply<Segment>, ApiError> {
        self.get(&["segments", &id.to_string()], &[]).await
    }

    pub async fn segment_count(&self, id: Uuid) -> Result<Reply<SegmentCount>, ApiError> {
        self.get(&["segments", &id.to_string(), "count"], &[]).await
    }

    // --- transactional messages ---

    /// Sends one message; the same `idempotency_key` again returns the first message.
    pub async fn send_message(
        &self,
        message: &NewMessage,
        idempotency_key: Option<&str>,
    ) -> Result<Reply<Message>, ApiError> {
        let mut request = self.http.post(self.url(&["messages"], &[])).json(message);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        self.send(request, Some(REQUEST_TIMEOUT)).await
    }

    pub async fn get_message(&self, id: Uuid) -> Result<Reply<Message>, ApiError> {
        self.get(&["messages", &id.to_string()], &[]).await
    }

    pub async fn cancel_message(&self, id: Uuid) -> Result<Reply<Message>, ApiError> {
        self.post(
            &["messages", &id.to_string(), "cancel"],
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn list_messages(
        &self,
        filters: &Filters,
        at: &PageAt,
    ) -> Result<Reply<Page<Message>>, ApiError> {
        self.page(&["messages"], filters, at).await
    }

    // --- plumbing ---

    /// One page of a cursor-paginated list.
    async fn page<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        filters: &Filters,
        at: &PageAt,
    ) -> Result<Reply<Page<T>>, ApiError> {
        let mut query = filters.clone();
        if let Some(cursor) = &at.cursor {
            query.push(("cursor", cursor.clone()));
        }
        query.push(("limit", at.limit.to_string()));
        self.get(segments, &query).await
    }

    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        api_url(&self.base, segments, query)
    }

    async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Reply<T>, ApiError> {
        let url = self.url(segments, query);
        self.send(self.http.get(url), Some(REQUEST_TIMEOUT)).await
    }

    /// A DELETE: most are answered 204 with no body, a retirement with what it retired.
    async fn delete<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<Reply<T>, ApiError> {
        let url = self.url(segments, &[]);
        self.send(self.http.delete(url), Some(REQUEST_TIMEOUT))
            .await
    }

    async fn post<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        segments: &[&str],
        body: &B,
    ) -> Result<Reply<T>, ApiError> {
        let url = self.url(segments, &[]);
        self.send(self.http.post(url).json(body), Some(REQUEST_TIMEOUT))
            .await
    }

    async fn upload<T: DeserializeOwned>(
        &self,
        url: Url,
        content_type: &str,
        body: Body,
    ) -> Result<Reply<T>, ApiError> {
        let request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        // No overall timeout: a million-row upload legitimately takes minutes.
        self.send(request, None).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
        timeout: Option<Duration>,
    ) -> Result<Reply<T>, ApiError> {
        let mut request = request
            .bearer_auth(&self.key)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let request = request.build().map_err(|e| self.unreachable(&e))?;
        let method = request.method().clone();
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| self.lost(&e, &method))?;
        let status = response.status();
        // Seconds only (what Herald sends); an HTTP date is left unsaid.
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let bytes = response.bytes().await.map_err(|e| self.lost(&e, &method))?;
        classify(status, retry_after, &bytes).map(Reply::new)
    }

    fn unreachable(&self, error: &reqwest::Error) -> ApiError {
        ApiError::Unreachable {
            url: self.base.to_string(),
            reason: error_chain(error),
        }
    }

    /// `error` of a `method` request: unreachable if nothing was sent (no connection) or
    /// the request only reads, else no answer (it may have been carried out).
    fn lost(&self, error: &reqwest::Error, method: &reqwest::Method) -> ApiError {
        if error.is_connect() || !changes_something(method) {
            return self.unreachable(error);
        }
        ApiError::NoAnswer {
            url: self.base.to_string(),
            method: method.to_string(),
            reason: error_chain(error),
        }
    }
}

/// Whether a request of `method` may change something on the server.
fn changes_something(method: &reqwest::Method) -> bool {
    !matches!(
        *method,
        reqwest::Method::GET | reqwest::Method::HEAD | reqwest::Method::OPTIONS
    )
}

/// `base` + `/api/v1/` + `segments`, keeping any path prefix `base` has.
fn api_url(base: &Url, segments: &[&str], query: &[(&str, String)]) -> Url {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(["api", "v1"]).extend(segments);
    }
    if !query.is_empty() {
        url.query_pairs_mut()
            .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
    }
    url
}

/// Turns a status and body into the reply JSON or the API's error.
fn classify(status: StatusCode, retry_after: Option<u64>, bytes: &[u8]) -> Result<Value, ApiError> {
    if status.is_success() {
        // Some endpoints may answer 204/empty; treat that as JSON null rather than an error.
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        return serde_json::from_slice(bytes).map_err(|e| {
            ApiError::UnexpectedResponse(format!(
                "HTTP {status} with a body that is not JSON ({e})"
            ))
        });
    }
    let body = parse_error_body(status, bytes);
    if status.is_client_error() {
        Err(ApiError::Refused {
            status: status.as_u16(),
            body,
            retry_after,
        })
    } else {
        Err(ApiError::Server {
            status: status.as_u16(),
            message: body.message,
            retry_after,
        })
    }
}

/// Reads the API's `{"error": {...}}`, falling back to the body's text (a proxy's page, a
/// framework's plain-text rejection) or the status's name so there is always a message.
pub fn parse_error_body(status: StatusCode, bytes: &[u8]) -> ErrorBody {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: ErrorBody,
    }
    let fallback = || {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase()
    };
    if let Ok(Envelope { mut error }) = serde_json::from_slice::<Envelope>(bytes) {
        if error.message.trim().is_empty() {
            error.message = fallback();
        }
        return error;
    }
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    const MAX: usize = 300;
    let message = if text.is_empty() {
        fallback()
    } else if text.chars().count() > MAX {
        format!("{}…", text.chars().take(MAX).collect::<String>())
    } else {
        text.to_owned()
    };
    ErrorBody {
        message,
        ..ErrorBody::default()
    }
}

/// An error and its causes, because reqwest's own message ("error sending request") hides
/// the useful part ("Connection refused").
fn error_chain(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".to_owned();
    }
    let mut parts = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.contains(&text) {
            parts.push(text);
        }
        source = cause.source();
    }
    if parts.is_empty() {
        error.to_string()
    } else {
        parts.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A server that takes each request and closes the connection without an answer.
    async fn hangs_up() -> Url {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buffer = [0_u8; 4096];
                let _ = socket.read(&mut buffer).await;
            }
        });
        Url::parse(&format!("http://{address}")).unwrap()
    }

    #[tokio::test]
    async fn a_change_without_an_answer_may_have_been_carried_out() {
        let client = Client::new(hangs_up().await, "k".into()).unwrap();
        let error = client.pause_campaign(Uuid::nil()).await.unwrap_err();
        assert!(
            matches!(&error, ApiError::NoAnswer { method, .. } if method == "POST"),
            "{error:?}"
        );
        assert!(error.to_string().contains("may have been carried out"));
        assert_eq!(error.exit_code(), 3);
        assert!(!error.is_transient(), "not repeated on its own");
        // A read only cannot have changed anything: the server could not be reached.
        let error = client.list_tenants().await.unwrap_err();
        assert!(matches!(error, ApiError::Unreachable { .. }), "{error:?}");
    }

    #[test]
    fn urls_keep_the_base_path_and_encode_queries() {
        let base = Url::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            api_url(&base, &["campaigns", "abc", "start"], &[]).as_str(),
            "http://127.0.0.1:8080/api/v1/campaigns/abc/start"
        );
        let prefixed = Url::parse("https://ops.example/herald/").unwrap();
        assert_eq!(
            api_url(&prefixed, &["campaigns"], &[("status", "running".into())]).as_str(),
            "https://ops.example/herald/api/v1/campaigns?status=running"
        );
        assert_eq!(
            api_url(&base, &["contacts"], &[("tenant_id", "a b&c".into())]).as_str(),
            "http://127.0.0.1:8080/api/v1/contacts?tenant_id=a+b%26c"
        );
    }

    #[test]
    fn an_api_error_body_is_read_in_full() {
        let body = br#"{"error": {"status": 422, "message": "invalid upload",
            "fields": [{"field": "template", "reason": "bad"}],
            "rows": [{"row": 3, "field": "address", "reason": "not E.164"}, {"row": 9, "reason": "not JSON"}],
            "error_rows": 7}}"#;
        let err = classify(StatusCode::UNPROCESSABLE_ENTITY, None, body).unwrap_err();
        let ApiError::Refused { status, body, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(*status, 422);
        assert_eq!(body.message, "invalid upload");
        assert_eq!(body.fields.len(), 1);
        assert_eq!(body.rows[1].field, None);
        assert_eq!(body.error_rows, Some(7));
        assert_eq!(err.exit_code(), 1);
        assert_eq!(err.to_string(), "invalid upload (HTTP 422)");
    }

    #[test]
    fn errors_that_are_not_api_json_still_have_a_message() {
        let err = classify(StatusCode::BAD_GATEWAY, None, b"<html>bad gateway</html>").unwrap_err();
        assert!(
            matches!(&err, ApiError::Server { status: 502, message, .. } if message == "<html>bad gateway</html>")
        );
        assert_eq!(err.exit_code(), 3);

        let body = parse_error_body(StatusCode::NOT_FOUND, b"");
        assert_eq!(body.message, "not found");
        let body = parse_error_body(StatusCode::UNAUTHORIZED, br#"{"error": {"status": 401}}"#);
        assert_eq!(body.message, "unauthorized");

        let long = "x".repeat(1000);
        let body = parse_error_body(StatusCode::BAD_REQUEST, long.as_bytes());
        assert_eq!(body.message.chars().count(), 301);
    }

    #[test]
    fn a_refusal_to_try_later_says_when_and_exits_as_transient() {
        let body = br#"{"error": {"status": 429, "message": "the tenant's daily quota is used"}}"#;
        let err = classify(StatusCode::TOO_MANY_REQUESTS, Some(3600), body).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the tenant's daily quota is used (HTTP 429) — try again in 3600 s"
        );
        assert_eq!(err.exit_code(), 3);
        assert!(err.is_transient());
        let err = classify(StatusCode::CONFLICT, None, body).unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert!(!err.is_transient());
        let err = classify(StatusCode::SERVICE_UNAVAILABLE, Some(1), b"busy").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the admin server failed (HTTP 503): busy — try again in 1 s"
        );
    }

    #[test]
    fn auth_refusals_carry_a_hint() {
        let err = classify(
            StatusCode::UNAUTHORIZED,
            None,
            br#"{"error": {"status": 401, "message": "unknown key"}}"#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown key (HTTP 401) — check --key / HERALD_API_KEY"
        );
    }

    #[test]
    fn success_bodies_must_be_json() {
        assert_eq!(
            classify(StatusCode::OK, None, br#"{"contacts": 3}"#).unwrap(),
            serde_json::json!({"contacts": 3})
        );
        assert_eq!(
            classify(StatusCode::NO_CONTENT, None, b"").unwrap(),
            Value::Null
        );
        let err = classify(StatusCode::OK, None, b"hello").unwrap_err();
        assert!(matches!(err, ApiError::UnexpectedResponse(_)));
        assert_eq!(err.exit_code(), 3);
    }

    #[test]
    fn replies_parse_leniently_and_keep_the_raw_json() {
        let raw = serde_json::json!({"status": "running", "total": 10, "sent": 4, "extra": true});
        let reply: Reply<Progress> = Reply::new(raw.clone());
        assert_eq!(reply.raw(), &raw);
        let progress = reply.parse().unwrap();
        assert_eq!((progress.total, progress.sent, progress.failed), (10, 4, 0));
        assert_eq!(progress.eta_seconds, None);

        let bad: Reply<SegmentCount> = Reply::new(serde_json::json!({"contacts": "many"}));
        assert!(matches!(bad.parse(), Err(ApiError::UnexpectedResponse(_))));
    }
}
