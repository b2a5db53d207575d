//! How much to publish this tick: keep the dispatch queue about one tick of work deep.
//!
//! A deep queue is what makes a newcomer wait: its first message lands behind everything
//! already queued. So the scheduler measures how fast the workers drain the queue and only
//! tops it up to `drain rate × tick × depth_ticks`. When the queue ran dry while work was
//! waiting for budget, the workers may have been starved, so the estimate probes upwards (like
//! TCP slow start) until the queue stops running dry; work held back by campaigns' batch
//! sizes is no reason to (a bigger budget would publish no more).
//!
//! The rate is measured only over whole ticks. Between ticks, the scheduler may top the
//! queue up when it sees it empty ([`DrainEstimator::top_up`]): that keeps fast workers fed
//! and makes a cold start quick, but it never changes the estimate, because a measurement
//! over a fraction of a tick is dominated by the messages the workers' prefetch buffers
//! swallow at once, and would overshoot.

use std::time::{Duration, Instant};

/// Bounds and shape of the budget.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub tick: Duration,
    /// Target queue depth, in ticks of drain.
    pub depth_ticks: f64,
    /// Budget at start and the floor when nothing is known.
    pub min_budget: u32,
    /// Never publish more than this in one pass (a tick, a top-up or a wake).
    pub max_budget: u32,
}

/// Growth factor when the queue ran dry with work waiting.
const PROBE_GROWTH: f64 = 2.0;
/// Weight of the newest drain measurement in the moving average.
const EWMA_ALPHA: f64 = 0.5;

/// What happened since the last measurement.
#[derive(Debug, Clone, Copy)]
struct Window {
    depth_at_start: u64,
    published: u64,
    /// A publish used its whole budget: more work was waiting.
    budget_limited: bool,
    /// The queue was seen empty between ticks (and topped up).
    ran_dry: bool,
    /// A publish found less work than its budget: the lane had nothing more due.
    ran_out: bool,
    /// The last top-up: when, and how much of what it allowed was published.
    last_top_up: Option<(Instant, u32)>,
}

#[derive(Debug, Clone)]
pub struct DrainEstimator {
    limits: Limits,
    /// Messages per second the workers drain, as estimated.
    rate: f64,
    /// Whether the last tick measured what the workers can do (they were kept busy: work
    /// was left in the lane, or more was waiting than the lane was given), rather than
    /// only a lower bound (a quiet lane that ran out of work, a lane back from sitting out
    /// ticks, or nothing measured).
    capacity_known: bool,
    window: Option<Window>,
}

impl DrainEstimator {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            rate: 0.0,
            capacity_known: false,
            window: None,
        }
    }

    /// Drops the measurement in progress: the next [`budget`](Self::budget) starts a new one
    /// and keeps the estimate as it is.
    pub fn restart(&mut self) {
        self.window = None;
        // A lane back after sitting out ticks: what its workers could do then says little
        // about what they can do now.
        self.capacity_known = false;
    }

    /// Estimated drain rate in messages per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// At a tick: takes in the queue depth now, `elapsed` since the previous tick, updates
    /// the estimate and returns how many messages may be published.
    pub fn budget(&mut self, depth: u64, elapsed: Duration) -> u32 {
        if let Some(window) = self.window.take() {
            let secs = elapsed.as_secs_f64().max(0.001);
            let drained = (window.depth_at_start + window.published).saturating_sub(depth);
            let observed = drained as f64 / secs;
            // Busy: work was left in the lane at either tick, or more was waiting than it
            // was given; not if it ran out of work.
            self.capacity_known = !window.ran_out
                && (depth > 0
                    || window.depth_at_start > 0
                    || window.budget_limited
                    || window.ran_dry);
            if window.ran_dry {
                // Topped up whenever it ran dry, the workers were kept busy all tick long:
                // `observed` is close to what they can do (each top-up brought a whole
                // target's worth, so a faster fleet shows up in the next measurement).
                self.rate = self.rate.max(observed);
            } else if depth == 0 {
                // Idle at some point with nobody topping up: `observed` is only a lower
                // bound, so probe upwards if work was waiting.
                self.rate = self.rate.max(observed);
                if window.budget_limited {
                    // From the known rate: from the floor's, a lane slower than the floor
                    // would be filled with several ticks of work each time it probes.
                    self.rate = if self.rate > 0.0 {
                        self.rate * PROBE_GROWTH
                    } else {
                        self.floor_rate() * PROBE_GROWTH
                    };
                }
            } else {
                self.rate = EWMA_ALPHA * observed + (1.0 - EWMA_ALPHA) * self.rate;
            }
            let ceiling =
                f64::from(self.limits.max_budget) / self.limits.tick.as_secs_f64().max(0.001);
            self.rate = self.rate.min(ceiling);
        }
        self.window = Some(Window {
            depth_at_start: depth,
            published: 0,
            budget_limited: false,
            ran_dry: false,
            ran_out: false,
            last_top_up: None,
        });
        self.room(depth)
    }

    /// Between ticks, when the queue was seen at `depth` (normally 0) at `now` while work is
    /// waiting: how many messages may be published to bring it back to the target depth. The
    /// estimate is left alone.
    ///
    /// At a cold start (no drain measured yet), a queue found empty again soon after the last
    /// top-up (within a quarter tick) was drained faster than anything known: each such
    /// top-up may be twice the last (slow start within the first tick). Found empty later,
    /// but within a tick of it, it gets as much as the last published again: the workers took
    /// all of it within a tick, and falling back to the floor would start the probe over
    /// (seen: 12,800 drained in 0.55 s, then 200, 400, … while the workers idled). Neither
    /// once the lane ran out of work: what was published then says nothing of the workers.
    pub fn top_up(&mut self, depth: u64, now: Instant) -> u32 {
        let room = self.room(depth);
        let quick = self.limits.tick / 4;
        let Some(window) = self.window.as_mut() else {
            return room;
        };
        window.ran_dry |= depth == 0;
        // Only while nothing is measured yet (a cold start): later, a queue found empty may
        // only mean the workers' prefetch swallowed the last top-up, and doubling on that
        // would fill the queue deeper than a newcomer can afford to wait behind.
        let cold = self.rate == 0.0;
        let room = match window.last_top_up {
            Some((at, last)) if cold && depth == 0 && !window.ran_out => {
                let since = now.saturating_duration_since(at);
                let grown = if since <= quick {
                    last.saturating_mul(2)
                } else if since <= self.limits.tick {
                    last
                } else {
                    0
                };
                room.max(grown).min(self.limits.max_budget)
            }
            _ => room,
        };
        window.last_top_up = Some((now, room));
        room
    }

    /// Records what was published after [`budget`](Self::budget) or
    /// [`top_up`](Self::top_up) returned `budget`. `held` says campaigns were given a whole
    /// batch (their `batch_size`, the most one pass gives a campaign) and have more due, and
    /// something went out: a publish short of its budget then did not run out of work (the
    /// workers' drain is still measured), but neither did the budget hold it back (no probing
    /// upwards).
    pub fn published(&mut self, published: u32, budget: u32, held: bool) {
        if let Some(window) = self.window.as_mut() {
            window.published += u64::from(published);
            if let Some((_, last)) = window.last_top_up.as_mut() {
                *last = (*last).min(published);
            }
            let short = published < budget;
            window.budget_limited |= budget > 0 && !short;
            window.ran_out |= budget > 0 && short && !held;
        }
    }

    fn room(&self, depth: u64) -> u32 {
        // The floor stands in for a drain only known as a lower bound (a quiet lane, whose
        // next burst should not go out in dribbles). Where the workers' capacity was
        // measured, it is no floor: a lane slower than the floor per tick would hold several
        // ticks of work, and a newcomer would wait behind all of it (200 messages are 20 s
        // of a 10/s lane).
        let drain = self.rate * self.limits.tick.as_secs_f64() * self.limits.depth_ticks;
        let target = if self.capacity_known {
            drain.max(1.0)
        } else {
            drain.max(f64::from(self.limits.min_budget))
        };
        let room = (target - depth as f64).max(0.0);
        (room as u32).min(self.limits.max_budget)
    }

    fn floor_rate(&self) -> f64 {
        f64::from(self.limits.min_budget) / self.limits.tick.as_secs_f64().max(0.001)
    }
}

/// How often the scheduler looks at hungry lanes between ticks to top them up
/// ([`DrainEstimator::top_up`]): an eighth of a tick, or a fortieth for a `quick` lane: one
/// that is cold (nothing measured yet), or holds campaigns to their batch size
/// ([`crate::lanes::Lanes::held`]). At a cold start each top-up found drained within a quarter
/// tick may double, so the poll sets how fast a new campaign reaches its workers' speed: at
/// an eighth of a 2 s tick a lane of fast workers took about 0.7 s to go from the floor's 200
/// messages to full speed, the workers idle between polls (BENCHMARKS.md, "2026-12-07").
/// Cold only until a tick measures a drain (on the leader, the lane's first tick after its
/// start; a standby polls nothing, [`crate::tick::Ticker::stand_down`]); held only while a
/// campaign's batch is what limits its lane. Otherwise polls stay rare: one broker round trip
/// per hungry lane each.
pub fn starvation_poll(tick: Duration, quick: bool) -> Duration {
    if quick {
        (tick / 40).max(Duration::from_millis(20))
    } else {
        (tick / 8).max(Duration::from_millis(50))
    }
}

/// How long workers draining at `rate` (messages per second) take to empty a lane `depth`
/// deep: 0 for an empty lane, infinite for a lane nothing drains.
pub fn drain_seconds(depth: u64, rate: f64) -> f64 {
    if depth == 0 {
        0.0
    } else if rate > 0.0 {
        depth as f64 / rate
    } else {
        f64::INFINITY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cold_lane_is_polled_more_often() {
        let tick = Duration::from_secs(2);
        assert_eq!(starvation_poll(tick, false), Duration::from_millis(250));
        assert_eq!(starvation_poll(tick, true), Duration::from_millis(50));
        // Short ticks (the tests') keep a floor under both.
        let short = Duration::from_millis(200);
        assert_eq!(starvation_poll(short, false), Duration::from_millis(50));
        assert_eq!(starvation_poll(short, true), Duration::from_millis(20));
    }

    #[test]
    fn drain_time_is_depth_over_rate() {
        assert_eq!(drain_seconds(0, 0.0), 0.0);
        assert_eq!(drain_seconds(500, 250.0), 2.0);
        assert!(drain_seconds(1, 0.0).is_infinite());
    }

    const TICK: Duration = Duration::from_secs(1);

    fn estimator() -> DrainEstimator {
        DrainEstimator::new(Limits {
            tick: TICK,
            depth_ticks: 1.0,
            min_budget: 100,
            max_budget: 10_000,
        })
    }

    /// Simulates workers draining `capacity` messages per tick against a steady backlog.
    fn run(est: &mut DrainEstimator, capacity: u64, ticks: usize) -> Vec<(u64, u32)> {
        let mut depth = 0u64;
        let mut trace = Vec::new();
        for _ in 0..ticks {
            let budget = est.budget(depth, TICK);
            trace.push((depth, budget));
            est.published(budget, budget, false);
            depth = (depth + u64::from(budget)).saturating_sub(capacity);
        }
        trace
    }

    #[test]
    fn a_lane_held_to_its_campaigns_batches_is_not_probed_upwards() {
        let mut est = estimator();
        let mut budget = est.budget(0, TICK);
        // Each tick its campaigns' batches come to 30 with more due, and the workers empty
        // the lane before the next: what they drained is a lower bound, and a bigger budget
        // would publish no more.
        for _ in 0..20 {
            est.published(30, budget, true);
            budget = est.budget(0, TICK);
        }
        assert_eq!(budget, 100, "the floor, not a probe towards the ceiling");
        // Topped up when it ran dry, its workers' drain is measured: the tick's batches and
        // the top-up's, 60 in a tick.
        est.published(30, budget, true);
        let room = est.top_up(0, Instant::now());
        est.published(30, room, true);
        assert_eq!(est.budget(0, TICK), 60);
    }

    #[test]
    fn starts_at_the_floor() {
        assert_eq!(estimator().budget(0, TICK), 100);
    }

    #[test]
    fn probes_up_to_the_drain_rate_and_keeps_the_queue_shallow() {
        let mut est = estimator();
        let trace = run(&mut est, 2_000, 40);
        // After ramping up, ticks publish on average what one tick drains (the probe above
        // capacity when the queue runs dry is paid back by the ticks after it)...
        let late: u32 = trace[20..].iter().map(|&(_, budget)| budget).sum::<u32>() / 20;
        assert!(
            (1_800..=2_400).contains(&late),
            "average budget {late}: {trace:?}"
        );
        // ...and what is left in the queue at a tick never exceeds about one tick of work.
        assert!(trace.iter().all(|&(depth, _)| depth <= 2_100), "{trace:?}");
    }

    #[test]
    fn slow_workers_get_a_shallow_queue() {
        let mut est = estimator();
        let trace = run(&mut est, 50, 20);
        // Capacity below the floor, no top-ups: the queue left at a tick stays about one
        // tick of work (see the next tests for the depth after a publish).
        assert!(trace.iter().all(|&(depth, _)| depth <= 60), "{trace:?}");
    }

    #[test]
    fn an_idle_scheduler_does_not_inflate_the_estimate() {
        let mut est = estimator();
        for _ in 0..10 {
            let budget = est.budget(0, TICK);
            est.published(0, budget, false);
        }
        assert_eq!(est.budget(0, TICK), 100);
    }

    #[test]
    fn never_exceeds_the_maximum() {
        let mut est = estimator();
        let trace = run(&mut est, 1_000_000, 40);
        assert!(trace.iter().all(|&(_, budget)| budget <= 10_000));
        assert_eq!(trace[39].1, 10_000);
    }

    /// Workers that drain `capacity` per tick, with a prefetch buffer that swallows up to
    /// `prefetch` messages the moment they are published; the scheduler tops up whenever it
    /// sees the queue empty, `polls` times per tick.
    fn run_with_top_ups(
        est: &mut DrainEstimator,
        capacity: u64,
        prefetch: u64,
        polls: u64,
        ticks: usize,
    ) -> u64 {
        let (mut depth, mut buffered, mut deepest) = (0u64, 0u64, 0u64);
        let start = Instant::now();
        let publish = |depth: &mut u64, buffered: &mut u64, n: u32| {
            *depth += u64::from(n);
            let moved = (*depth).min(prefetch - *buffered);
            *depth -= moved;
            *buffered += moved;
        };
        // As the scheduler's lanes: topped up only after a publish that used a whole budget
        // (a pass that gave the lane nothing leaves it not hungry until the next tick).
        for tick in 0..ticks {
            let budget = est.budget(depth, TICK);
            publish(&mut depth, &mut buffered, budget);
            est.published(budget, budget, false);
            let mut hungry = budget > 0;
            deepest = deepest.max(depth);
            for poll in 0..polls {
                let now = start + TICK * tick as u32 + TICK * (poll as u32 + 1) / polls as u32;
                // Drain a slice of a tick, then refill the prefetch buffer from the queue.
                buffered = buffered.saturating_sub(capacity / polls);
                publish(&mut depth, &mut buffered, 0);
                if depth == 0 && hungry {
                    let budget = est.top_up(0, now);
                    publish(&mut depth, &mut buffered, budget);
                    est.published(budget, budget, false);
                    hungry = budget > 0;
                    deepest = deepest.max(depth);
                }
            }
        }
        deepest
    }

    #[test]
    fn top_ups_feed_fast_workers_without_inflating_the_estimate() {
        let mut est = estimator();
        // 300 per tick with a 60-message prefetch: top-ups every eighth of a tick must not
        // make the estimate run away (the queue stays about one tick of work deep).
        let deepest = run_with_top_ups(&mut est, 300, 60, 8, 30);
        assert!(deepest <= 700, "queue reached {deepest}");
        assert!(
            (250.0..=700.0).contains(&est.rate()),
            "estimate {} for 300/tick",
            est.rate()
        );
    }

    #[test]
    fn a_busy_lane_slower_than_the_floor_holds_about_one_tick_of_work() {
        // 30 a tick with a 10-message prefetch, topped up whenever it runs dry: the floor
        // (100 here) would hold three ticks of work, and a newcomer would wait behind it.
        let mut est = estimator();
        run_with_top_ups(&mut est, 30, 10, 8, 10);
        let deepest = run_with_top_ups(&mut est, 30, 10, 8, 20);
        assert!(deepest <= 45, "queue reached {deepest}");
    }

    #[test]
    fn a_quiet_lane_keeps_the_floor_for_its_next_burst() {
        // A trickle of 5 messages a tick, each gone by the next: only a lower bound of what
        // the workers could do, so a burst may still go out a floor at a time.
        let mut est = estimator();
        for _ in 0..10 {
            let budget = est.budget(0, TICK);
            est.published(budget.min(5), budget, false);
        }
        assert_eq!(est.budget(0, TICK), 100);
    }

    #[test]
    fn a_cold_lane_drained_more_slowly_than_a_doubling_keeps_its_last_top_up() {
        let mut est = estimator();
        let start = Instant::now();
        assert_eq!(est.budget(0, TICK), 100);
        est.published(100, 100, false);
        let at = |ms: u64| start + Duration::from_millis(ms);
        // The first top-up brings the floor's room; each found empty within a quarter tick
        // of the last, twice the last.
        assert_eq!(est.top_up(0, at(50)), 100);
        est.published(100, 100, false);
        assert_eq!(est.top_up(0, at(100)), 200);
        est.published(200, 200, false);
        assert_eq!(est.top_up(0, at(150)), 400);
        est.published(400, 400, false);
        // Found empty only 300 ms later: drained within the tick all the same, so as much
        // again, not the floor.
        assert_eq!(est.top_up(0, at(450)), 400);
        est.published(400, 400, false);
        assert_eq!(est.top_up(0, at(500)), 800);
        // Not empty: what it holds comes off the room, as ever.
        est.published(800, 800, false);
        assert_eq!(est.top_up(50, at(900)), 100 - 50);
    }

    /// A cold lane whose last top-up, at 100 ms, allowed 200.
    fn cold_lane_after_two_top_ups(start: Instant) -> DrainEstimator {
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut est = estimator();
        est.budget(0, TICK);
        est.published(100, 100, false);
        assert_eq!(est.top_up(0, at(50)), 100);
        est.published(100, 100, false);
        assert_eq!(est.top_up(0, at(100)), 200);
        est
    }

    #[test]
    fn a_cold_lane_keeps_its_last_top_up_only_within_a_tick_and_while_work_lasts() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut est = cold_lane_after_two_top_ups(start);
        est.published(200, 200, false);
        // Found empty more than a tick later (a lane served only by wakes: no tick measures
        // it, so its window stays open): the floor's room, not the last top-up again.
        assert_eq!(est.top_up(0, at(1_200)), 100);

        let mut est = cold_lane_after_two_top_ups(start);
        // Only 150 of the 200 went out: the lane ran out of work, and the next top-up is
        // the floor's room, not twice what was published.
        est.published(150, 200, false);
        assert_eq!(est.top_up(0, at(150)), 100);
    }

    #[test]
    fn top_ups_reach_a_fast_drain_rate_within_a_few_ticks() {
        let mut est = estimator();
        run_with_top_ups(&mut est, 8_000, 2_000, 8, 4);
        assert!(
            est.rate() >= 4_000.0,
            "estimate {} after 4 ticks",
            est.rate()
        );
    }
}
