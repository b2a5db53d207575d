//! What reconciliation (the worker's lookup at the provider after a lost answer) asks of
//! the recipients it has not yet settled.

use sqlx::PgPool;

/// Those of `provider_ids` (provider message ids found at the provider) that a recipient
/// other than `recipient` has recorded as its own send.
pub async fn taken_by_others(
    pool: &PgPool,
    recipient: i64,
    provider_ids: &[&str],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        // Matched by `= ANY`, so never NULL.
        r#"SELECT provider_message_id AS "provider_message_id!" FROM recipients
         WHERE provider_message_id = ANY($1) AND id <> $2"#,
        provider_ids as _,
        recipient,
    )
    .fetch_all(pool)
    .await
}

/// Forgets the recipient's earlier attempt whose outcome was unknown, now that the lookup
/// found it did not get through (or its provider's policy sends again without one), just
/// before the new request: should that request's answer be lost too, or its worker die
/// during it, the unknown outcome is then dated from the new attempt, at the provider it
/// went to. Kept, the earlier one's minutes and provider would be searched again, and a
/// message the new request created through another provider, or later than the earlier
/// window, would not be found and would be sent a third time. Only while `seq`'s lease
/// holds and the message's own expiry has not passed (an erasure of its address sets it to
/// the erasure's time, so that no request is made again); answers whether it did.
pub async fn rule_out_earlier_attempt(
    pool: &PgPool,
    recipient: i64,
    seq: i32,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE recipients SET outcome_unknown_at = NULL, unknown_via = NULL, updated_at = now()
         WHERE id = $1 AND dispatch_seq = $2 AND state = 'sending'
           AND (expires_at IS NULL OR expires_at > now())",
        recipient,
        seq,
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// How much earlier than a request a refused webhook counts as possibly its (the
/// receiver's clock against the database's).
pub(crate) const REFUSAL_MARGIN: std::time::Duration = std::time::Duration::from_secs(5);

/// How long after its last refusal a provider is taken to have sent its refused webhooks
/// again (Meta retries at once, then less and less often; a receiver refusing all along
/// keeps the refusal recent): past it, a refusal no longer keeps a lost answer waiting. A
/// refusal that lasted for ever would fail every lost answer at the provider, however its
/// receipts flowed since, and anyone who knows a provider's webhook URL can have a request
/// refused before any signature is checked (too large, too slow, too many at once).
pub const REFUSAL_RETRIED_WITHIN: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// What a provider's receipts say of a request made at `since` whose answer was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptsSince {
    /// Whether the provider has reported on a message it sent more than the margin after
    /// `since`: its receipts have caught up past a request made then.
    pub reported_on_later: bool,
    /// Whether a receiver refused one of its webhooks (less the margin) since `since`, within
    /// [`REFUSAL_RETRIED_WITHIN`]: that webhook, which the provider sends again later, may
    /// have held the request's receipt (see the migration `receipts_refused`).
    pub refused_since: bool,
    /// Whether a receipt of its received since `since` (less the margin) is still parked,
    /// matching no message Herald knows: it may be the lost request's own (a generic
    /// provider whose receipts carry only its message id, which the lost answer held), and
    /// later messages' receipts then prove nothing of it. One that raced its send's outcome
    /// is taken up within seconds; one parked past the orphan age no longer counts. Only
    /// generic providers': WhatsApp's echo Herald's reference on every status
    /// (`biz_opaque_callback_data`), so the request's own would have found it, and one
    /// parked there is another sender's (a number shared with another tool).
    pub parked_since: bool,
    /// How long ago `since` was by the database's clock, the one that wrote it: a worker's
    /// clock ahead of it would otherwise count minutes never waited, and give up early.
    pub waited: std::time::Duration,
}

/// What `provider`'s receipts say of a request made at `since` (a receipt among a
/// message's first events, dated by the provider: see the migration
/// `provider_send_reports`): the only word a provider that cannot be looked up gives on a
/// request whose answer was lost.
pub async fn receipts_since(
    pool: &PgPool,
    provider: uuid::Uuid,
    since: chrono::DateTime<chrono::Utc>,
    margin: std::time::Duration,
) -> Result<ReceiptsSince, sqlx::Error> {
    let after = since + chrono::Duration::from_std(margin).unwrap_or_default();
    let row = sqlx::query!(
        r#"SELECT coalesce(p.sends_reported_until > $2, false) AS "reported!",
                coalesce(p.receipts_refused_at > $4
                         AND p.receipts_refused_at > now() - make_interval(secs => $5), false) AS "refused!",
                p.kind = 'http' AND EXISTS (
                    SELECT 1 FROM receipts k
                    WHERE k.provider_id = p.id AND k.recipient_id IS NULL
                      AND k.orphaned_at IS NULL AND k.received_at > $4) AS "parked!",
                extract(epoch FROM now() - $3::timestamptz)::float8 AS "waited_secs!"
         FROM providers p WHERE p.id = $1"#,
        provider,
        after,
        since,
        // The receiver's clock against the database's, as for a report's.
        since - chrono::Duration::from_std(REFUSAL_MARGIN).unwrap_or_default(),
        REFUSAL_RETRIED_WITHIN.as_secs_f64(),
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map_or(
        ReceiptsSince {
            reported_on_later: false,
            refused_since: false,
            parked_since: false,
            waited: std::time::Duration::ZERO,
        },
        |row| ReceiptsSince {
            reported_on_later: row.reported,
            refused_since: row.refused,
            parked_since: row.parked,
            // A `since` ahead of the database's clock (it stepped back) has waited nothing.
            waited: std::time::Duration::try_from_secs_f64(row.waited_secs.max(0.0))
                .unwrap_or_default(),
        },
    ))
}
