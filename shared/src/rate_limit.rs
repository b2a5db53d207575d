//! A provider's rate limit as the pace Herald keeps: the workers' send slots and the
//! scheduler's releases into the provider's lane both follow it.

use std::time::Duration;

/// Herald's pace as a share of the limit. Requests one limit apart are then a window plus
/// 3.6% apart (36 ms for a 1-second window): room for a request that leaves a little after
/// its slot (at most 10 ms, see the worker's `on_time`) and crosses to the provider more
/// slowly than the one a window before it (up to 25 ms measured on a busy 2-core machine)
/// and send slots placed a millisecond or two apart by two workers' clocks, without putting
/// one request too many into some window at the provider's end.
const SAFETY: f64 = 0.965;

/// The spacing between requests for a provider allowing `limit` per `window`: a little
/// wider than the exact quotient.
pub fn spacing(limit: u32, window: Duration) -> Duration {
    window.div_f64(f64::from(limit.max(1)) * SAFETY)
}

/// Requests per second at that spacing.
pub fn per_second(limit: u32, window: Duration) -> f64 {
    1.0 / spacing(limit, window).as_secs_f64().max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pace_stays_under_the_limit() {
        assert_eq!(spacing(20, Duration::from_secs(1)).as_micros(), 51_813);
        let pace = per_second(20, Duration::from_secs(1));
        assert!((pace - 19.3).abs() < 1e-6, "{pace}");
        let hourly = per_second(10_000, Duration::from_secs(3600));
        assert!(hourly < 10_000.0 / 3600.0);
        let s = spacing(50, Duration::from_secs(1));
        assert!(s > Duration::from_micros(20_700) && s < Duration::from_micros(20_750));
        assert_eq!(spacing(10_000, Duration::from_secs(3600)).as_millis(), 373);
    }
}
