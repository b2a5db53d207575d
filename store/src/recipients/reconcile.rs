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
