//! The retry schedule: exponential backoff with jitter.

use std::time::Duration;

/// A provider's retry policy (from the `providers` table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; after the last, a transient failure is final.
    pub max_attempts: u32,
    /// Delay before the second attempt.
    pub base: Duration,
    /// No delay exceeds this.
    pub cap: Duration,
}

impl RetryPolicy {
    /// Whether a recipient that has just made `attempts` attempts may try again.
    pub fn allows_another(&self, attempts: u32) -> bool {
        attempts < self.max_attempts
    }

    /// The delay after the `attempt`-th failed attempt (1-based).
    ///
    /// `base · 2^(attempt-1)`, capped, then "equal jitter": half of it is fixed and the other
    /// half random, so retries of a burst spread out but never come sooner than half the step.
    /// `unit` is a random number in `[0, 1)`, passed in so the schedule stays a pure function.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30);
        let step = self.base.saturating_mul(1u32 << exponent).min(self.cap);
        let half = step / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(10),
        }
    }

    #[test]
    fn delays_double_and_stay_within_the_jitter_band() {
        let p = policy();
        assert_eq!(p.delay(1, 0.0), Duration::from_millis(250));
        assert_eq!(p.delay(1, 1.0), Duration::from_millis(500));
        assert_eq!(p.delay(2, 0.0), Duration::from_millis(500));
        assert_eq!(p.delay(3, 1.0), Duration::from_millis(2000));
    }

    #[test]
    fn delays_are_capped_even_for_huge_attempt_numbers() {
        let p = policy();
        assert_eq!(p.delay(10, 1.0), Duration::from_secs(10));
        assert_eq!(p.delay(u32::MAX, 1.0), Duration::from_secs(10));
    }

    #[test]
    fn max_attempts_counts_the_first_attempt() {
        let p = policy();
        assert!(p.allows_another(4));
        assert!(!p.allows_another(5));
    }
}
