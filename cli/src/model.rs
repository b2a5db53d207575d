//! The admin API's resources as the CLI reads and writes them (see `admin/API.md`).
//!
//! Responses are read leniently (`default`, `Option`) so that a field the server leaves out
//! degrades the human output instead of failing the command; `--json` prints the server's own
//! JSON and never goes through these types.

use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

pub type Timestamp = DateTime<Utc>;

#[derive(Debug, Clone, Deserialize)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    #[serde(default)]
    pub weight: i64,
    #[serde(default)]
    pub time_zone: String,
    pub max_live_calls: Option<i64>,
    pub default_region: Option<String>,
    pub max_queued_messages: Option<i64>,
    pub max_messages_per_day: Option<i64>,
    pub created_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NewTenant {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_live_calls: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_queued_messages: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_messages_per_day: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NewKey {
    pub id: Uuid,
    pub name: String,
    pub key: String,
}

/// A key as listed (never its secret).
#[derive(Debug, Clone, Deserialize)]
pub struct Key {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub prefix: String,
    /// `full` or `send` (absent from an older server: full).
    #[serde(default)]
    pub access: Option<String>,
    pub created_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    #[serde(default)]
    pub active: bool,
}

/// A rotation's answer: the new secret and the key it replaces.
#[derive(Debug, Clone, Deserialize)]
pub struct RotatedKey {
    pub id: Uuid,
    pub name: String,
    pub key: String,
    pub replaced: Key,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Provider {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub name: String,
    #[serde(default)]
    pub kind: String,
    /// `None` for a shared provider seen with a tenant key.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub has_credentials: bool,
    pub timeout_ms: Option<i64>,
    pub max_in_flight: Option<i64>,
    pub max_attempts: Option<i64>,
    pub retry_base_ms: Option<i64>,
    pub retry_max_ms: Option<i64>,
    pub rate_limit: Option<i64>,
    pub rate_window_ms: Option<i64>,
    /// Non-secret, per-kind settings (a Twilio `from`, a WhatsApp `phone_number_id`, …).
    #[serde(default)]
    pub settings: Option<Value>,
    pub cost_per_message: Option<f64>,
    pub unknown_outcome: Option<String>,
    pub unknown_window_ms: Option<i64>,
    pub max_live_calls: Option<i64>,
    pub live_call_timeout_ms: Option<i64>,
    /// The receiver's path for this provider's receipts.
    pub receipt_path: Option<String>,
    pub monthly_commitment: Option<i64>,
    #[serde(default)]
    pub sent_this_month: Option<i64>,
    pub commitment_due_by_now: Option<i64>,
    /// Receipts signed with the credentials last replaced are taken until then.
    #[serde(default)]
    pub previous_credentials_until: Option<Timestamp>,
    pub created_at: Option<Timestamp>,
    /// When it was retired: nothing new may name it.
    #[serde(default)]
    pub retired_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NewProvider {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<Uuid>,
    pub name: String,
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub settings: serde_json::Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_base_ms: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_max_ms: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_window_ms: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_per_message: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_outcome: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_window_ms: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_live_calls: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_call_timeout_ms: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monthly_commitment: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuietHours {
    pub start: String,
    pub end: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

/// One page of a list (`GET /campaigns`, `…/recipients`, `/contacts`).
#[derive(Debug, Clone, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Campaign {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub tenant_name: Option<String>,
    pub name: String,
    pub provider_id: Option<Uuid>,
    pub overflow_provider_id: Option<Uuid>,
    #[serde(default)]
    pub channel: String,
    #[serde(default)]
    pub template: String,
    #[serde(default)]
    pub status: String,
    pub batch_size: Option<i64>,
    pub weight: Option<i64>,
    pub start_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub quiet_hours: Option<QuietHours>,
    pub segment_id: Option<Uuid>,
    pub created_at: Option<Timestamp>,
    /// When it started, first sent and completed: in here.
    pub progress: Option<Progress>,
    /// Sends and their cost per provider that carried them.
    #[serde(default)]
    pub by_provider: Vec<ProviderSends>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProviderSends {
    pub provider_id: Uuid,
    #[serde(default)]
    pub provider: String,
    #[serde(default)]
    pub sent: i64,
    pub cost: Option<f64>,
    #[serde(default)]
    pub delivery: Delivery,
}

/// What the providers' receipts say of a set of sends.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Delivery {
    pub delivered: i64,
    pub read: i64,
    pub undelivered: i64,
    pub failed: i64,
    pub delivered_rate: Option<f64>,
    pub read_rate: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NewCampaign {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<Uuid>,
    pub name: String,
    pub provider_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overflow_provider_id: Option<Uuid>,
    pub channel: &'static str,
    pub template: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_at: Option<DateTime<FixedOffset>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<FixedOffset>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment_id: Option<Uuid>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Progress {
    pub status: String,
    /// Why Herald paused the campaign (its provider refused the account).
    pub pause_reason: Option<String>,
    pub total: i64,
    pub pending: i64,
    pub queued: i64,
    pub sending: i64,
    pub unknown: i64,
    pub sent: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub expired: i64,
    pub live_calls: i64,
    pub delivery: Delivery,
    pub send_rate: f64,
    pub eta_seconds: Option<f64>,
    // f64 so that either an integer or a fractional millisecond count reads.
    pub time_to_first_send_ms: Option<f64>,
    pub started_at: Option<Timestamp>,
    pub first_sent_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
}

impl Progress {
    /// Recipients in a final state (nothing more will happen to them).
    pub fn finished(&self) -> i64 {
        self.sent + self.failed + self.cancelled + self.expired
    }

    /// Whether the campaign can no longer change: watching it further is pointless.
    pub fn is_final(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "cancelled")
    }

    /// Not started: it will not move until someone starts it.
    pub fn is_draft(&self) -> bool {
        self.status == "draft"
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ErrorCount {
    pub reason: String,
    pub count: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct UploadSummary {
    pub received: i64,
    pub inserted: i64,
    /// Audience uploads only.
    pub duplicates: Option<i64>,
    /// Contact uploads only.
    pub updated: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Recipient {
    pub id: i64,
    pub address: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub attempts: i64,
    pub last_error: Option<String>,
    pub sent_at: Option<Timestamp>,
    /// The furthest its receipts went (by rank, not arrival).
    #[serde(default)]
    pub delivery_status: Option<String>,
    /// The provider's error code with a failed or undelivered status.
    #[serde(default)]
    pub delivery_error: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Contact {
    pub id: i64,
    pub tenant_name: Option<String>,
    pub address: String,
    #[serde(default)]
    pub attributes: Value,
    pub created_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Segment {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub name: String,
    #[serde(default)]
    pub filter: String,
    pub created_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NewSegment {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<Uuid>,
    pub name: String,
    pub filter: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct NewErasure {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<Uuid>,
    pub address: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Erasure {
    pub address: String,
    pub contacts: i64,
    pub messages: i64,
    pub cancelled: i64,
    pub in_flight: i64,
    pub suppressions_kept: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct NewSuppressions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<Uuid>,
    pub channel: String,
    pub addresses: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SuppressionsAdded {
    pub received: i64,
    pub added: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Suppression {
    pub id: i64,
    pub tenant_id: Option<Uuid>,
    #[serde(default)]
    pub channel: String,
    pub address: String,
    #[serde(default)]
    pub source: String,
    pub reason: Option<String>,
    pub created_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SegmentCount {
    pub contacts: i64,
}

/// The `error` object of every error response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub fields: Vec<FieldError>,
    #[serde(default)]
    pub rows: Vec<RowError>,
    /// All invalid rows, of which `rows` lists the first ones.
    pub error_rows: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RowError {
    pub row: u64,
    // A row may be rejected as a whole (unparseable line), with no one field to blame.
    pub field: Option<String>,
    pub reason: String,
}

/// A transactional message to send (`POST /messages`).
#[derive(Debug, Clone, Serialize)]
pub struct NewMessage {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<Uuid>,
    pub to: String,
    pub channel: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overflow_provider_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub variables: serde_json::Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<FixedOffset>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
}

/// A transactional message and what became of it.
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub channel: String,
    pub provider_id: Option<Uuid>,
    pub text: Option<String>,
    #[serde(default)]
    pub state: String,
    pub delivery_status: Option<String>,
    pub delivery_error: Option<String>,
    #[serde(default)]
    pub attempts: i64,
    pub sent_via: Option<Uuid>,
    pub provider_message_id: Option<String>,
    pub cost: Option<f64>,
    pub last_error: Option<String>,
    pub idempotency_key: Option<String>,
    pub created_at: Option<Timestamp>,
    pub sent_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub quiet_hours: Option<QuietHours>,
    pub held: Option<String>,
    #[serde(default)]
    pub receipts: Vec<MessageReceipt>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MessageReceipt {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub raw_status: String,
    pub error_code: Option<String>,
    pub received_at: Option<Timestamp>,
    #[serde(default)]
    pub duplicate: bool,
}

/// A tenant's status webhook (`/tenants/{id}/webhook`); `secret` only in the answer that
/// set it.
#[derive(Debug, Clone, Deserialize)]
pub struct Webhook {
    pub tenant_id: Uuid,
    pub url: Option<String>,
    pub updated_at: Option<Timestamp>,
    pub previous_secret_until: Option<Timestamp>,
    pub waiting: i64,
    pub oldest_waiting_at: Option<Timestamp>,
    pub last_failure: Option<String>,
    pub last_failed_at: Option<Timestamp>,
    pub abandoned: i64,
    pub last_abandoned_at: Option<Timestamp>,
    pub failing_since: Option<Timestamp>,
    pub resume_at: Option<Timestamp>,
    #[serde(default)]
    pub disabled_at: Option<Timestamp>,
    #[serde(default)]
    pub disabled_reason: Option<String>,
    pub secret: Option<String>,
}

/// One of a tenant's webhook events (`/tenants/{id}/webhook/events`).
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookEvent {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub occurred_at: Timestamp,
    pub message: Option<EventMessage>,
    pub delivery: String,
    pub attempts: i64,
    pub next_attempt_at: Option<Timestamp>,
    pub delivered_at: Option<Timestamp>,
    pub abandoned_at: Option<Timestamp>,
    pub last_failure: Option<String>,
}

/// The message a status event names, as the event left it.
#[derive(Debug, Clone, Deserialize)]
pub struct EventMessage {
    pub id: Uuid,
    pub state: String,
    pub delivery_status: Option<String>,
}

/// A tenant's default provider for a channel (`/tenants/{id}/default-providers`).
#[derive(Debug, Clone, Deserialize)]
pub struct DefaultProvider {
    pub channel: String,
    pub provider_id: Uuid,
    pub overflow_provider_id: Option<Uuid>,
}
