//! The scheduler's leadership: a session-level advisory lock, held on one dedicated
//! connection for as long as that session lives (the scheduler's `leader` keeps it).

use sqlx::PgConnection;
use uuid::Uuid;

/// The advisory lock key: "herald-scheduler" in a fixed 64-bit form. Advisory locks are per
/// database, so each Herald database has its own leader.
pub const LOCK_KEY: i64 = 0x6865_7261_6c64_5343;

/// Takes the lock if no other session holds it, and marks the session as `leader`'s. The
/// lock is re-entrant: behind a pooler in transaction mode a second scheduler's statement
/// may run on the very server session that holds it, and take it too. The mark then names
/// the second, and the first one's [`still_held`] sees it is not alone.
pub async fn try_lock(connection: &mut PgConnection, leader: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT CASE WHEN pg_try_advisory_lock($1)
                       THEN set_config('herald.leader', $2::text, false) = $2::text
                       ELSE false END AS "locked!""#,
        LOCK_KEY,
        leader.to_string(),
    )
    .fetch_one(connection)
    .await
}

/// Whether the session on `connection` still holds the lock for `leader` alone: an error
/// means the session, and so the lock, may be gone. Asked of PostgreSQL, not assumed from
/// the session living: behind a pooler in transaction mode (which the scheduler must not
/// use) each statement may run on another server session, or on the one that holds the
/// lock for another scheduler too ([`try_lock`]), and a round trip alone would say nothing.
pub async fn still_held(connection: &mut PgConnection, leader: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        // A 64-bit advisory key shows in pg_locks as its high and low halves.
        // A session never marked (NULL) is not this leader's.
        r#"SELECT coalesce(current_setting('herald.leader', true) = $2::text, false) AND EXISTS (
               SELECT 1 FROM pg_locks
               WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
                 AND objsubid = 1
                 AND classid = ($1::int8 >> 32)::oid
                 AND objid = ($1::int8 & 4294967295)::oid) AS "held!""#,
        LOCK_KEY,
        leader.to_string(),
    )
    .fetch_one(connection)
    .await
}

/// Releases the lock, so a standby need not wait for the connection to drop.
pub async fn unlock(connection: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query_scalar!("SELECT pg_advisory_unlock($1)", LOCK_KEY)
        .fetch_one(connection)
        .await?;
    Ok(())
}
