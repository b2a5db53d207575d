//! Folding the counter ledger: the trigger on `recipients` appends each statement's deltas
//! to `recipient_count_deltas` (cheap for the workers' hot statements), and every few ticks
//! the leader moves them into the counters, so the ledger stays short and progress reads a
//! few rows per campaign. Readers count the unfolded deltas too, so a fold that is
//! late or fails changes no number anyone sees, only how many rows they read.

use herald_shared::ops::metrics as metrics_names;
use sqlx::PgPool;
use std::time::Instant;

/// A fold upserts one counter row per campaign and state touched since the last, so its cost
/// follows the campaigns, not the messages: with 10,000 small campaigns, folding every tick
/// took 380 ms a fold (16.7 s of the database's time in the bench's 84 s). Every fifth tick
/// (10 s by default) folds the same deltas in fewer, larger sums.
pub const FOLD_EVERY_TICKS: usize = 5;

/// Folds every committed delta; returns how many.
pub async fn fold(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let started = Instant::now();
    let folded = herald_store::campaigns::fold_counts(pool).await?;
    metrics::histogram!(metrics_names::COUNTER_FOLD_DURATION)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(metrics_names::COUNTER_DELTAS_FOLDED)
        .increment(u64::try_from(folded).unwrap_or(0));
    Ok(folded)
}
