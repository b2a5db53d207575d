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
    /// Sends per second over the last 10 seconds.
    pub send_rate: f64,
    pub started_at: Option<DateTime<Utc>>,
    pub first_sent_at: Option<DateTime<Utc>>,
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

    /// Seconds until every recipient is finished at the current send rate; `None` when
    /// nothing is being sent (paused, quiet hours, not started) or all is done.
    pub fn eta_seconds(&self) -> Option<f64> {
        eta_seconds(self.total - self.finished(), self.send_rate)
    }
}

/// Seconds to finish `remaining` recipients at `rate` per second.
pub fn eta_seconds(remaining: i64, rate: f64) -> Option<f64> {
    (remaining > 0 && rate > 0.0).then(|| remaining as f64 / rate)
}

/// Over how many seconds the send rate is averaged.
const RATE_WINDOW_SECS: f64 = 10.0;

/// Progress of the given campaigns (all campaigns if `ids` is empty), oldest first.
///
/// Served from the counters that triggers maintain as recipients change state (view
/// `campaign_state_counts`), so it costs a few index lookups per campaign however many
/// recipients it has.
pub async fn campaigns(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<CampaignProgress>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.id, c.name, t.name AS tenant, c.status,
                coalesce(k.total, 0) AS total, coalesce(k.pending, 0) AS pending,
                coalesce(k.queued, 0) AS queued, coalesce(k.sending, 0) AS sending,
                coalesce(k.sent, 0) AS sent, coalesce(k.failed, 0) AS failed,
                coalesce(k.cancelled, 0) AS cancelled, coalesce(k.expired, 0) AS expired,
                (SELECT coalesce(sum(s.sent), 0)::float8 FROM campaign_sends_per_second s
                 WHERE s.campaign_id = c.id AND s.second >= date_trunc('second', now()) - make_interval(secs => $2)
                ) / $2 AS send_rate,
                c.started_at, c.first_sent_at, c.completed_at
         FROM campaigns c
         JOIN tenants t ON t.id = c.tenant_id
         LEFT JOIN campaign_state_counts k ON k.campaign_id = c.id
         WHERE cardinality($1::uuid[]) = 0 OR c.id = ANY($1)
         ORDER BY c.created_at, c.name",
    )
    .bind(ids)
    .bind(RATE_WINDOW_SECS)
    .fetch_all(pool)
    .await
}

/// Sends of one campaign through one provider, and what they cost.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ProviderSends {
    pub campaign_id: Uuid,
    pub provider_id: Uuid,
    pub provider: String,
    pub sent: i64,
    /// `sent × the provider's cost per message`, when it has one.
    pub cost: Option<f64>,
}

/// Sends per provider of the given campaigns (from counters, like [`campaigns`]).
pub async fn provider_sends(
    pool: &PgPool,
    ids: &[Uuid],
) -> Result<Vec<ProviderSends>, sqlx::Error> {
    sqlx::query_as(
        "SELECT s.campaign_id, s.provider_id, p.name AS provider, sum(s.sent)::int8 AS sent,
                (sum(s.sent) * p.cost_per_message)::float8 AS cost
         FROM campaign_provider_sends s JOIN providers p ON p.id = s.provider_id
         WHERE s.campaign_id = ANY($1)
         GROUP BY s.campaign_id, s.provider_id, p.name, p.cost_per_message
         ORDER BY s.campaign_id, sent DESC",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_needs_work_left_and_a_rate() {
        assert_eq!(eta_seconds(1_000, 100.0), Some(10.0));
        assert_eq!(eta_seconds(0, 100.0), None);
        assert_eq!(eta_seconds(1_000, 0.0), None);
    }
}
