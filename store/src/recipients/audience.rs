//! A campaign's audience: adding recipients (from an upload, a segment or the catalog's
//! list, each address once), and listing them for the admin. Neither changes a recipient's
//! state: a new one starts `pending`.

use crate::keyset;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use utoipa::ToSchema;
use uuid::Uuid;

/// The end of every statement that adds recipients to a campaign, after the statement's
/// own `WITH campaign AS (SELECT <id>::uuid AS id), wanted AS (<address, variables, n>)`:
/// of the rows of an address the one with the lowest `n` wins, an address already in the
/// campaign is kept as it is, and the others become `pending` recipients, their ids drawn
/// in `n` order (as the rows are read, in practice: nothing promises it, and nothing
/// depends on it) and the rows written in id order. Uniqueness lives in
/// `campaign_addresses`, written once a recipient and updated only by an erasure of its
/// address (`erased:<recipient id>`), not in an index of `recipients` that every send's
/// updates would enter (migration `20261207000001`).
const ADD_WANTED: &str = "
    , firsts AS MATERIALIZED (
        SELECT DISTINCT ON (address) address, variables, n FROM wanted ORDER BY address, n
    )
    , sequence AS (SELECT pg_get_serial_sequence('recipients', 'id')::regclass AS name)
    , taken AS (
        INSERT INTO campaign_addresses (campaign_id, address, recipient_id)
        SELECT campaign.id, f.address, nextval(sequence.name)
        FROM campaign, sequence, (SELECT address FROM firsts ORDER BY n) f
        ON CONFLICT (campaign_id, address) DO NOTHING
        RETURNING address, recipient_id
    )
    INSERT INTO recipients (id, campaign_id, address, variables)
    OVERRIDING SYSTEM VALUE
    SELECT t.recipient_id, campaign.id, t.address, f.variables
    FROM campaign, taken t JOIN firsts f USING (address)
    ORDER BY t.recipient_id";

/// Starts a statement adding recipients to `campaign` (see [`ADD_WANTED`]): the caller
/// pushes the query producing `address, variables, n`, then [`finish_adding`]. Shared as
/// text, not checked at compile time: two of its sources cannot be (an upload's temporary
/// table, a segment's filter).
pub(crate) fn start_adding(campaign: Uuid) -> QueryBuilder<Postgres> {
    let mut qb = QueryBuilder::new("WITH campaign AS (SELECT ");
    qb.push_bind(campaign).push("::uuid AS id), wanted AS (");
    qb
}

/// Ends a statement begun with [`start_adding`] and runs it; returns how many were added.
pub(crate) async fn finish_adding(
    mut qb: QueryBuilder<Postgres>,
    tx: &mut PgConnection,
) -> Result<u64, sqlx::Error> {
    qb.push(")").push(ADD_WANTED);
    Ok(qb.build().execute(tx).await?.rows_affected())
}

/// Adds the staged upload ([`crate::uploads`]) to campaign `campaign`'s recipients, in the
/// caller's transaction: the first row of an address wins, and addresses already in the
/// campaign are kept as they are. Returns how many were added.
pub async fn add_staged(tx: &mut PgConnection, campaign: Uuid) -> Result<u64, sqlx::Error> {
    let mut qb = start_adding(campaign);
    qb.push("SELECT address, fields AS variables, n FROM upload_rows");
    finish_adding(qb, tx).await
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
    /// The furthest word its receipts gave on the message (by rank, not arrival: a late
    /// `sent` does not undo `delivered`), e.g. `delivered`.
    pub delivery_status: Option<String>,
    /// The provider's error code with a failed or undelivered status.
    pub delivery_error: Option<String>,
}

/// Which of a campaign's recipients a list holds (each only when asked).
#[derive(Debug, Clone, Copy, Default)]
pub struct Filter<'a> {
    /// In this state.
    pub state: Option<&'a str>,
    /// With this latest delivery status.
    pub delivery: Option<&'a str>,
}

/// A page of campaign `campaign`'s recipients by address after `after`: those `filter`
/// keeps, with one of `addresses` (the ways one address may be stored) when asked.
pub async fn list(
    pool: &PgPool,
    campaign: Uuid,
    filter: Filter<'_>,
    addresses: &[String],
    after: Option<String>,
    limit: i64,
) -> Result<Vec<Recipient>, sqlx::Error> {
    // By address, along `campaign_addresses`' primary key: the hot table keeps no index
    // for listing alone (each would cost every send's update an entry).
    let mut qb = QueryBuilder::<Postgres>::new(
        "SELECT r.id, a.address, r.variables, r.state, r.attempts, r.last_error,
                r.provider_message_id, r.sent_at, r.delivery_status, r.delivery_error
         FROM campaign_addresses a JOIN recipients r ON r.id = a.recipient_id
         WHERE a.campaign_id = ",
    );
    qb.push_bind(campaign);
    if let Some(state) = filter.state {
        qb.push(" AND r.state = ").push_bind(state.to_owned());
    }
    if let Some(delivery) = filter.delivery {
        qb.push(" AND r.delivery_status = ")
            .push_bind(delivery.to_owned());
    }
    keyset::push_any_of(&mut qb, "a.address", addresses);
    keyset::push_page(&mut qb, "a.address", after, limit);
    qb.build_query_as().fetch_all(pool).await
}
