//! The worker fleet, as seen from one worker: a heartbeat row per live worker, carrying how
//! many requests that worker may have in flight to each provider, so that each worker can
//! take its share of every provider's fleet-wide in-flight cap without the fleet ever
//! exceeding it.
//!
//! A worker's share is `cap / live workers`, but it only takes what the others leave: the
//! cap less what they report they may be using (their caps, plus requests still in flight
//! from a larger cap they have given up). It shrinks at once; it grows only when its view of
//! the fleet has held for two heartbeats in a row, so that a worker coming back from a
//! database outage (during which every heartbeat went stale) does not take the whole cap
//! before the others have beaten again. A joining worker therefore starts at once with what
//! is free and grows as the others shrink; a killed worker's share is taken up once its
//! heartbeat is older than [`LIVE_FOR`].

use herald_shared::queue::message::per_message;
use herald_store as store;
use sqlx::PgPool;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A worker not seen for this long no longer counts (killed, or cut off): three heartbeats.
pub const LIVE_FOR: Duration = Duration::from_secs(6);

/// What a heartbeat learnt of the rest of the fleet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// Live workers, this one included.
    pub live: u32,
    /// Per provider, the requests the other live workers may have in flight.
    pub others: HashMap<Uuid, u32>,
    /// Per provider, the fewest requests any other live worker may have in flight, among
    /// those that may have any: the scheduler cuts the lane's batches for the fleet's
    /// smallest allowance, and this worker's prefetch counts in those batches.
    pub smallest_other: HashMap<Uuid, u32>,
}

/// Records that worker `id` is alive, reads how the rest of the fleet stands, and lets
/// `decide` choose this worker's caps from that, all under the fleet's lock (see
/// `herald_store::fleet::heartbeat`): `decide` answers the caps to publish (per provider,
/// the requests this worker may have in flight) and what to hand back to the caller.
pub async fn heartbeat<T>(
    pool: &PgPool,
    id: Uuid,
    name: &str,
    decide: impl FnOnce(&View) -> (HashMap<Uuid, u32>, T),
) -> Result<T, sqlx::Error> {
    store::fleet::heartbeat(pool, id, name, LIVE_FOR, |others| {
        decide(&View::of(&others))
    })
    .await
}

impl View {
    /// The fleet as this worker sees it, from the other live workers' caps.
    fn of(others: &[store::fleet::Caps]) -> Self {
        let mut view = View {
            live: 1 + u32::try_from(others.len()).unwrap_or(u32::MAX - 1),
            others: HashMap::new(),
            smallest_other: HashMap::new(),
        };
        for caps in others {
            for (&provider, &n) in caps {
                *view.others.entry(provider).or_default() += n;
                if n > 0 {
                    let smallest = view.smallest_other.entry(provider).or_insert(n);
                    *smallest = (*smallest).min(n);
                }
            }
        }
        view
    }
}

/// This worker's fair share of a fleet-wide cap: an equal part, at least one, never more
/// than the worker's own prefetch.
pub fn share(cap: u32, live_workers: u32, worker_prefetch: u16) -> u16 {
    let part = (cap / live_workers.max(1)).max(1);
    u16::try_from(part).unwrap_or(u16::MAX).min(worker_prefetch)
}

/// The cap this worker takes for one provider: its fair share, within what the others
/// leave; more than it has now only if `may_grow`.
pub fn allowed(share: u16, cap: u32, others: u32, current: u32, may_grow: bool) -> u32 {
    let next = u32::from(share).min(cap.saturating_sub(others));
    if next > current && !may_grow {
        current
    } else {
        next
    }
}

/// Whether the fleet leaves this worker any room for a provider (its fair share within what
/// the others hold), growth withheld or not: with none, its lane is idle and deliveries
/// waiting for room there go to another worker; with some but growth withheld (after an
/// outage, a fleet still changing), they wait.
pub fn has_room(share: u16, cap: u32, others: u32) -> bool {
    u32::from(share).min(cap.saturating_sub(others)) > 0
}

/// The allowance the scheduler cuts a lane's batches for: the smallest among the live
/// workers that may send to it ([`per_message`] of it), this one's `own` (as published)
/// included; 0 if none may.
pub fn batch_basis(own: u32, smallest_other: Option<u32>) -> u32 {
    match (own, smallest_other.filter(|&n| n > 0)) {
        (0, other) => other.unwrap_or(0),
        (own, Some(other)) => own.min(other),
        (own, None) => own,
    }
}

/// The lane's prefetch, in AMQP messages, for `allowed` requests in flight when the
/// scheduler cuts batches for the allowance `basis` ([`batch_basis`]). A delivery is acked
/// once its recipients are leased, and a recipient is leased only once it has room under
/// the cap ([`crate::delivery`]), so the prefetch holds only what waits for room or for its
/// lease: a quarter of the batches ([`per_message`]) that fill the allowance, and one more.
/// Fewer starved the lease statements at 0 ms (an eighth: about 9% fewer messages a second, the
/// statements carrying fewer recipients each); more would make a newcomer's batch wait
/// behind more of the lane (with a cap binding, about a quarter of the provider's latency,
/// and a few batches more: BENCHMARKS.md). Messages smaller than a full batch (a pass's
/// last, a trickle of transactional messages) fill less of it: it is a bound, not a target.
/// At least one (a lane at a cap of zero is not consumed at all: `consume`).
pub fn prefetch(allowed: u32, basis: u32) -> u16 {
    let per = u32::try_from(per_message(basis)).unwrap_or(1);
    u16::try_from(allowed.div_ceil(per).div_ceil(4).saturating_add(1)).unwrap_or(u16::MAX)
}

/// How steady this worker's view of the fleet is, heartbeat to heartbeat.
#[derive(Debug, Clone, Copy, Default)]
pub struct Steadiness {
    last: Option<(Instant, u32)>,
}

impl Steadiness {
    /// Notes a successful heartbeat that saw `live` workers at `now`, `every` apart;
    /// answers whether this worker may grow its caps: the previous heartbeat came on time
    /// (no outage in between) and saw no more workers than this one.
    pub fn beat(&mut self, live: u32, now: Instant, every: Duration) -> bool {
        let steady = self
            .last
            .is_some_and(|(at, seen)| now.duration_since(at) <= every * 2 && seen == live);
        self.last = Some((now, live));
        steady
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_told_apart_from_growth_withheld() {
        // Two workers, a cap of one: the one holding it leaves the other none.
        assert!(!has_room(share(1, 2, 300), 1, 1));
        // Room, but growth withheld (just after an outage): allowed nothing for now.
        assert!(has_room(share(10, 2, 300), 10, 5));
        assert_eq!(allowed(share(10, 2, 300), 10, 5, 0, false), 0);
    }

    #[test]
    fn the_view_sums_the_others_caps_and_keeps_their_smallest_nonzero_one() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let others = vec![
            HashMap::from([(a, 30), (b, 0)]),
            HashMap::from([(a, 10), (b, 5)]),
        ];
        let view = View::of(&others);
        assert_eq!(view.live, 3);
        assert_eq!(view.others, HashMap::from([(a, 40), (b, 5)]));
        assert_eq!(view.smallest_other, HashMap::from([(a, 10), (b, 5)]));
        assert_eq!(View::of(&[]).live, 1);
    }

    #[test]
    fn prefetch_holds_a_quarter_of_the_allowance_in_batches_and_one_more() {
        // Batches of 5 (40 / 8): 8 fill the allowance; a quarter of them and one more.
        assert_eq!(prefetch(40, 40), 3);
        assert_eq!(prefetch(41, 41), 4);
        // Batches of 20 (the most): 100 fill it.
        assert_eq!(prefetch(2_000, 2_000), 26);
        // Cut for a smaller worker beside this one (batches of 2): more of them.
        assert_eq!(prefetch(2_000, 16), 251);
        // Batches of one.
        assert_eq!(prefetch(3, 3), 2);
        assert_eq!(prefetch(0, 0), 1);
        assert_eq!(prefetch(u32::MAX, 0), u16::MAX);
    }

    #[test]
    fn batches_are_cut_for_the_smallest_worker_that_may_send() {
        assert_eq!(batch_basis(2_000, Some(16)), 16);
        assert_eq!(batch_basis(16, Some(2_000)), 16);
        // Workers that may not send (a joining one at 0) do not count.
        assert_eq!(batch_basis(2_000, Some(0)), 2_000);
        assert_eq!(batch_basis(0, Some(40)), 40);
        assert_eq!(batch_basis(2_000, None), 2_000);
        assert_eq!(batch_basis(0, None), 0);
    }

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

    #[test]
    fn a_worker_takes_only_what_the_others_leave() {
        // Joining beside two workers holding 50 each of 100: nothing yet, then a third as
        // they shrink.
        assert_eq!(allowed(33, 100, 100, 0, false), 0);
        assert_eq!(allowed(33, 100, 66, 0, true), 33);
        // Shrinking is at once, whatever the view.
        assert_eq!(allowed(33, 100, 66, 50, false), 33);
        assert_eq!(allowed(50, 100, 80, 50, false), 20);
        // Growing waits for a steady view.
        assert_eq!(allowed(100, 100, 0, 50, false), 50);
        assert_eq!(allowed(100, 100, 0, 50, true), 100);
        // A cap below the worker count: the last to come gets none.
        assert_eq!(allowed(1, 3, 3, 0, true), 0);
    }

    #[test]
    fn growing_needs_two_steady_heartbeats_in_a_row() {
        let every = Duration::from_secs(2);
        let t = Instant::now();
        let mut view = Steadiness::default();
        assert!(!view.beat(2, t, every), "a first heartbeat");
        assert!(view.beat(2, t + every, every));
        assert!(!view.beat(1, t + every * 2, every), "a worker just went");
        assert!(view.beat(1, t + every * 3, every));
        // After an outage the others' heartbeats are stale: no growth on the first beat.
        assert!(!view.beat(1, t + every * 20, every));
        assert!(view.beat(1, t + every * 21, every));
        assert!(!view.beat(2, t + every * 22, every), "a worker joined");
    }
}
