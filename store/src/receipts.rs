//! Storing receipts and applying them to recipients.
//!
//! A receipt belongs to the recipient named by the reference the provider echoed
//! (`herald-{campaign}-{recipient}`, in Twilio's per-request callback URL, WhatsApp's
//! `biz_opaque_callback_data` or a generic provider's receipt), provided that recipient's
//! campaign may use the provider; otherwise to the recipient whose send recorded the
//! provider's message id. A receipt that matches neither is parked: it is applied when the
//! send is recorded (the worker's outcome statement adopts it), or reported as orphaned
//! after `orphan_after`.
//!
//! Applying a receipt:
//! - raises the recipient's delivery status to the receipt's if its rank is higher
//!   ([`herald_shared::delivery`]); a lower or equal one changes nothing, so order and duplicates do
//!   not matter;
//! - makes the recipient `sent` whatever Herald thought (`unknown`, waiting for a retry,
//!   even `failed` after a lost answer): the provider took a message for it;
//! - frees the call's line when the status is final.
//!
//! Every receipt is also appended to `receipts`, duplicates (same provider, message and
//! status as an earlier one, exactly: a unique index decides between concurrent copies)
//! flagged and never applied twice.

use chrono::{DateTime, Utc};
use herald_shared::delivery::{DeliveryStatus, FINAL_RANK};
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

/// One status report from a provider, verified and read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub provider_id: Uuid,
    /// The provider's id of the message or call.
    pub message_id: String,
    /// The campaign and recipient the provider's echo of Herald's reference names.
    pub reference: Option<(Uuid, i64)>,
    /// The dispatch the receipt is about, where the callback URL says (Twilio): a late
    /// final status of an earlier call must not free the line of the call now live.
    pub seq: Option<i32>,
    pub status: DeliveryStatus,
    /// As the provider spelled it.
    pub raw_status: String,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub provider_time: Option<DateTime<Utc>>,
}

/// What storing a batch did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stored {
    pub received: i64,
    pub duplicates: i64,
    /// Matched no recipient (yet).
    pub parked: i64,
    /// Recipients whose status or state changed.
    pub applied: i64,
    /// Seconds from start to first send of each campaign whose first send a receipt
    /// revealed (it came before the worker recorded the send).
    pub first_sends: Vec<f64>,
}

/// `sqlx::query!` of `$before`, the recipients' side of applying receipts, then `$after`:
/// shared by both statements below, written once and checked in each. `$before` defines
/// `best`, one row per recipient (its highest-ranked receipt in the batch; with
/// `final_seqs`, the dispatches final receipts of the batch name, and `final_any`, whether
/// one names none), and opens the CTE `applied`; `$1` is the first rank that is final. A
/// call's line is freed by a final receipt of the call that holds it, whichever receipt
/// ranks highest: a late final receipt of an earlier call in the same batch must neither
/// free it nor keep it held. A final receipt that names no dispatch (a generic provider's,
/// a parked one) frees it, as it cannot be told from the live call's. This closes `applied` (the recipients changed) and defines `first_sends` (a
/// campaign whose first send a receipt revealed).
macro_rules! query_applying_best {
    ($before:literal, $after:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query!(
            $before
                + "UPDATE recipients r
         SET delivery_status = CASE WHEN b.rank > r.delivery_rank THEN b.status ELSE r.delivery_status END,
             delivery_error = CASE WHEN b.rank > r.delivery_rank THEN b.error_code ELSE r.delivery_error END,
             delivery_updated_at = CASE WHEN b.rank > r.delivery_rank THEN now() ELSE r.delivery_updated_at END,
             delivery_rank = greatest(r.delivery_rank, b.rank),
             state = 'sent',
             provider_message_id = coalesce(r.provider_message_id, b.message_id),
             sent_at = coalesce(r.sent_at, now()),
             sent_via = CASE WHEN r.state = 'sent' THEN r.sent_via ELSE b.provider_id END,
             last_error = CASE WHEN r.state = 'sent' THEN r.last_error END,
             outcome_unknown_at = NULL, unknown_via = NULL, lease_until = NULL, queued_at = NULL,
             live_until = CASE WHEN b.final_any OR r.dispatch_seq = ANY(b.final_seqs)
                               THEN NULL ELSE r.live_until END,
             updated_at = now()
         FROM best b
         WHERE r.id = b.recipient_id
           AND (r.state <> 'sent' OR b.rank > r.delivery_rank
                OR (r.live_until IS NOT NULL AND (b.final_any OR r.dispatch_seq = ANY(b.final_seqs))))
         RETURNING r.id, r.campaign_id
     ),
     -- Locked in id order, as by every statement that writes several campaign rows. One
     -- held by someone else (an upload to a campaign scheduled again holds its row as long
     -- as it streams) is skipped, not waited for: receipts of every tenant share the
     -- receiver's statements, and one tenant's upload must not hold them up. Its first
     -- send is then marked by its next outcome or receipt, a little late.
     first_sending AS MATERIALIZED (
         SELECT c.id FROM campaigns c
         WHERE c.first_sent_at IS NULL AND c.id IN (SELECT campaign_id FROM applied)
         ORDER BY c.id FOR NO KEY UPDATE SKIP LOCKED
     ),
     first_sends AS (
         UPDATE campaigns c SET first_sent_at = now()
         WHERE c.first_sent_at IS NULL AND c.id IN (SELECT id FROM first_sending)
         RETURNING extract(epoch FROM c.first_sent_at - c.started_at)::float8 AS seconds"
                + $after
            $(, $arg)*
        )
    };
}

/// Stores and applies `receipts` in one statement: when it returns, they are durable.
pub async fn store(pool: &PgPool, receipts: &[Receipt]) -> Result<Stored, sqlx::Error> {
    // In the unique index's order, as every statement that inserts several: two batches
    // holding the same receipts in opposite orders (a provider's retries, two receivers)
    // would otherwise each wait on the other's insert, and one would fail as a deadlock. The
    // sort is stable, so the first of copies within the batch stays the one applied.
    let mut receipts: Vec<&Receipt> = receipts.iter().collect();
    receipts.sort_by(|a, b| {
        (a.provider_id, a.message_id.as_str(), a.status.as_str()).cmp(&(
            b.provider_id,
            b.message_id.as_str(),
            b.status.as_str(),
        ))
    });
    let providers: Vec<Uuid> = receipts.iter().map(|r| r.provider_id).collect();
    let message_ids: Vec<&str> = receipts.iter().map(|r| r.message_id.as_str()).collect();
    let ref_campaigns: Vec<Option<Uuid>> = receipts
        .iter()
        .map(|r| r.reference.map(|(c, _)| c))
        .collect();
    let ref_recipients: Vec<Option<i64>> = receipts
        .iter()
        .map(|r| r.reference.map(|(_, id)| id))
        .collect();
    let statuses: Vec<&str> = receipts.iter().map(|r| r.status.as_str()).collect();
    let raw: Vec<&str> = receipts.iter().map(|r| r.raw_status.as_str()).collect();
    let ranks: Vec<i16> = receipts.iter().map(|r| r.status.rank()).collect();
    let codes: Vec<Option<&str>> = receipts.iter().map(|r| r.error_code.as_deref()).collect();
    let messages: Vec<Option<&str>> = receipts
        .iter()
        .map(|r| r.error_message.as_deref())
        .collect();
    let times: Vec<Option<DateTime<Utc>>> = receipts.iter().map(|r| r.provider_time).collect();
    let seqs: Vec<Option<i32>> = receipts.iter().map(|r| r.seq).collect();
    let stored = query_applying_best!(
        "WITH i AS (
             SELECT * FROM unnest($2::uuid[], $3::text[], $4::uuid[], $5::bigint[], $6::text[],
                                  $7::text[], $8::int2[], $9::text[], $10::text[], $11::timestamptz[],
                                  $12::int[]) WITH ORDINALITY
                 AS i(provider_id, message_id, ref_campaign, ref_recipient, status,
                      raw_status, rank, error_code, error_message, provider_time, seq, ord)
         ),
         -- Primary-key and index lookups the planner cannot reorder (OFFSET 0).
         found AS MATERIALIZED (
             SELECT coalesce(by_ref.sibling, i.provider_id) AS provider_id, i.message_id,
                    i.ref_campaign, i.ref_recipient, i.status, i.raw_status, i.rank,
                    i.error_code, i.error_message, i.provider_time, i.seq, i.ord,
                    coalesce(by_ref.id, by_id.id) AS recipient_id
             FROM i
             -- A recipient named by the reference only once a request for it may have gone
             -- out (`sent_via`, written by its lease): a reference anyone signing for the
             -- provider can write would otherwise make a recipient never sent `sent`.
             -- Received as one of the campaign's providers; or as a WhatsApp provider of
             -- the same owner and phone number as the one that sent it (`sibling`: a
             -- number's statuses all reach the one URL its Meta app posts to, whichever of
             -- the providers of that number, one per template, sent the message), and
             -- then kept as the sender's.
             LEFT JOIN LATERAL (
                 SELECT r.id,
                        CASE WHEN i.provider_id IN (c.provider_id, c.overflow_provider_id) THEN NULL
                             ELSE r.sent_via END AS sibling
                 FROM recipients r JOIN campaigns c ON c.id = r.campaign_id
                 WHERE r.id = i.ref_recipient AND r.campaign_id = i.ref_campaign
                   AND r.sent_via IS NOT NULL
                   AND (i.provider_id IN (c.provider_id, c.overflow_provider_id)
                        OR (r.sent_via IN (c.provider_id, c.overflow_provider_id)
                            AND EXISTS (
                                SELECT 1 FROM providers got JOIN providers sent ON sent.id = r.sent_via
                                WHERE got.id = i.provider_id
                                  AND got.kind = 'whatsapp' AND sent.kind = 'whatsapp'
                                  AND got.tenant_id IS NOT DISTINCT FROM sent.tenant_id
                                  AND got.settings ->> 'phone_number_id' = sent.settings ->> 'phone_number_id')))
                 OFFSET 0
             ) by_ref ON true
             LEFT JOIN LATERAL (
                 SELECT r.id FROM recipients r
                 WHERE i.ref_recipient IS NULL AND r.provider_message_id = i.message_id
                   AND r.sent_via = i.provider_id
                 LIMIT 1
             ) by_id ON true
         ),
         -- Copies within the batch told apart (of stored ones: by the unique index), under
         -- the provider each is kept as (a sibling's status and the sender's own are copies
         -- of one another), and the rows in the unique index's order, for the inserts below.
         m AS MATERIALIZED (
             SELECT f.*, row_number() OVER (PARTITION BY f.provider_id, f.message_id, f.status
                                            ORDER BY f.ord) > 1 AS copy
             FROM found f
             ORDER BY f.provider_id, f.message_id, f.status, f.ord
         ),
         -- The providers' latest word on a message just sent (see the migration
         -- `provider_send_reports`): a message's first events, dated by the provider, never
         -- later than their arrival. A row another statement holds is skipped, not waited
         -- for (the value only grows: the next batch catches up), so receivers never queue
         -- behind one another on a provider's row, nor wait on the admin's changes to it.
         reported AS (
             SELECT provider_id, least(max(provider_time), now()) AS until FROM m
             WHERE rank <= $13 AND provider_time IS NOT NULL GROUP BY provider_id
         ),
         reporting AS MATERIALIZED (
             SELECT p.id FROM providers p JOIN reported r ON r.provider_id = p.id
             WHERE p.sends_reported_until IS NULL OR p.sends_reported_until < r.until
             FOR NO KEY UPDATE OF p SKIP LOCKED
         ),
         reports AS (
             UPDATE providers p SET sends_reported_until = r.until
             FROM reported r
             WHERE p.id = r.provider_id AND p.id IN (SELECT id FROM reporting)
               AND (p.sends_reported_until IS NULL OR p.sends_reported_until < r.until)
         ),
         -- The first of each (provider, message, status) is applied; a copy (of one stored
         -- before, by whichever statement, or earlier in this batch) is only kept.
         firsts AS (
             INSERT INTO receipts (provider_id, message_id, recipient_id, status, raw_status, rank,
                                   error_code, error_message, provider_time)
             SELECT provider_id, message_id, recipient_id, status, raw_status, rank,
                    error_code, error_message, provider_time
             FROM m WHERE NOT m.copy ORDER BY provider_id, message_id, status
             ON CONFLICT (provider_id, message_id, status) WHERE NOT duplicate DO NOTHING
             RETURNING provider_id, message_id, recipient_id, status, rank, error_code
         ),
         -- What was applied, with the dispatch each receipt named (not stored).
         fresh AS (
             SELECT f.*, m.seq FROM firsts f
             JOIN m ON m.provider_id = f.provider_id AND m.message_id = f.message_id
                   AND m.status = f.status AND NOT m.copy
         ),
         copies AS (
             INSERT INTO receipts (provider_id, message_id, recipient_id, status, raw_status, rank,
                                   error_code, error_message, provider_time, duplicate)
             SELECT m.provider_id, m.message_id, m.recipient_id, m.status, m.raw_status, m.rank,
                    m.error_code, m.error_message, m.provider_time, true
             FROM m
             WHERE m.copy OR NOT EXISTS (
                 SELECT 1 FROM firsts f WHERE f.provider_id = m.provider_id
                   AND f.message_id = m.message_id AND f.status = m.status)
             RETURNING recipient_id
         ),
         -- Locked in recipient order, like every statement that updates several recipients,
         -- so that two of them never wait on each other in a cycle.
         best AS MATERIALIZED (
             SELECT b.* FROM (
                 SELECT DISTINCT ON (recipient_id) recipient_id, provider_id, message_id, status, rank,
                        error_code,
                        coalesce(array_agg(seq) FILTER (WHERE rank >= $1 AND seq IS NOT NULL)
                                     OVER (PARTITION BY recipient_id), '{}') AS final_seqs,
                        coalesce(bool_or(rank >= $1 AND seq IS NULL) OVER (PARTITION BY recipient_id),
                                 false) AS final_any
                 FROM fresh WHERE recipient_id IS NOT NULL
                 ORDER BY recipient_id, rank DESC
             ) b CROSS JOIN LATERAL (SELECT 1 FROM recipients r WHERE r.id = b.recipient_id FOR UPDATE) locked
         ),
         applied AS (",
        r#")
         SELECT (SELECT count(*) FROM firsts) + (SELECT count(*) FROM copies) AS "received!",
                (SELECT count(*) FROM copies) AS "duplicates!",
                (SELECT count(*) FROM firsts WHERE recipient_id IS NULL) AS "parked!",
                (SELECT count(*) FROM applied) AS "applied!",
                (SELECT coalesce(array_agg(seconds) FILTER (WHERE seconds IS NOT NULL), '{}')
                 FROM first_sends) AS "first_sends!""#,
        FINAL_RANK,
        &providers,
        &message_ids as _,
        &ref_campaigns as _,
        &ref_recipients as _,
        &statuses as _,
        &raw as _,
        &ranks,
        &codes as _,
        &messages as _,
        &times as _,
        &seqs as _,
        DeliveryStatus::Sent.rank(),
    )
    .fetch_one(pool)
    .await?;
    let stored = Stored {
        received: stored.received,
        duplicates: stored.duplicates,
        parked: stored.parked,
        applied: stored.applied,
        first_sends: stored.first_sends,
    };
    // Whichever statement sets a campaign's first send records it: here when a receipt
    // came before the worker's outcome (the worker's statement then finds it set).
    herald_shared::ops::metrics::first_sends(stored.first_sends.iter().copied());
    Ok(stored)
}

/// Most parked receipts one sweep adopts.
const ADOPT_LIMIT: i64 = 1_000;

/// How far back the tick's sweep looks for parked receipts to adopt. It catches receipts
/// that raced the outcome statement recording their send (neither saw the other: seconds);
/// a send recorded later adopts its parked receipts as it is recorded. Looking further back
/// each tick would walk every receipt still waiting for its message, however many a
/// provider (or a tenant's own) posts for messages Herald never sent: housekeeping looks
/// at all of them once before it calls them orphans.
pub const ADOPT_WITHIN: Duration = Duration::from_secs(600);

/// Applies parked receipts whose message id a send has recorded since (the worker's outcome
/// statement adopts them as it records; this catches the ones that raced it, and those
/// whose message id a sibling receipt with a reference recorded), among those received
/// within `within` and not yet orphaned. Recipients another statement holds are skipped
/// (and adopted at the next sweep), so this never waits on the worker or the receiver.
/// Returns how many recipients changed.
pub async fn adopt_parked(pool: &PgPool, within: Duration) -> Result<u64, sqlx::Error> {
    let adopted = query_applying_best!(
        "WITH candidates AS MATERIALIZED (
             SELECT p.id AS receipt_id, r.id AS recipient_id, p.provider_id, p.message_id,
                    p.status, p.rank, p.error_code, NULL::int AS seq, p.duplicate
             FROM receipts p CROSS JOIN LATERAL (
                 SELECT r.id FROM recipients r
                 WHERE r.provider_message_id = p.message_id AND r.sent_via = p.provider_id
                 LIMIT 1 FOR UPDATE SKIP LOCKED
             ) r
             WHERE p.recipient_id IS NULL AND p.orphaned_at IS NULL
               AND p.received_at > now() - make_interval(secs => $3)
             LIMIT $2
         ),
         adopted AS (
             UPDATE receipts p SET recipient_id = c.recipient_id
             FROM candidates c WHERE p.id = c.receipt_id
         ),
         -- Parked receipts name no dispatch: they were found by the message id the
         -- recipient's current send recorded.
         best AS MATERIALIZED (
             SELECT DISTINCT ON (recipient_id) *, '{}'::int[] AS final_seqs,
                    bool_or(rank >= $1) OVER (PARTITION BY recipient_id) AS final_any
             -- Of copies (one rank, one status), the first, as when they were stored.
             FROM candidates ORDER BY recipient_id, rank DESC, duplicate, receipt_id
         ),
         applied AS (",
        r#") SELECT (SELECT count(*) FROM applied) AS "applied!",
                  (SELECT coalesce(array_agg(seconds) FILTER (WHERE seconds IS NOT NULL), '{}')
                   FROM first_sends) AS "first_sends!""#,
        FINAL_RANK,
        ADOPT_LIMIT,
        within.as_secs_f64(),
    )
    .fetch_one(pool)
    .await?;
    // A campaign whose only sends so far were recorded by receipts adopted here.
    herald_shared::ops::metrics::first_sends(adopted.first_sends);
    Ok(u64::try_from(adopted.applied).unwrap_or(0))
}

/// A receipt that never found its recipient.
#[derive(Debug, Clone)]
pub struct Orphan {
    pub provider_id: Uuid,
    pub message_id: String,
    pub status: String,
    pub received_at: DateTime<Utc>,
}

/// Receipts newly found orphaned: how many (a provider's copies of one not counted), and
/// one of them to show.
#[derive(Debug, Clone)]
pub struct Orphaned {
    pub count: i64,
    pub first: Option<Orphan>,
}

/// Most receipts one statement marks orphaned (or prunes), so a large backlog goes over a
/// few statements rather than one that holds its rows for long.
const KEEP_BATCH: i64 = 50_000;

/// Records that a receiver refused a webhook of each of `providers` at the matching time
/// of `at` (see the migration `receipts_refused`): the latest is kept. A WhatsApp
/// provider's refusal counts for its owner's other WhatsApp providers too: a Meta app
/// posts the statuses of all its numbers to one of them, and the receiver hands each to
/// its number's provider (which app a provider's sealed secret belongs to cannot be read
/// here, so all of the owner's count: more recipients wait, none is sent twice).
pub async fn note_refused(
    pool: &PgPool,
    providers: &[Uuid],
    at: &[DateTime<Utc>],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "WITH r AS (SELECT * FROM unnest($1::uuid[], $2::timestamptz[]) AS r(id, at)),
         targets AS (
             SELECT p.id, max(r.at) AS at
             FROM r JOIN providers named ON named.id = r.id
             JOIN providers p ON p.id = named.id
                              OR (named.kind = 'whatsapp' AND p.kind = 'whatsapp'
                                  AND p.tenant_id IS NOT DISTINCT FROM named.tenant_id)
             GROUP BY p.id
         ),
         -- Locked in id order: two receivers' writes never wait on each other in a cycle.
         locked AS MATERIALIZED (
             SELECT id FROM providers WHERE id IN (SELECT id FROM targets)
             ORDER BY id FOR NO KEY UPDATE
         )
         UPDATE providers p SET receipts_refused_at = greatest(p.receipts_refused_at, t.at)
         FROM targets t
         WHERE p.id = t.id AND p.id IN (SELECT id FROM locked)",
        providers,
        at,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Records a receiver's start, now, as a refusal of every provider whose lost answers only
/// its receipts can settle (WhatsApp, generic HTTP: no lookup). While no receiver listened
/// (a restart, a crash, a deployment), webhooks were refused or never answered, and the
/// providers send them again later: until then, receipts of later messages say nothing of
/// a lost request's, exactly as after a refusal the receiver saw. Every start counts, one
/// beside other receivers too (whether they answered meanwhile cannot be told for sure):
/// more lost answers wait, none is sent twice.
pub async fn note_receiver_started(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        // Locked in id order, as `note_refused` locks them. Dated with the margin a
        // receiver's clock gets taken off (`receipts_since`), though this is the database's:
        // a request counts as made before the start exactly when it was.
        "WITH locked AS MATERIALIZED (
             SELECT id FROM providers WHERE kind IN ('whatsapp', 'http')
             ORDER BY id FOR NO KEY UPDATE
         )
         UPDATE providers p
         SET receipts_refused_at = greatest(p.receipts_refused_at, now() - make_interval(secs => $1))
         WHERE p.id IN (SELECT id FROM locked)",
        crate::recipients::reconcile::REFUSAL_MARGIN.as_secs_f64(),
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Marks receipts parked for longer than `after` as orphaned (reported once), up to
/// [`KEEP_BATCH`] of them; never one whose message a send has recorded (it is adoptable:
/// [`adopt_parked`] takes it).
pub async fn orphan_parked(pool: &PgPool, after: Duration) -> Result<Orphaned, sqlx::Error> {
    let row = sqlx::query!(
        r#"WITH orphaned AS (
             UPDATE receipts SET orphaned_at = now()
             WHERE id IN (SELECT p.id FROM receipts p
                          WHERE p.recipient_id IS NULL AND p.orphaned_at IS NULL
                            AND p.received_at < now() - make_interval(secs => $1)
                            -- One whose message a send has recorded since is adopted, not
                            -- orphaned, however late (a scheduler down for hours, more
                            -- waiting than one adoption takes).
                            AND NOT EXISTS (SELECT 1 FROM recipients r
                                            WHERE r.provider_message_id = p.message_id
                                              AND r.sent_via = p.provider_id)
                          LIMIT $2)
             RETURNING provider_id, message_id, status, received_at, duplicate
         )
         -- A provider's copies of a receipt are marked with it, but neither counted nor shown.
         SELECT (SELECT count(*) FROM orphaned WHERE NOT duplicate) AS "count!",
                o.provider_id AS "provider_id?", o.message_id AS "message_id?",
                o.status AS "status?", o.received_at AS "received_at?"
         FROM (SELECT 1) one
         LEFT JOIN LATERAL (SELECT * FROM orphaned WHERE NOT duplicate LIMIT 1) o ON true"#,
        after.as_secs_f64(),
        KEEP_BATCH,
    )
    .fetch_one(pool)
    .await?;
    let first = match (row.provider_id, row.message_id, row.status, row.received_at) {
        (Some(provider_id), Some(message_id), Some(status), Some(received_at)) => Some(Orphan {
            provider_id,
            message_id,
            status,
            received_at,
        }),
        _ => None,
    };
    Ok(Orphaned {
        count: row.count,
        first,
    })
}

/// The longest one [`prune`] deletes for: it runs beside the tick, in housekeeping.
const PRUNE_BUDGET: Duration = Duration::from_secs(5);

/// Deletes receipts older than `retention`, [`KEEP_BATCH`] at a time while batches come
/// back full, for up to [`PRUNE_BUDGET`]; returns how many. One batch a round (a minute)
/// deleted at most 833 a second: below what two receipts a message bring at 500 msg/s.
pub async fn prune(pool: &PgPool, retention: Duration) -> Result<u64, sqlx::Error> {
    let started = std::time::Instant::now();
    let mut pruned = 0;
    loop {
        let done = sqlx::query!(
            "DELETE FROM receipts WHERE id IN (
                 SELECT id FROM receipts WHERE received_at < now() - make_interval(secs => $1)
                 LIMIT $2)",
            retention.as_secs_f64(),
            KEEP_BATCH,
        )
        .execute(pool)
        .await?;
        pruned += done.rows_affected();
        if done.rows_affected() < KEEP_BATCH as u64 || started.elapsed() >= PRUNE_BUDGET {
            return Ok(pruned);
        }
    }
}

/// A receipt that never found its message, as the admin lists it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct OrphanReceipt {
    pub provider_id: Uuid,
    /// The provider's id of the message the receipt is about.
    pub message_id: String,
    pub status: String,
    /// As the provider spelled it.
    pub raw_status: String,
    pub error_code: Option<String>,
    pub received_at: DateTime<Utc>,
    pub orphaned_at: Option<DateTime<Utc>>,
}

/// The orphaned receipts of the providers `scope` owns (an operator: every provider's),
/// only `provider`'s if given, newest first, at most `limit`; a provider's copies of one are
/// not listed.
pub async fn orphans(
    pool: &PgPool,
    scope: crate::tenants::Scope,
    provider: Option<Uuid>,
    limit: i64,
) -> Result<Vec<OrphanReceipt>, sqlx::Error> {
    sqlx::query_as!(
        OrphanReceipt,
        "SELECT x.provider_id, x.message_id, x.status, x.raw_status, x.error_code, x.received_at,
                x.orphaned_at
         FROM receipts x JOIN providers p ON p.id = x.provider_id
         WHERE x.orphaned_at IS NOT NULL AND x.recipient_id IS NULL AND NOT x.duplicate
           AND ($1::uuid IS NULL OR p.tenant_id = $1)
           AND ($2::uuid IS NULL OR x.provider_id = $2)
         ORDER BY x.received_at DESC LIMIT $3",
        scope as _,
        provider,
        limit,
    )
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_rank_is_the_lowest_final_status() {
        let lowest = DeliveryStatus::ALL
            .iter()
            .filter(|s| s.is_final())
            .map(|s| s.rank())
            .min();
        assert_eq!(Some(FINAL_RANK), lowest);
        assert_eq!(FINAL_RANK, DeliveryStatus::Failed.rank());
    }
}
