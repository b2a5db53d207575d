//! The scheduler's leadership: a session-level advisory lock, held on one dedicated
//! connection for as long as that session lives (the scheduler's `leader` keeps it).

use sqlx::PgConnection;

/// The advisory lock key: "herald-scheduler" in a fixed 64-bit form. Advisory locks are per
/// database, so each Herald database has its own leader.
pub const LOCK_KEY: i64 = 0x6865_7261_6c64_5343;

/// Takes the lock if no other session holds it.
pub async fn try_lock(connection: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT pg_try_advisory_lock($1) AS "locked!""#, LOCK_KEY,)
        .fetch_one(connection)
        .await
}

/// A round trip on the session holding the lock: an error means the session, and so the
/// lock, may be gone.
pub async fn still_held(connection: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT 1 AS "alive!""#)
        .fetch_one(connection)
        .await?;
    Ok(())
}

/// Releases the lock, so a standby need not wait for the connection to drop.
pub async fn unlock(connection: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query_scalar!("SELECT pg_advisory_unlock($1)", LOCK_KEY)
        .fetch_one(connection)
        .await?;
    Ok(())
}
