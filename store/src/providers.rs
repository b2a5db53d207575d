//! What the tick reads of providers: their paces, their free lines, their commitments.

use sqlx::PgPool;
use uuid::Uuid;

/// The pace (requests per second) of each of `providers` that has a rate limit.
pub async fn provider_paces(
    pool: &PgPool,
    providers: &[Uuid],
) -> Result<Vec<(Uuid, f64)>, sqlx::Error> {
    let rows: Vec<(Uuid, i32, i32)> = sqlx::query_as(
        "SELECT id, rate_limit, rate_window_ms FROM providers
         WHERE id = ANY($1) AND rate_limit IS NOT NULL",
    )
    .bind(providers)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, limit, window_ms)| {
            let window = std::time::Duration::from_millis(u64::try_from(window_ms).unwrap_or(1000));
            (
                id,
                herald_shared::rate_limit::per_second(u32::try_from(limit).unwrap_or(1), window),
            )
        })
        .collect())
}

/// Lines still free of each of `providers` that caps its live calls (calls placed and not
/// yet ended, fleet-wide).
pub async fn free_lines(
    pool: &PgPool,
    providers: &[Uuid],
) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT p.id, p.max_live_calls - (SELECT count(*) FROM recipients r
                                          WHERE r.live_until > now() AND r.sent_via = p.id)
         FROM providers p WHERE p.id = ANY($1) AND p.max_live_calls IS NOT NULL",
    )
    .bind(providers)
    .fetch_all(pool)
    .await
}

/// One provider's monthly commitment, with this month's sends.
#[derive(Debug, Clone, Copy, PartialEq, sqlx::FromRow)]
pub struct CommitmentRow {
    pub provider_id: Uuid,
    /// Messages agreed for the month.
    pub monthly_commitment: i32,
    /// Sent through the provider so far this month.
    pub sent_this_month: i64,
    /// Share of the month gone by, 0–1.
    pub month_elapsed: f64,
}

/// Every provider's commitment (few providers carry one), with this month's sends.
pub async fn commitments(pool: &PgPool) -> Result<Vec<CommitmentRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT provider_id, monthly_commitment, sent_this_month, month_elapsed
         FROM provider_commitments",
    )
    .fetch_all(pool)
    .await
}

/// For each of `providers`, the fewest requests any live worker may have in flight to it,
/// among those that may have any (the allowance each worker publishes with its heartbeat,
/// see the worker's `fleet`); 0 while no live worker may. It sizes the lane's AMQP messages
/// (`herald_shared::queue::message::per_message`), and a lane at 0 gets nothing: no worker
/// could take it, and a worker that starts later would take whole batches cut for nobody.
pub async fn smallest_allowances(
    pool: &PgPool,
    providers: &[Uuid],
) -> Result<Vec<(Uuid, i32)>, sqlx::Error> {
    sqlx::query_as(
        // Live: seen within the workers' six seconds (the worker's `fleet::LIVE_FOR`).
        "SELECT p.id, coalesce((SELECT min((w.caps ->> p.id::text)::int) FROM workers w
                                WHERE w.seen_at >= now() - interval '6 seconds'
                                  AND (w.caps ->> p.id::text)::int > 0),
                               0)
         FROM providers p WHERE p.id = ANY($1)",
    )
    .bind(providers)
    .fetch_all(pool)
    .await
}
