//! The worker fleet, as seen from one worker: a heartbeat row per live worker, so each can
//! take its share of every provider's fleet-wide in-flight cap.

use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

/// A worker not seen for this long no longer counts (killed, or cut off).
pub const LIVE_FOR: Duration = Duration::from_secs(10);

/// Records that worker `id` is alive and answers how many workers are (itself included).
/// Rows of workers long gone are removed on the way.
pub async fn heartbeat(pool: &PgPool, id: Uuid, name: &str) -> Result<u32, sqlx::Error> {
    let live_for = LIVE_FOR.as_secs_f64();
    // One heartbeat at a time, and the count in a statement after the lock: two workers
    // starting together must see each other, or both would take a whole share.
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('herald.workers'))")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO workers (id, name) VALUES ($1, $2)
         ON CONFLICT (id) DO UPDATE SET seen_at = now()",
    )
    .bind(id)
    .bind(name)
    .execute(&mut *tx)
    .await?;
    let (live,): (i64,) = sqlx::query_as(
        "WITH gone AS (
             DELETE FROM workers WHERE seen_at < now() - make_interval(secs => $2 * 6)
         )
         SELECT 1 + count(*) FROM workers
         WHERE id <> $1 AND seen_at >= now() - make_interval(secs => $2)",
    )
    .bind(id)
    .bind(live_for)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(u32::try_from(live).unwrap_or(1).max(1))
}

/// Leaves the fleet at shutdown, so the others take up its share at once.
pub async fn leave(pool: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM workers WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// This worker's share of a fleet-wide cap: an equal part, at least one, never more than
/// the worker's own prefetch.
pub fn share(cap: u32, live_workers: u32, worker_prefetch: u16) -> u16 {
    let part = (cap / live_workers.max(1)).max(1);
    u16::try_from(part).unwrap_or(u16::MAX).min(worker_prefetch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_at_most_the_cap() {
        for cap in [1, 7, 50, 100, 1_000] {
            for workers in 1..=12 {
                let share = u32::from(share(cap, workers, u16::MAX));
                assert!(share >= 1);
                if cap >= workers {
                    assert!(share * workers <= cap, "cap {cap}, {workers} workers");
                }
            }
        }
    }

    #[test]
    fn the_worker_prefetch_bounds_the_share() {
        assert_eq!(share(10_000, 1, 300), 300);
        assert_eq!(share(100, 4, 300), 25);
        assert_eq!(share(3, 4, 300), 1);
    }
}
