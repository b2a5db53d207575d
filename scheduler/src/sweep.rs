//! The tick's sweep, before its dispatch: the statements that keep nothing claimed,
//! waiting or unknown forever (`herald_store::recipients::sweep`), adopting parked
//! receipts, and freeing stale call lines.

use herald_shared::db::within;
use herald_store::receipts;
use herald_store::recipients::sweep::{self as statements, Rewound};
use sqlx::PgPool;
use std::time::Duration;

/// What a sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Recipients `queued` too long (their message lost) back to `pending`.
    pub requeued: u64,
    /// Campaigns whose cursor went back below first attempts claimed by range too long
    /// ago, or below first attempts handed back whose cursor could not be moved then.
    pub rewound: Rewound,
    /// Recipients whose unknown outcome's window passed (due again, after a lookup).
    pub unknown_due: u64,
    /// Waiting recipients of expired or cancelled campaigns, and transactional messages
    /// past their own expiry, ended.
    pub ended: u64,
}

/// Runs the sweep's statements side by side on the pool's connections, not one after
/// another: each takes the recipients it changes SKIP LOCKED, so none waits on another's
/// rows; one after another, each round trip waited for a core on a loaded machine (with
/// 10,000 running campaigns the eight, activating due campaigns among them, took 46–56 ms a
/// tick, of which PostgreSQL spent about 16 executing them; side by side 31–42 ms,
/// BENCHMARKS.md 2026-12-17). Joined, not raced: each finishes, whichever failed, and what
/// the others did is logged before the first failure is returned.
pub async fn run(pool: &PgPool, requeue_after: Duration) -> Result<Swept, sqlx::Error> {
    let (requeued, rewound, unknown_due, ended, expired, adopted, freed) = tokio::join!(
        within(statements::requeue_stale_claims(pool, requeue_after)),
        within(statements::rewind_stale_first_claims(pool, requeue_after)),
        within(statements::retry_unknown_outcomes(pool)),
        within(statements::end_waiting_recipients(pool)),
        within(statements::expire_messages(pool)),
        within(receipts::adopt_parked(pool, receipts::ADOPT_WITHIN)),
        within(statements::free_stale_lines(pool)),
    );
    let mut failed = None;
    keep(freed, &mut failed);
    let swept = Swept {
        requeued: keep(requeued, &mut failed),
        rewound: keep(rewound, &mut failed),
        unknown_due: keep(unknown_due, &mut failed),
        ended: keep(ended, &mut failed) + keep(expired, &mut failed),
    };
    // Receipts' housekeeping: its failure is logged, not made the tick's.
    match adopted {
        Ok(0) => {}
        Ok(adopted) => tracing::info!(adopted, "parked receipts applied to their sends"),
        Err(error) => tracing::warn!(%error, "cannot adopt parked receipts now"),
    }
    report(&swept);
    match failed {
        Some(error) => Err(error),
        None => Ok(swept),
    }
}

/// What a statement found, or nothing if it failed: the first failure is kept in `failed`,
/// any later one logged here.
pub fn keep<T: Default>(result: Result<T, sqlx::Error>, failed: &mut Option<sqlx::Error>) -> T {
    result.unwrap_or_else(|error| {
        if failed.is_some() {
            tracing::warn!(%error, "a sweep statement failed too");
        } else {
            *failed = Some(error);
        }
        T::default()
    })
}

fn report(swept: &Swept) {
    if swept.requeued > 0 {
        tracing::warn!(
            requeued = swept.requeued,
            "recipients queued too long (their message was lost) returned to pending"
        );
    }
    if swept.rewound.lost > 0 {
        tracing::warn!(
            campaigns = swept.rewound.lost,
            "first attempts claimed too long ago (their message was lost) handed out again"
        );
    }
    if swept.rewound.owed > 0 {
        tracing::debug!(
            campaigns = swept.rewound.owed,
            "first attempts handed back while their campaign was busy are due again"
        );
    }
    if swept.unknown_due > 0 {
        tracing::info!(
            due = swept.unknown_due,
            "no receipt within the window for unknown outcomes; due again after a lookup"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(what: &str) -> sqlx::Error {
        sqlx::Error::Protocol(what.to_owned())
    }

    #[test]
    fn the_first_failure_is_kept_and_the_others_found_nothing() {
        let mut failed = None;
        assert_eq!(keep(Ok(3_u64), &mut failed), 3);
        assert_eq!(keep::<u64>(Err(failure("first")), &mut failed), 0);
        assert_eq!(keep::<u64>(Err(failure("second")), &mut failed), 0);
        assert_eq!(keep(Ok(2_u64), &mut failed), 2);
        assert!(matches!(failed, Some(sqlx::Error::Protocol(ref what)) if what == "first"));
    }
}
