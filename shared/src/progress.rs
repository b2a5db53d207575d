//! Per-campaign progress: counts by recipient state and timings.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct CampaignProgress {
    pub id: Uuid,
    pub name: String,
    pub tenant: String,
    pub status: String,
    pub total: i64,
    pub pending: i64,
    pub queued: i64,
    pub sending: i64,
    pub sent: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub expired: i64,
    pub started_at: Option<DateTime<Utc>>,
    pub first_sent_at: Option<DateTime<Utc>>,
    pub last_sent_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

impl CampaignProgress {
    /// Recipients in a terminal state.
    pub fn finished(&self) -> i64 {
        self.sent + self.failed + self.cancelled + self.expired
    }

    /// Time from the campaign's start to its first successful send.
    pub fn time_to_first_send(&self) -> Option<chrono::Duration> {
        Some(self.first_sent_at? - self.started_at?)
    }
}

/// Progress of the given campaigns (all campaigns if `ids` is empty), oldest first.
///
/// Counts over the recipients table: fine for the demo and tests; large campaigns are served
/// from maintained counters by the admin.
pub async fn campaigns(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<CampaignProgress>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.id, c.name, t.name AS tenant, c.status,
                count(r.id) AS total,
                count(*) FILTER (WHERE r.state = 'pending') AS pending,
                count(*) FILTER (WHERE r.state = 'queued') AS queued,
                count(*) FILTER (WHERE r.state = 'sending') AS sending,
                count(*) FILTER (WHERE r.state = 'sent') AS sent,
                count(*) FILTER (WHERE r.state = 'failed') AS failed,
                count(*) FILTER (WHERE r.state = 'cancelled') AS cancelled,
                count(*) FILTER (WHERE r.state = 'expired') AS expired,
                c.started_at, c.first_sent_at, max(r.sent_at) AS last_sent_at, c.completed_at
         FROM campaigns c
         JOIN tenants t ON t.id = c.tenant_id
         LEFT JOIN recipients r ON r.campaign_id = c.id
         WHERE cardinality($1::uuid[]) = 0 OR c.id = ANY($1)
         GROUP BY c.id, t.name
         ORDER BY c.created_at, c.name",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
}
