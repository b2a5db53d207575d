//! The worker fleet's heartbeats: a row per live worker in `workers`, carrying how many
//! requests that worker may have in flight to each provider (the worker's `fleet` decides
//! them). The scheduler reads the smallest of them to cut each lane's batches
//! ([`crate::providers::smallest_allowances`]).

use sqlx::PgPool;
use sqlx::types::Json;
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

/// Per provider, the requests one worker may have in flight.
pub type Caps = HashMap<Uuid, u32>;

/// Records that worker `id` is alive, and lets `decide` choose its caps from the caps of the
/// other workers seen within `live_for`, all under one lock: `decide` answers the caps to
/// store and what to hand back. Deciding under the lock means two workers never grow at
/// once on each other's stale caps. Rows of workers gone for six times `live_for` are
/// removed on the way.
pub async fn heartbeat<T>(
    pool: &PgPool,
    id: Uuid,
    name: &str,
    live_for: Duration,
    decide: impl FnOnce(Vec<Caps>) -> (Caps, T),
) -> Result<T, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query!("SELECT pg_advisory_xact_lock(hashtext('herald.workers'))",)
        .execute(&mut *tx)
        .await?;
    let others = sqlx::query_scalar!(
        r#"WITH gone AS (
             DELETE FROM workers WHERE seen_at < now() - make_interval(secs => $2::float8 * 6)
         )
         SELECT caps AS "caps: Json<Caps>" FROM workers
         WHERE id <> $1 AND seen_at >= now() - make_interval(secs => $2)"#,
        id,
        live_for.as_secs_f64(),
    )
    .fetch_all(&mut *tx)
    .await?;
    let (caps, decided) = decide(others.into_iter().map(|Json(caps)| caps).collect());
    // Dated by the clock, not the transaction's start: the lock may have taken a while.
    sqlx::query!(
        "INSERT INTO workers (id, name, caps, seen_at) VALUES ($1, $2, $3, clock_timestamp())
         ON CONFLICT (id) DO UPDATE SET seen_at = clock_timestamp(), caps = excluded.caps",
        id,
        name,
        Json(&caps) as _,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(decided)
}

/// Worker `id` leaves the fleet (at shutdown, so the others take up its share at once).
pub async fn leave(pool: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!("DELETE FROM workers WHERE id = $1", id,)
        .execute(pool)
        .await?;
    Ok(())
}
