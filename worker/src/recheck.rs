//! The campaign asked again, right before a request that waited since its lease.
//!
//! The lease admits a recipient only while its campaign may send (running, before its
//! expiry, outside its quiet hours). Between the lease and the request there may be a wait:
//! a rate-limited provider's send slot (a throttle's `Retry-After` moves every slot of the
//! provider later, fleet-wide), or a lookup of an earlier lost answer. A pause, a cancel or
//! quiet hours that began meanwhile must still hold the request back: so a request leaving
//! more than [`STALE_AFTER`] after its lease was asked for asks again just before it
//! leaves, in one statement with every other request asking at the same time. (Its expiry
//! needs no statement: a send slot is never granted past it.)

use crate::outcome::Decision;
use herald_shared::batch::Batcher;
use sqlx::PgPool;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A request leaving within this of its lease goes on the lease's word.
pub const STALE_AFTER: Duration = Duration::from_secs(1);
/// How long before its send slot a paced request asks: time for the answer to come back
/// before the slot (as the pacer's own lead is for a reservation).
pub const ASK_BEFORE: Duration = Duration::from_millis(200);
/// Campaigns asked about in one statement at most.
const MAX_BATCH: usize = 500;

/// Whether a request leaving at `leaves_at` must ask again: its lease, asked for at
/// `lease_asked`, judged the campaign no sooner than that.
pub fn must_ask(lease_asked: Instant, leaves_at: Instant) -> bool {
    leaves_at.saturating_duration_since(lease_asked) > STALE_AFTER
}

/// What the campaign answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    MaySend,
    /// Paused, cancelled, in its quiet hours, past its expiry, or gone.
    HeldBack,
    /// No answer in time (the database failed or was slow): nothing is sent, as when the
    /// lease cannot be taken.
    CannotTell(String),
}

impl Answer {
    /// What the request gets instead of being sent: its recipient goes back to `pending`
    /// with no attempt spent, and its next lease parks it as its campaign now says.
    pub fn instead(self) -> Option<Decision> {
        let error = match self {
            Answer::MaySend => return None,
            Answer::HeldBack => "its campaign stopped sending (paused, cancelled, quiet hours \
                or expiry) while the request waited"
                .to_owned(),
            Answer::CannotTell(error) => {
                format!("cannot ask whether its campaign may still send: {error}")
            }
        };
        Some(Decision::Postponed {
            error,
            delay: Duration::ZERO,
        })
    }

    /// The `herald_pacing_slots_total` result of a send slot this answer leaves unused.
    pub fn slot_result(&self) -> &'static str {
        match self {
            Answer::MaySend => "reserved",
            Answer::HeldBack => "held_back",
            Answer::CannotTell(_) => "unchecked",
        }
    }
}

#[derive(Clone)]
pub struct Recheck {
    ask: Batcher<Uuid, Result<bool, String>>,
}

impl Recheck {
    pub fn new(pool: PgPool) -> Self {
        let ask = Batcher::spawn(MAX_BATCH, move |campaigns: Vec<Uuid>| {
            let pool = pool.clone();
            async move {
                let distinct: Vec<Uuid> = campaigns
                    .iter()
                    .copied()
                    .collect::<HashSet<_>>()
                    .into_iter()
                    .collect();
                // Bounded: one statement on a connection that leads nowhere (a failover)
                // would hold every later question for as long as TCP takes to notice.
                let asked = herald_store::campaigns::may_send_now(&pool, &distinct);
                match herald_shared::db::within(asked).await {
                    Ok(may) => {
                        let may: HashSet<Uuid> = may.into_iter().collect();
                        campaigns.iter().map(|c| Ok(may.contains(c))).collect()
                    }
                    Err(error) => {
                        let error = error.to_string();
                        campaigns.iter().map(|_| Err(error.clone())).collect()
                    }
                }
            }
        });
        Self { ask }
    }

    /// Whether `campaign` may send now, answered by `by` (the request's latest start).
    pub async fn ask(&self, campaign: Uuid, by: Instant) -> Answer {
        match tokio::time::timeout_at(by.into(), self.ask.call(campaign)).await {
            Ok(Ok(Ok(true))) => Answer::MaySend,
            Ok(Ok(Ok(false))) => Answer::HeldBack,
            Ok(Ok(Err(error))) => Answer::CannotTell(error),
            Ok(Err(stopped)) => Answer::CannotTell(stopped.to_string()),
            Err(_) => Answer::CannotTell("no answer before the request had to leave".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_request_leaving_well_after_its_lease_asks_again() {
        let asked = Instant::now();
        assert!(!must_ask(asked, asked));
        assert!(!must_ask(asked, asked + STALE_AFTER));
        assert!(must_ask(
            asked,
            asked + STALE_AFTER + Duration::from_millis(1)
        ));
        assert!(!must_ask(asked + Duration::from_millis(5), asked));
    }

    #[test]
    fn a_request_not_allowed_to_leave_waits_with_no_attempt_spent() {
        assert_eq!(Answer::MaySend.instead(), None);
        for answer in [Answer::HeldBack, Answer::CannotTell("down".into())] {
            let Some(Decision::Postponed { delay, .. }) = answer.instead() else {
                panic!("deferred expected");
            };
            assert_eq!(delay, Duration::ZERO);
        }
    }
}
