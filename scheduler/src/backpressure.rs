//! How much to publish this tick: keep the dispatch queue about one tick of work deep.
//!
//! A deep queue is what makes a newcomer wait: its first message lands behind everything
//! already queued. So the scheduler measures how fast the workers drain the queue and only
//! tops it up to `drain rate × tick × depth_ticks`. When the queue ran dry while the last tick
//! was budget-limited, the workers may have been starved, so the estimate probes upwards
//! (like TCP slow start) until the queue stops running dry.

use std::time::Duration;

/// Bounds and shape of the budget.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub tick: Duration,
    /// Target queue depth, in ticks of drain.
    pub depth_ticks: f64,
    /// Budget at start and the floor when nothing is known.
    pub min_budget: u32,
    /// Never publish more than this in one tick.
    pub max_budget: u32,
}

/// Growth factor when the queue ran dry under a budget-limited tick.
const PROBE_GROWTH: f64 = 2.0;
/// Weight of the newest drain measurement in the moving average.
const EWMA_ALPHA: f64 = 0.5;

#[derive(Debug, Clone)]
pub struct DrainEstimator {
    limits: Limits,
    /// Messages per second the workers drain, as estimated.
    rate: f64,
    /// Queue depth right after the last publish, and whether that publish used all its budget.
    last: Option<(u64, bool)>,
}

impl DrainEstimator {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            rate: 0.0,
            last: None,
        }
    }

    /// Estimated drain rate in messages per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Takes in the queue depth seen at the start of a tick, `elapsed` after the last publish,
    /// and returns how many messages may be published now.
    pub fn budget(&mut self, depth: u64, elapsed: Duration) -> u32 {
        if let Some((after_publish, budget_limited)) = self.last.take() {
            let secs = elapsed.as_secs_f64().max(0.001);
            let observed = after_publish.saturating_sub(depth) as f64 / secs;
            if depth == 0 {
                // Everything was drained: `observed` is only a lower bound on the capacity.
                self.rate = self.rate.max(observed);
                if budget_limited {
                    self.rate = self.rate.max(self.floor_rate()) * PROBE_GROWTH;
                }
            } else {
                self.rate = EWMA_ALPHA * observed + (1.0 - EWMA_ALPHA) * self.rate;
            }
            let ceiling =
                f64::from(self.limits.max_budget) / self.limits.tick.as_secs_f64().max(0.001);
            self.rate = self.rate.min(ceiling);
        }
        let target = (self.rate * self.limits.tick.as_secs_f64() * self.limits.depth_ticks)
            .max(f64::from(self.limits.min_budget));
        let room = (target - depth as f64).max(0.0);
        (room as u32).min(self.limits.max_budget)
    }

    /// Records what was published after [`budget`](Self::budget) returned `budget`.
    pub fn published(&mut self, depth_before: u64, published: u32, budget: u32) {
        self.last = Some((
            depth_before + u64::from(published),
            budget > 0 && published >= budget,
        ));
    }

    fn floor_rate(&self) -> f64 {
        f64::from(self.limits.min_budget) / self.limits.tick.as_secs_f64().max(0.001)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            est.published(depth, budget, budget);
            depth = (depth + u64::from(budget)).saturating_sub(capacity);
        }
        trace
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
        // Capacity below the floor: the queue stays about one floor deep, not growing.
        assert!(trace.iter().all(|&(depth, _)| depth <= 150), "{trace:?}");
    }

    #[test]
    fn an_idle_scheduler_does_not_inflate_the_estimate() {
        let mut est = estimator();
        for _ in 0..10 {
            let budget = est.budget(0, TICK);
            est.published(0, 0, budget);
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
}
