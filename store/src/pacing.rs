//! A provider's fleet-wide pace and breaker: its row in `provider_pacing`, which every
//! worker reserves send slots from (the worker's `pacing` plans them), slows down after a
//! throttle, and opens when its own breaker opens (the worker's `breaker` judges). The
//! scheduler reads `open_until` to release nothing into an open lane.
//!
//! Times are the database's clock (`clock_timestamp()`, as unix seconds): the one clock the
//! whole fleet shares. Should it step back, the row's times would lie ahead by the step: they
//! are read through `herald_pacing_time` (migration `pacing_clock_steps`), which takes the
//! step off, and every change of the row writes them back so.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The provider's pacing row as a reservation finds it, locked until the transaction ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Locked {
    /// The database's clock when it was read.
    pub db_now: f64,
    /// The first slot free: the row's next free time, and never sooner than `lead` from now.
    pub free_at: f64,
    /// The slowdown a throttle left, decayed by ×0.8 a second since the row last changed, so
    /// a provider that stopped throttling is probed back up to its configured rate; at least 1.
    pub slowdown: f64,
}

/// The database's clock, unix seconds.
pub async fn db_clock(pool: &PgPool) -> Result<f64, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT extract(epoch FROM clock_timestamp())::float8 AS "now!""#,)
        .fetch_one(pool)
        .await
}

/// Creates the provider's row if it has none yet (outside the reservation's transaction, so
/// two first reservations do not wait on each other's insert).
pub async fn ensure_row(pool: &PgPool, provider: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO provider_pacing (provider_id) VALUES ($1) ON CONFLICT DO NOTHING",
        provider,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Locks the provider's row for a reservation (see [`Locked`]); [`advance`] in the same
/// transaction moves its next free time past the slots granted.
pub async fn lock(
    tx: &mut PgConnection,
    provider: Uuid,
    lead_secs: f64,
) -> Result<Locked, sqlx::Error> {
    sqlx::query_as!(
        Locked,
        r#"SELECT extract(epoch FROM clock_timestamp())::float8 AS "db_now!",
                extract(epoch FROM greatest(herald_pacing_time(next_at, updated_at),
                                            clock_timestamp() + make_interval(secs => $2)))::float8
                    AS "free_at!",
                -- The seconds since, within 0 (a clock stepped back) and 600 (×1e-58, past any
                -- slowdown): 0.8 to the power of an hour's seconds is below the smallest
                -- float8, which PostgreSQL refuses as an underflow, and a negative power
                -- would blow the slowdown up.
                greatest(1.0, slowdown * power(0.8, least(greatest(
                    extract(epoch FROM clock_timestamp() - updated_at)::float8, 0.0), 600.0)))
                    AS "slowdown!"
         FROM provider_pacing WHERE provider_id = $1 FOR UPDATE"#,
        provider,
        lead_secs,
    )
    .fetch_one(&mut *tx)
    .await
}

/// The next free time becomes `free_at + granted_secs`, and the decayed slowdown is kept (the
/// row's other times as read, a clock's step back taken off).
pub async fn advance(
    tx: &mut PgConnection,
    provider: Uuid,
    free_at: f64,
    granted_secs: f64,
    slowdown: f64,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE provider_pacing
         SET next_at = to_timestamp($2) + make_interval(secs => $3),
             open_until = herald_pacing_time(open_until, updated_at),
             throttled_at = herald_pacing_time(throttled_at, updated_at),
             slowdown = $4, updated_at = clock_timestamp()
         WHERE provider_id = $1",
        provider,
        free_at,
        granted_secs,
        slowdown,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The provider refused a request for being too fast: its slowdown doubles (at most once a
/// second, however many requests in flight were refused together, and up to
/// `max_slowdown`), and its next free time moves past `retry_after_secs`.
pub async fn throttled(
    pool: &PgPool,
    provider: Uuid,
    retry_after_secs: f64,
    max_slowdown: f64,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO provider_pacing AS p (provider_id, next_at, slowdown, throttled_at)
         VALUES ($1, clock_timestamp() + make_interval(secs => $2), 2.0, clock_timestamp())
         ON CONFLICT (provider_id) DO UPDATE SET
             slowdown = CASE WHEN herald_pacing_time(p.throttled_at, p.updated_at)
                                  > clock_timestamp() - interval '1 second'
                             THEN p.slowdown ELSE least(p.slowdown * 2, $3) END,
             next_at = greatest(herald_pacing_time(p.next_at, p.updated_at),
                                clock_timestamp() + make_interval(secs => $2)),
             open_until = herald_pacing_time(p.open_until, p.updated_at),
             throttled_at = clock_timestamp(),
             updated_at = clock_timestamp()",
        provider,
        retry_after_secs,
        max_slowdown,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// A worker's breaker opened: the fleet leaves the provider alone for `secs` (an earlier,
/// longer opening stands).
pub async fn open_breaker(pool: &PgPool, provider: Uuid, secs: f64) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO provider_pacing AS p (provider_id, open_until)
         VALUES ($1, clock_timestamp() + make_interval(secs => $2))
         ON CONFLICT (provider_id) DO UPDATE SET
             open_until = greatest(herald_pacing_time(p.open_until, p.updated_at), excluded.open_until),
             next_at = herald_pacing_time(p.next_at, p.updated_at),
             throttled_at = herald_pacing_time(p.throttled_at, p.updated_at),
             updated_at = clock_timestamp()",
        provider,
        secs,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Every provider whose breaker is open somewhere in the fleet, with the seconds left.
pub async fn open_breakers(pool: &PgPool) -> Result<Vec<(Uuid, f64)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT provider_id, extract(epoch FROM o.open_until - clock_timestamp())::float8 AS "secs!"
         FROM provider_pacing
         CROSS JOIN LATERAL (SELECT herald_pacing_time(open_until, updated_at) AS open_until) o
         WHERE o.open_until > clock_timestamp()"#,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.provider_id, r.secs)).collect())
}

/// Rewrites the times of every pacing row last changed "in the future", as a database whose
/// clock stepped back reads it (see `herald_pacing_time`), on the clock as it now runs;
/// answers how many. A row read but not changed meanwhile (an open breaker the scheduler
/// reads every tick) keeps its times the step ahead, and as the clock runs no closer to
/// them, until rewritten.
pub async fn rebase_after_clock_step(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        // A step of less than a second is left to the next change of the row.
        "UPDATE provider_pacing
         SET next_at = herald_pacing_time(next_at, updated_at),
             open_until = herald_pacing_time(open_until, updated_at),
             throttled_at = herald_pacing_time(throttled_at, updated_at),
             updated_at = clock_timestamp()
         WHERE updated_at > clock_timestamp() + interval '1 second'",
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
