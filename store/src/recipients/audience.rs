//! A campaign's audience as the admin sees it: adding recipients from an upload, and
//! listing them. Neither changes a recipient's state: a new one starts `pending`.

use crate::keyset;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use utoipa::ToSchema;
use uuid::Uuid;

/// Adds the staged upload ([`crate::uploads`]) to campaign `campaign`'s recipients, in the
/// caller's transaction: the first row of an address wins, and addresses already in the
/// campaign are kept as they are. Returns how many were added.
pub async fn add_staged(tx: &mut PgConnection, campaign: Uuid) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "INSERT INTO recipients (campaign_id, address, variables)
         SELECT DISTINCT ON (address) $1, address, fields FROM upload_rows ORDER BY address, n
         ON CONFLICT (campaign_id, address) WHERE NOT transactional DO NOTHING",
    )
    .bind(campaign)
    .execute(tx)
    .await?
    .rows_affected())
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Recipient {
    pub id: i64,
    pub address: String,
    #[schema(value_type = Object)]
    pub variables: Value,
    #[schema(schema_with = super::state_schema)]
    pub state: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub provider_message_id: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    /// The provider's latest word on the message (its receipts), e.g. `delivered`.
    pub delivery_status: Option<String>,
    /// The provider's error code with a failed or undelivered status.
    pub delivery_error: Option<String>,
}

/// A page of campaign `campaign`'s recipients by address after `after`: in one state, or
/// with one address, when asked.
pub async fn list(
    pool: &PgPool,
    campaign: Uuid,
    state: Option<&str>,
    address: Option<&str>,
    after: Option<String>,
    limit: i64,
) -> Result<Vec<Recipient>, sqlx::Error> {
    // By address, along the unique (campaign_id, address) index of campaigns' audiences
    // (its predicate is repeated so the planner may use it): the hot table keeps no index
    // for listing alone (each would cost every send's update an entry).
    let mut qb = QueryBuilder::<Postgres>::new(
        "SELECT id, address, variables, state, attempts, last_error, provider_message_id, sent_at,
                delivery_status, delivery_error
         FROM recipients WHERE NOT transactional AND campaign_id = ",
    );
    qb.push_bind(campaign);
    if let Some(state) = state {
        qb.push(" AND state = ").push_bind(state.to_owned());
    }
    keyset::push_exact(&mut qb, "address", address);
    keyset::push_page(&mut qb, "address", after, limit);
    qb.build_query_as().fetch_all(pool).await
}
