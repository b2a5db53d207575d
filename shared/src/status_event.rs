//! What Herald posts to a tenant's status webhook when one of its transactional messages
//! changes: the JSON body (signed in the `Herald-Signature` header, see
//! [`crate::signature::event`]). Workers write it; tenants' endpoints (and the tests) read it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The `type` of a message's change ([`StatusEvent`]).
pub const MESSAGE_STATUS: &str = "message.status";
/// The `type` of a test event ([`TestEvent`]), posted when the tenant asks for one.
pub const WEBHOOK_TEST: &str = "webhook.test";

/// A test event: signed and posted as status events are, so that a tenant can check its
/// endpoint (reached, the signature checked, answered `2xx`) before any message changes.
/// An endpoint should take events of a `type` it does not know and leave them be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestEvent {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub occurred_at: DateTime<Utc>,
    pub tenant_id: Uuid,
}

/// One change of one message. Events are posted at least once (a post whose answer was lost
/// is posted again: the same `id`), and not necessarily in the order they happened: an
/// endpoint keeps, per message, what the event with the latest `occurred_at` says (or, for
/// the delivery status, the furthest one: `delivered` after `sent`, `read` after `delivered`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusEvent {
    /// Unique per event, the same in every post of it (random: it says nothing of other
    /// events).
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub occurred_at: DateTime<Utc>,
    pub message: MessageStatus,
}

/// The message as the change left it (the fields `GET /api/v1/messages/{id}` gave then).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageStatus {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// `sent`, `failed`, `expired`, `cancelled`, or `unknown` (its request's answer was lost:
    /// a receipt or a lookup will tell). None is a promise that nothing follows: a receipt
    /// that comes after `failed`, `expired` or `cancelled` (an earlier request's, whose answer
    /// was lost) turns the message `sent`.
    pub state: String,
    /// The provider's latest word from its receipts: `delivered`, `read`, `undelivered`…
    pub delivery_status: Option<String>,
    /// Why the latest attempt failed (as the message's `last_error`).
    pub last_error: Option<String>,
    /// The provider's error with its delivery status (`undelivered`, say).
    pub delivery_error: Option<String>,
    pub provider_message_id: Option<String>,
}
