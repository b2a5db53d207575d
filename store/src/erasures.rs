//! Erasing an address at its tenant's request (a person asking to be forgotten; the
//! `erasures` migration says what goes and what stays).
//!
//! [`erase`] does at once all it can: the contact and a recorded START go, messages
//! still waiting end `cancelled` unsent, and every message that has ended loses its address,
//! variables and the address inside its error texts. A message in flight (`sending`, or
//! `unknown`: its answer was lost) is neither stopped nor erased yet: its request may be on
//! its way, and its outcome or receipt still has to find it. Its own expiry is set to now,
//! so that no retry sends it again (a retry ends `expired`, by the lease or the sweeper),
//! and the scheduler's housekeeping erases it once it has ended ([`finish`]).

use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

/// What an erased message's address reads (its `campaign_addresses` row, which must stay
/// unique in its campaign, reads `erased:<recipient id>`).
pub const ERASED: &str = "erased";

/// What stands for the address inside an erased message's error texts.
const ERASED_IN_TEXT: &str = "[erased]";

/// A waiting message ended by an erasure says so.
const CANCELLED_ERROR: &str = "not sent: its address was erased at its tenant's request";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Erased {
    /// Contacts of the address deleted (0 or 1).
    pub contacts: u64,
    /// The tenant's messages to the address: campaigns' recipients and transactional
    /// messages, whatever their state.
    pub messages: u64,
    /// Of those, the ones still waiting, now `cancelled` unsent.
    pub cancelled: u64,
    /// Of those, the ones in flight (a request made, its outcome not yet known): never sent
    /// again, and erased by the scheduler once they have ended. The others are erased now.
    pub in_flight: u64,
    /// Entries of the address on the tenant's suppression lists, kept so that its opt-outs
    /// still hold (take them off with `DELETE /suppressions/{id}`).
    pub suppressions_kept: u64,
}

/// Erases `address` (as recipients store it) from tenant `tenant`'s data, as far as it can
/// now (see the module's note). Waits, as a contact's deletion does, for a segment's
/// audience being copied from the tenant's contacts, so that a copy made meanwhile is found
/// and erased too.
pub async fn erase(pool: &PgPool, tenant: Uuid, address: &str) -> Result<Erased, sqlx::Error> {
    let mut tx = pool.begin().await?;
    crate::contacts::hold_for_write(&mut tx, tenant).await?;
    let contacts = sqlx::query!(
        "DELETE FROM contacts WHERE tenant_id = $1 AND address = $2",
        tenant,
        address,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    // A STOP's row stays, as its suppression does: it keeps an older START that arrives
    // late (a receiver kept it through an outage) from taking the opt-out off. A START's
    // goes; an older STOP arriving late can then only list the address again.
    sqlx::query!(
        "DELETE FROM consents WHERE tenant_id = $1 AND address = $2 AND NOT opted_out",
        tenant,
        address,
    )
    .execute(&mut *tx)
    .await?;
    // A campaign's recipients by `campaign_addresses` (one probe per campaign of the
    // tenant), transactional messages by their own address.
    let ids: Vec<i64> = sqlx::query_scalar!(
        r#"SELECT ca.recipient_id AS "id!"
           FROM campaigns c JOIN campaign_addresses ca ON ca.campaign_id = c.id AND ca.address = $2
           WHERE c.tenant_id = $1 AND c.kind = 'campaign'
           UNION
           SELECT m.recipient_id FROM messages m WHERE m.tenant_id = $1 AND m.address = $2"#,
        tenant,
        address,
    )
    .fetch_all(&mut *tx)
    .await?;
    let messages = lock(&mut tx, &ids).await?;
    let cancelled = sqlx::query!(
        "UPDATE recipients
         SET state = 'cancelled', queued_at = NULL, updated_at = now(),
             last_error = herald_ended_unsent_error(outcome_unknown_at, $2)
         WHERE id = ANY($1) AND state IN ('pending', 'queued')",
        &ids,
        CANCELLED_ERROR,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let in_flight: Vec<i64> = sqlx::query_scalar!(
        "UPDATE recipients SET expires_at = now(), updated_at = now()
         WHERE id = ANY($1) AND state IN ('sending', 'unknown')
         RETURNING id",
        &ids,
    )
    .fetch_all(&mut *tx)
    .await?;
    scrub(&mut tx, &ids).await?;
    if !in_flight.is_empty() {
        sqlx::query!(
            "INSERT INTO erasures (tenant_id, waiting) VALUES ($1, $2)",
            tenant,
            &in_flight,
        )
        .execute(&mut *tx)
        .await?;
    }
    let suppressions_kept = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM suppressions WHERE tenant_id = $1 AND address = $2"#,
        tenant,
        address,
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Erased {
        contacts,
        messages,
        cancelled,
        in_flight: in_flight.len() as u64,
        suppressions_kept: u64::try_from(suppressions_kept).unwrap_or(0),
    })
}

/// What a round of [`finish`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Finished {
    /// Messages that had ended since, erased now.
    pub erased: u64,
    /// Erasures with nothing left in flight, done.
    pub done: u64,
}

/// Erases the messages that were in flight when their erasure was asked and have ended
/// since, for up to `limit` erasures; drops each erasure once none of its messages waits.
/// Several schedulers' rounds never take the same erasure at once.
pub async fn finish(pool: &PgPool, limit: i64) -> Result<Finished, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let erasures = sqlx::query!(
        "SELECT id, waiting FROM erasures ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit,
    )
    .fetch_all(&mut *tx)
    .await?;
    if erasures.is_empty() {
        return Ok(Finished::default());
    }
    let mut ids: Vec<i64> = erasures.iter().flat_map(|e| e.waiting.clone()).collect();
    ids.sort_unstable();
    ids.dedup();
    // Only those that have ended are locked (a final state never changes again): the ones
    // still in flight are their workers' and the sweeper's, and an outcome written for one
    // must not wait for this round.
    let ended: Vec<i64> = sqlx::query_scalar!(
        "SELECT id FROM recipients
         WHERE id = ANY($1) AND state IN ('sent', 'failed', 'cancelled', 'expired')",
        &ids,
    )
    .fetch_all(&mut *tx)
    .await?;
    lock(&mut tx, &ended).await?;
    let erased = scrub(&mut tx, &ended).await?;
    let ended: std::collections::HashSet<i64> = ended.into_iter().collect();
    let mut done = 0;
    for erasure in erasures {
        let left: Vec<i64> = erasure
            .waiting
            .into_iter()
            .filter(|id| !ended.contains(id))
            .collect();
        if left.is_empty() {
            sqlx::query!("DELETE FROM erasures WHERE id = $1", erasure.id)
                .execute(&mut *tx)
                .await?;
            done += 1;
        } else {
            sqlx::query!(
                "UPDATE erasures SET waiting = $2 WHERE id = $1",
                erasure.id,
                &left,
            )
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(Finished { erased, done })
}

/// Locks recipients `ids` in id order, as every statement that writes several does (the
/// `recipients` module's note), so that the states read next are the ones written: a lease
/// or an outcome committed meanwhile is waited for. Answers how many there are.
async fn lock(tx: &mut PgConnection, ids: &[i64]) -> Result<u64, sqlx::Error> {
    let locked = sqlx::query_scalar!(
        "SELECT id FROM recipients WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
        ids,
    )
    .fetch_all(tx)
    .await?;
    Ok(locked.len() as u64)
}

/// Takes the address, variables and the address inside error texts off those of
/// recipients `ids` that have ended (and have not been erased already); answers how many.
/// Their states, counts, delivery statuses and receipts are kept.
async fn scrub(tx: &mut PgConnection, ids: &[i64]) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "WITH gone AS MATERIALIZED (
             SELECT id, campaign_id, address, transactional FROM recipients
             WHERE id = ANY($1) AND state IN ('sent', 'failed', 'cancelled', 'expired')
               AND address <> $2
         ), listed AS (
             UPDATE campaign_addresses ca SET address = $2 || ':' || ca.recipient_id
             FROM gone g
             WHERE NOT g.transactional AND ca.campaign_id = g.campaign_id AND ca.address = g.address
         ), accepted AS (
             -- The request's hash covered the number and the text: the same request sent
             -- again under its idempotency key is then refused, not replayed (nor sent).
             UPDATE messages m SET address = NULL, request_hash = ''::bytea
             FROM gone g WHERE g.transactional AND m.recipient_id = g.id
         )
         -- Providers write a number in their errors with its + or without it.
         UPDATE recipients r
         SET address = $2, variables = '{}', updated_at = now(),
             last_error = replace(replace(r.last_error, g.address, $3), ltrim(g.address, '+'), $3),
             delivery_error = replace(replace(r.delivery_error, g.address, $3), ltrim(g.address, '+'), $3)
         FROM gone g WHERE r.id = g.id",
        ids,
        ERASED,
        ERASED_IN_TEXT,
    )
    .execute(tx)
    .await?;
    Ok(done.rows_affected())
}
