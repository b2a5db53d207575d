//! Each provider's lane (its own dispatch queue), as the scheduler sees it: how fast the
//! workers drain it, and so how much to publish into it.
//!
//! Lanes are measured and budgeted independently: a provider that answers in 2 s drains its
//! lane slowly and gets a small budget, while a fast provider's lane is kept full. Neither
//! queue grows deeper than about a tick of its own drain, so a new campaign on either waits
//! at most about a tick for its first send.

use crate::backpressure::{DrainEstimator, Limits};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};
use uuid::Uuid;

struct Lane {
    estimator: DrainEstimator,
    measured_at: Instant,
    /// What the last publish says of the work waiting for the lane.
    hunger: Hunger,
    /// For a rate-limited provider: releases into the lane follow its pace.
    pace: Option<Pace>,
    /// The last budget was cut by the pace, not by the drain: the provider is at its rate
    /// limit, and what it cannot take may overflow.
    at_pace: bool,
}

/// What a lane's last publish says of the work waiting for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hunger {
    /// It fell short of the budget with no campaign held to a batch: nothing more waits (or
    /// the lane has nothing due now).
    Fed,
    /// It used the whole budget: more may wait.
    BudgetUsed,
    /// It fell short of the budget only because campaigns were held to a whole batch while
    /// they had more due, and something went out.
    Held,
}

impl Hunger {
    /// After `published` of `budget` went out; `held`: campaigns got whole batches and have
    /// more due.
    fn after(published: u32, budget: u32, held: bool) -> Self {
        if budget > 0 && published >= budget {
            Self::BudgetUsed
        // Not if nothing went out (every message refused): the lane would be polled and
        // refilled at the quicker pace only to be refused again, and for the drain estimate
        // such a pass ran out of work (nothing of the drain was measured).
        } else if budget > 0 && held && published > 0 {
            Self::Held
        } else {
            Self::Fed
        }
    }
}

/// A token bucket at the provider's pace. The drain estimate alone cannot see a rate limit:
/// workers take a lane's messages into their prefetch as fast as they come and then wait
/// for send slots, so the lane always looks drained. Releasing no faster than the pace
/// keeps what a rate-limited provider cannot send in time out of its lane, where an
/// overflow provider can take it.
#[derive(Debug, Clone, Copy)]
struct Pace {
    per_second: f64,
    tokens: f64,
    refilled_at: Instant,
}

pub struct Lanes {
    limits: Limits,
    lanes: HashMap<Uuid, Lane>,
}

impl Lanes {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            lanes: HashMap::new(),
        }
    }

    fn lane(&mut self, provider: Uuid) -> &mut Lane {
        let limits = self.limits;
        self.lanes.entry(provider).or_insert_with(|| Lane {
            estimator: DrainEstimator::new(limits),
            measured_at: Instant::now(),
            hunger: Hunger::Fed,
            pace: None,
            at_pace: false,
        })
    }

    /// At a tick: takes in the lane's depth, updates its drain estimate and returns how many
    /// messages may be published into it.
    pub fn budget(&mut self, provider: Uuid, depth: u64) -> u32 {
        let limits = self.limits;
        let lane = self.lane(provider);
        // A lane that sat out ticks (no due work) was not watched meanwhile: what drained
        // then says nothing about the rate, so start a new measurement.
        if lane.measured_at.elapsed() > stale_after(limits.tick) {
            lane.estimator.restart();
        }
        let budget = lane.estimator.budget(depth, lane.measured_at.elapsed());
        lane.measured_at = Instant::now();
        lane.paced(budget, limits.tick)
    }

    /// Sets (or clears) the pace of a provider's lane: the requests per second its rate
    /// limit allows. Call before [`budget`](Self::budget) or [`top_up`](Self::top_up).
    pub fn set_pace(&mut self, provider: Uuid, per_second: Option<f64>) {
        let limits = self.limits;
        let lane = self.lane(provider);
        lane.pace = match (per_second, lane.pace) {
            (None, _) => None,
            (Some(per_second), Some(pace)) => Some(Pace { per_second, ..pace }),
            // A new lane may start with its target depth's worth at once.
            (Some(per_second), None) => Some(Pace {
                per_second,
                tokens: most_tokens(per_second, limits.tick),
                refilled_at: Instant::now(),
            }),
        };
    }

    /// Between ticks, for a lane that [`needs_top_up`](Self::needs_top_up) and was seen at
    /// `depth`: how many messages bring it back to its target depth.
    pub fn top_up(&mut self, provider: Uuid, depth: u64, now: Instant) -> u32 {
        let tick = self.limits.tick;
        self.lanes.get_mut(&provider).map_or(0, |lane| {
            let room = lane.estimator.top_up(depth, now);
            lane.paced(room, tick)
        })
    }

    /// Records what was published into a lane after `budget` was granted; `held`: campaigns
    /// got whole batches and have more due (see [`DrainEstimator::published`]).
    pub fn published(&mut self, provider: Uuid, published: u32, budget: u32, held: bool) {
        if let Some(lane) = self.lanes.get_mut(&provider) {
            lane.hunger = Hunger::after(published, budget, held);
            lane.estimator
                .published(published, budget, lane.hunger == Hunger::Held);
            if let Some(pace) = lane.pace.as_mut() {
                pace.tokens = (pace.tokens - f64::from(published)).max(0.0);
            }
        }
    }

    /// At a tick or a top-up: lanes with no due work now are not hungry, whatever their last
    /// publish was (their campaigns finished, paused, or their provider's breaker opened);
    /// left hungry, they would be polled for top-ups that publish nothing, for good.
    pub fn only_due(&mut self, due: &BTreeSet<Uuid>) {
        for (provider, lane) in &mut self.lanes {
            if !due.contains(provider) {
                lane.hunger = Hunger::Fed;
            }
        }
    }

    /// Lanes whose last publish used their whole budget, or held campaigns to a batch while
    /// they had more due: work waits for them, so they are topped up as soon as the workers
    /// empty them. (Without the second, a campaign alone in its lane got one batch a tick,
    /// 500 msg/s at the default batch of 1,000, however fast its workers.)
    pub fn hungry(&self) -> Vec<Uuid> {
        let mut hungry: Vec<Uuid> = self
            .lanes
            .iter()
            .filter(|(_, lane)| lane.hunger != Hunger::Fed)
            .map(|(id, _)| *id)
            .collect();
        hungry.sort();
        hungry
    }

    /// Whether the lane's last budget was set by its provider's rate limit rather than by
    /// how fast the workers drain it. Only then is the provider saturated: workers that
    /// cannot keep up are no reason to pay a costlier provider.
    pub fn at_pace(&self, provider: Uuid) -> bool {
        self.lanes.get(&provider).is_some_and(|l| l.at_pace)
    }

    /// Whether a pass has seen this lane (measured it, or read its pace).
    pub fn knows(&self, provider: Uuid) -> bool {
        self.lanes.contains_key(&provider)
    }

    /// Whether the lane's last publish held campaigns to a batch while they had more due:
    /// such a lane holds about a batch per campaign, which fast workers empty well within
    /// the usual poll, so it is looked at as often as a cold one.
    pub fn held(&self, provider: Uuid) -> bool {
        self.lanes
            .get(&provider)
            .is_some_and(|l| l.hunger == Hunger::Held)
    }

    pub fn needs_top_up(&self, provider: Uuid) -> bool {
        self.lanes
            .get(&provider)
            .is_some_and(|l| l.hunger != Hunger::Fed)
    }

    /// Whether the lane's drain estimate is still zero: nothing measured of it yet (a cold
    /// start, whose top-ups may double, see [`DrainEstimator::top_up`]), or only ticks in which
    /// nothing drained.
    pub fn cold(&self, provider: Uuid) -> bool {
        self.rate(provider) == 0.0
    }

    /// The drain estimate of a lane, in messages per second.
    pub fn rate(&self, provider: Uuid) -> f64 {
        self.lanes
            .get(&provider)
            .map_or(0.0, |l| l.estimator.rate())
    }
}

impl Lane {
    /// `budget`, capped by the pace's tokens (refilled up to two ticks' worth).
    fn paced(&mut self, budget: u32, tick: Duration) -> u32 {
        let Some(pace) = self.pace.as_mut() else {
            self.at_pace = false;
            return budget;
        };
        let now = Instant::now();
        let most = most_tokens(pace.per_second, tick);
        pace.tokens = (pace.tokens
            + pace.per_second
                * now
                    .saturating_duration_since(pace.refilled_at)
                    .as_secs_f64())
        .min(most);
        pace.refilled_at = now;
        let allowed = pace.tokens as u32;
        self.at_pace = allowed < budget;
        budget.min(allowed)
    }
}

/// What a paced lane's bucket holds at most: two ticks' worth, and never less than one whole
/// request. A pace slower than one request in two ticks (1,000 a day with 2 s ticks) would
/// otherwise cap the bucket below one, and the lane would be given nothing, ever: its
/// recipients would wait for good.
fn most_tokens(per_second: f64, tick: Duration) -> f64 {
    (per_second * tick.as_secs_f64() * 2.0).max(1.0)
}

fn stale_after(tick: Duration) -> Duration {
    tick * 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_short_of_its_budget_is_hungry_only_if_it_held_campaigns_to_a_batch() {
        assert_eq!(Hunger::after(100, 100, false), Hunger::BudgetUsed);
        // Its budget used up, a lane is hungry at the usual pace, held or not.
        assert_eq!(Hunger::after(100, 100, true), Hunger::BudgetUsed);
        assert_eq!(Hunger::after(40, 100, true), Hunger::Held);
        assert_eq!(Hunger::after(40, 100, false), Hunger::Fed);
        // Nothing went out (the broker refused it all), or nothing was allowed.
        assert_eq!(Hunger::after(0, 100, true), Hunger::Fed);
        assert_eq!(Hunger::after(0, 0, true), Hunger::Fed);
        assert_eq!(Hunger::after(5, 0, true), Hunger::Fed);
    }

    fn lanes() -> Lanes {
        Lanes::new(Limits {
            tick: Duration::from_secs(1),
            depth_ticks: 1.0,
            min_budget: 100,
            max_budget: 10_000,
        })
    }

    #[test]
    fn lanes_are_budgeted_apart() {
        let (fast, slow) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut lanes = lanes();
        assert_eq!(lanes.budget(fast, 0), 100);
        assert_eq!(lanes.budget(slow, 0), 100);
        lanes.published(fast, 100, 100, false);
        lanes.published(slow, 10, 100, false);
        assert_eq!(lanes.hungry(), vec![fast]);
        assert!(lanes.needs_top_up(fast) && !lanes.needs_top_up(slow));
        // The fast lane drained everything and ran dry: its estimate grows; the slow lane's
        // backlog leaves its budget alone.
        std::thread::sleep(Duration::from_millis(20));
        let fast_budget = lanes.budget(fast, 0);
        let slow_budget = lanes.budget(slow, 500);
        assert!(fast_budget > 100, "fast lane budget {fast_budget}");
        assert_eq!(slow_budget, 0);
    }

    #[test]
    fn a_paced_lane_gets_no_more_than_its_pace() {
        let lane = Uuid::from_u128(1);
        let mut lanes = lanes();
        lanes.set_pace(lane, Some(20.0));
        // Two ticks' worth to start with, then what the pace adds.
        assert_eq!(lanes.budget(lane, 0), 40);
        lanes.published(lane, 40, 40, false);
        std::thread::sleep(Duration::from_millis(100));
        let next = lanes.budget(lane, 0);
        assert!((1..=3).contains(&next), "after 0.1 s at 20/s: {next}");
        assert!(
            lanes.at_pace(lane),
            "the pace, not the drain, cut the budget"
        );
        lanes.set_pace(lane, None);
        assert!(lanes.budget(lane, 0) >= 100);
        assert!(!lanes.at_pace(lane), "no rate limit: never at its pace");
    }

    #[test]
    fn a_pace_slower_than_a_request_in_two_ticks_still_sends() {
        let lane = Uuid::from_u128(1);
        let mut lanes = lanes();
        // 1,000 a day: 0.0116 a second, 0.023 a two-tick bucket.
        lanes.set_pace(lane, Some(1_000.0 / 86_400.0));
        assert_eq!(lanes.budget(lane, 0), 1, "one request at first");
        lanes.published(lane, 1, 1, false);
        assert_eq!(
            lanes.budget(lane, 0),
            0,
            "then none until the pace refills one"
        );
    }

    #[test]
    fn a_paced_lane_that_drains_slowly_is_not_at_its_pace() {
        let lane = Uuid::from_u128(1);
        let mut lanes = lanes();
        lanes.set_pace(lane, Some(1_000.0));
        // Workers have not taken the last messages: the drain, not the pace, sets the budget.
        assert_eq!(lanes.budget(lane, 5_000), 0);
        assert!(!lanes.at_pace(lane));
    }

    #[test]
    fn a_lane_without_due_work_stops_being_hungry() {
        let (busy, done) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut lanes = lanes();
        for lane in [busy, done] {
            let budget = lanes.budget(lane, 0);
            lanes.published(lane, budget, budget, false);
        }
        assert_eq!(lanes.hungry(), vec![busy, done]);
        lanes.only_due(&BTreeSet::from([busy]));
        assert_eq!(lanes.hungry(), vec![busy]);
    }

    #[test]
    fn a_lane_that_held_campaigns_to_a_batch_is_hungry_and_its_drain_is_measured() {
        let (held, out) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut lanes = lanes();
        for lane in [held, out] {
            assert_eq!(lanes.budget(lane, 0), 100);
        }
        // Both published 30 of 100: one because its campaigns got whole batches and have
        // more due, the other because it had nothing more.
        lanes.published(held, 30, 100, true);
        lanes.published(out, 30, 100, false);
        assert_eq!(lanes.hungry(), vec![held]);
        assert!(lanes.held(held) && !lanes.held(out));
        // Topped up when it ran dry, the held lane's workers were kept busy: its next budget
        // follows what they drained.
        assert!(lanes.top_up(held, 0, Instant::now()) > 0);
        lanes.published(held, 30, 100, true);
        std::thread::sleep(Duration::from_millis(50));
        let next = lanes.budget(held, 0);
        assert!(next > 100, "60 drained in about 50 ms: {next}");
        // A later publish that is not held clears it.
        lanes.published(held, 5, next, false);
        assert!(!lanes.held(held) && lanes.hungry().is_empty());
    }

    #[test]
    fn unknown_lanes_get_no_top_up() {
        let mut lanes = lanes();
        assert_eq!(lanes.top_up(Uuid::from_u128(9), 0, Instant::now()), 0);
        assert!(lanes.hungry().is_empty());
    }
}
