//! An exact sliding-window counter over millisecond timestamps.
//!
//! The log keeps one `(millisecond, count)` entry per millisecond that saw traffic inside
//! the window, so memory is bounded by `min(requests, window_ms)` entries and every check is
//! amortised O(1). A request at time `t` belongs to the windows `(t - window, t]`.

use std::collections::VecDeque;

/// Sliding window of event timestamps (milliseconds, expected non-decreasing).
#[derive(Debug, Clone, Default)]
pub struct SlidingLog {
    entries: VecDeque<(u64, u64)>,
    total: u64,
}

/// Answer of [`SlidingLog::try_acquire`] when the limit is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    /// Milliseconds until a request would be admitted again (at least 1).
    pub retry_after_ms: u64,
}

impl Denied {
    /// The value for a `Retry-After` header: whole seconds, rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after_ms.div_ceil(1_000).max(1)
    }
}

impl SlidingLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets every event.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.total = 0;
    }

    /// Drops the events that fell out of the window ending at `now_ms`.
    fn prune(&mut self, now_ms: u64, window_ms: u64) {
        let Some(cutoff) = now_ms.checked_sub(window_ms) else {
            return;
        };
        while let Some(&(ts, n)) = self.entries.front() {
            if ts > cutoff {
                break;
            }
            self.entries.pop_front();
            self.total -= n;
        }
    }

    /// Number of events in the window `(now_ms - window_ms, now_ms]`.
    #[cfg(test)]
    pub fn count(&mut self, now_ms: u64, window_ms: u64) -> u64 {
        self.prune(now_ms, window_ms);
        self.total
    }

    /// Records one event unconditionally and returns the number of events now in the window.
    ///
    /// A timestamp older than the newest one recorded (concurrent arrivals that took the
    /// lock out of order) is counted with the newest timestamp.
    pub fn record(&mut self, now_ms: u64, window_ms: u64) -> u64 {
        self.prune(now_ms, window_ms);
        match self.entries.back_mut() {
            Some((ts, n)) if *ts >= now_ms => *n += 1,
            _ => self.entries.push_back((now_ms, 1)),
        }
        self.total += 1;
        self.total
    }

    /// Records one event if fewer than `limit` events are in the window, otherwise tells
    /// how long until one would be admitted. Denied events are not recorded.
    pub fn try_acquire(&mut self, now_ms: u64, window_ms: u64, limit: u64) -> Result<(), Denied> {
        self.prune(now_ms, window_ms);
        if self.total < limit {
            self.record(now_ms, window_ms);
            return Ok(());
        }
        // Find the entry whose expiry brings the count below the limit.
        let mut remaining = self.total;
        let mut expiry = now_ms + 1;
        for &(ts, n) in &self.entries {
            remaining -= n;
            if remaining < limit {
                expiry = ts + window_ms;
                break;
            }
        }
        Err(Denied {
            retry_after_ms: expiry.saturating_sub(now_ms).max(1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_then_denies() {
        let mut log = SlidingLog::new();
        for t in 0..3 {
            assert_eq!(log.try_acquire(1_000 + t, 1_000, 3), Ok(()));
        }
        let denied = log.try_acquire(1_500, 1_000, 3).unwrap_err();
        // The first event (t=1000) leaves the window at 2000 → 500 ms from now.
        assert_eq!(denied.retry_after_ms, 500);
        assert_eq!(denied.retry_after_secs(), 1);
        // Denied requests are not counted.
        assert_eq!(log.count(1_500, 1_000), 3);
    }

    #[test]
    fn window_slides() {
        let mut log = SlidingLog::new();
        assert!(log.try_acquire(1_000, 1_000, 2).is_ok());
        assert!(log.try_acquire(1_600, 1_000, 2).is_ok());
        assert!(log.try_acquire(1_999, 1_000, 2).is_err());
        // At 2000 the event at 1000 is out of (1000, 2000].
        assert!(log.try_acquire(2_000, 1_000, 2).is_ok());
        assert!(log.try_acquire(2_100, 1_000, 2).is_err());
        assert_eq!(log.count(2_600, 1_000), 1);
        assert_eq!(log.count(3_000, 1_000), 0);
    }

    #[test]
    fn never_more_than_limit_in_any_window() {
        let mut log = SlidingLog::new();
        let mut admitted = Vec::new();
        for t in (10_000..20_000).step_by(3) {
            if log.try_acquire(t, 250, 7).is_ok() {
                admitted.push(t);
            }
        }
        for (i, &t) in admitted.iter().enumerate() {
            let in_window = admitted[i..].iter().take_while(|&&u| u < t + 250).count();
            assert!(in_window <= 7, "{in_window} events in window starting {t}");
        }
        // ...and the limiter is not over-conservative: ~7 per 250ms over 10s.
        assert!(admitted.len() >= 7 * 39, "only {} admitted", admitted.len());
    }

    #[test]
    fn same_millisecond_events_share_an_entry() {
        let mut log = SlidingLog::new();
        for _ in 0..5 {
            log.record(5_000, 1_000);
        }
        assert_eq!(log.entries.len(), 1);
        assert_eq!(log.count(5_000, 1_000), 5);
        let denied = log.try_acquire(5_200, 1_000, 5).unwrap_err();
        assert_eq!(denied.retry_after_ms, 800);
    }

    #[test]
    fn out_of_order_timestamps_are_clamped() {
        let mut log = SlidingLog::new();
        log.record(5_000, 1_000);
        log.record(4_999, 1_000);
        assert_eq!(log.entries.len(), 1);
        assert_eq!(log.count(5_999, 1_000), 2);
        assert_eq!(log.count(6_000, 1_000), 0);
    }

    #[test]
    fn retry_after_covers_forced_records_above_the_limit() {
        let mut log = SlidingLog::new();
        // Events recorded without a check (e.g. fail-first answers) can exceed the limit.
        log.record(1_000, 1_000);
        log.record(1_100, 1_000);
        log.record(1_200, 1_000);
        let denied = log.try_acquire(1_300, 1_000, 2).unwrap_err();
        // Needs two events to expire: the one at 1100 expires at 2100.
        assert_eq!(denied.retry_after_ms, 800);
        let long = Denied {
            retry_after_ms: 2_001,
        };
        assert_eq!(long.retry_after_secs(), 3);
    }

    #[test]
    fn early_timestamps_do_not_underflow() {
        let mut log = SlidingLog::new();
        assert!(log.try_acquire(0, 1_000, 1).is_ok());
        assert!(log.try_acquire(10, 1_000, 1).is_err());
        assert_eq!(log.count(999, 1_000), 1);
        assert_eq!(log.count(1_000, 1_000), 0);
    }

    #[test]
    fn clear_forgets_everything() {
        let mut log = SlidingLog::new();
        log.record(1, 1_000);
        log.clear();
        assert_eq!(log.count(2, 1_000), 0);
    }
}
