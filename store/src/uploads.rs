//! The staging table an upload streams into before one set-based statement moves it into
//! its real table ([`crate::contacts::upsert_staged`], [`crate::recipients::audience`]): a
//! temporary table of the caller's transaction, dropped at its commit, so a failed or
//! refused upload leaves nothing behind.

use serde_json::Value;
use sqlx::PgConnection;

/// Creates `upload_rows (n, address, fields)` for the caller's transaction.
pub async fn create(tx: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(
        "CREATE TEMP TABLE upload_rows (n bigint NOT NULL, address text NOT NULL, fields jsonb NOT NULL)
         ON COMMIT DROP",
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Appends rows (their numbers in the upload, addresses, fields), one statement a chunk.
pub async fn append(
    tx: &mut PgConnection,
    numbers: &[i64],
    addresses: &[&str],
    fields: &[Value],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO upload_rows (n, address, fields)
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::jsonb[])",
    )
    .bind(numbers)
    .bind(addresses)
    .bind(fields)
    .execute(tx)
    .await?;
    Ok(())
}
