//! The pure decision: given the configuration, what is known about the request and its
//! idempotency key, the rate-limit window and a few random numbers, what to answer and
//! after how long. No I/O, no clock, no randomness of its own.

use std::f64::consts::TAU;
use std::time::Duration;

use rand::Rng;

use crate::config::{BehaviourConfig, Latency};
use crate::rate_limit::SlidingLog;

/// Latency samples are clamped to this many milliseconds.
const MAX_SAMPLE_MS: f64 = 86_400_000.0;

/// Uniform random numbers in `[0, 1)` consumed by one decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Draws {
    /// Picks between server error, timeout and success.
    pub outcome: f64,
    /// Used to sample the latency distribution.
    pub latency: [f64; 2],
}

impl Draws {
    pub fn sample<R: Rng + ?Sized>(rng: &mut R) -> Self {
        Self {
            outcome: rng.random(),
            latency: [rng.random(), rng.random()],
        }
    }
}

/// What is known about the request's idempotency key before this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyHistory {
    /// Requests already received with this key.
    pub prior_requests: u64,
    /// Whether an earlier request with this key was accepted.
    pub accepted: bool,
}

/// The request as seen by the decision.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The `to` number, or `None` when the body was not a valid message request.
    pub to: Option<&'a str>,
    /// History of the idempotency key, `None` for requests without a key.
    pub key: Option<KeyHistory>,
    /// Arrival time in milliseconds (only compared with other arrival times).
    pub arrived_ms: u64,
    /// Whether the request carried the credentials its API requires (always true for the
    /// generic API, which has none).
    pub authorized: bool,
    /// Whether its API refuses numbers that opted out (Twilio's Messages API keeps the
    /// STOP replies its senders received; WhatsApp reports its opt-outs later, and a
    /// generic provider keeps none).
    pub keeps_opt_outs: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidNumber {
    /// Not of the form `+[1-9]` followed by 1 to 14 digits.
    NotE164,
    /// Starts with the configured reject prefix.
    Rejected,
    /// Starts with the configured opted-out prefix, at an API that keeps opt-outs.
    OptedOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 401: missing or wrong credentials (decided before anything else).
    Unauthorized,
    /// 400 `bad_request`: the body is not a valid message request.
    BadRequest,
    /// 400 `invalid_number`: a permanent failure for this recipient.
    InvalidNumber(InvalidNumber),
    /// One of the first `of` requests for the key, answered with `status`.
    FailFirst { status: u16, attempt: u64, of: u32 },
    /// 429 with `Retry-After: retry_after_secs`.
    RateLimited { retry_after_secs: u64 },
    /// 500 `internal_error` (random, `error_rate`).
    ServerError,
    /// 503: the provider is down (`outage`).
    Unavailable,
    /// Hold then 504 `timeout` (random, `timeout_rate`).
    Timeout,
    /// 200 with a new message id.
    Accepted,
    /// A key accepted before, accepted again: a second message with an id of its own, or
    /// (honouring idempotency keys) the first answer replayed and nothing sent.
    Duplicate,
}

impl Outcome {
    pub fn status(&self) -> u16 {
        match self {
            Outcome::Unauthorized => 401,
            Outcome::BadRequest | Outcome::InvalidNumber(_) => 400,
            Outcome::FailFirst { status, .. } => *status,
            Outcome::RateLimited { .. } => 429,
            Outcome::ServerError => 500,
            Outcome::Unavailable => 503,
            Outcome::Timeout => 504,
            Outcome::Accepted | Outcome::Duplicate => 200,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    /// How long to wait before answering.
    pub delay: Duration,
    /// The request is taken, but its answer is lost (`lose_rate`): the connection drops.
    pub answer_lost: bool,
    /// The request is taken, and answered a 5xx all the same (`fail_after_send_rate`).
    pub failed_after_send: bool,
}

/// `^\+[1-9]\d{1,14}$`
pub fn is_e164(to: &str) -> bool {
    let Some(digits) = to.strip_prefix('+') else {
        return false;
    };
    let b = digits.as_bytes();
    (2..=15).contains(&b.len()) && b[0] != b'0' && b.iter().all(u8::is_ascii_digit)
}

/// Samples the latency distribution from two uniform numbers in `[0, 1)`.
pub fn sample_latency(latency: &Latency, u: [f64; 2]) -> Duration {
    let ms = match *latency {
        Latency::Fixed(ms) => ms,
        Latency::Uniform { min, max } => min + (max - min) * u[0],
        Latency::Normal { mean, stddev } => {
            // Box–Muller; 1 - u is in (0, 1] so the logarithm is finite.
            let z = (-2.0 * (1.0 - u[0]).ln()).sqrt() * (TAU * u[1]).cos();
            mean + stddev * z
        }
        Latency::Exp { mean } => -(1.0 - u[0]).ln() * mean,
    };
    let ms = if ms.is_finite() {
        ms.clamp(0.0, MAX_SAMPLE_MS)
    } else {
        0.0
    };
    Duration::from_micros((ms * 1_000.0).round() as u64)
}

/// Decides the answer to one message request (of any of the simulated APIs).
///
/// Order: an outage (everything 503) → missing credentials → malformed body → invalid/rejected number → fail-first → rate limit → random
/// server error → random timeout → success (a duplicate when the key was already
/// accepted), whose answer is lost for a further `lose_rate` of the draws. When a rate limit is configured, every request that is not answered 429 is
/// recorded in `limiter` (the ones decided before the rate-limit step included).
pub fn decide(
    cfg: &BehaviourConfig,
    req: &Request<'_>,
    limiter: &mut SlidingLog,
    draws: &Draws,
) -> Decision {
    let outcome = outcome(cfg, req, limiter, draws);
    let delay = match outcome {
        Outcome::Timeout => Duration::from_millis(cfg.timeout_hold_ms),
        _ => sample_latency(&cfg.latency, draws.latency),
    };
    // A success's draw is past the error and timeout bands; the next band loses its answer,
    // the one after answers a 5xx.
    let taken = matches!(outcome, Outcome::Accepted | Outcome::Duplicate);
    let lost_until = cfg.error_rate + cfg.timeout_rate + cfg.lose_rate;
    let answer_lost = taken && draws.outcome < lost_until;
    let failed_after_send =
        taken && !answer_lost && draws.outcome < lost_until + cfg.fail_after_send_rate;
    Decision {
        outcome,
        delay,
        answer_lost,
        failed_after_send,
    }
}

fn outcome(
    cfg: &BehaviourConfig,
    req: &Request<'_>,
    limiter: &mut SlidingLog,
    draws: &Draws,
) -> Outcome {
    if let Some(early) = early_outcome(cfg, req) {
        if let Some(rl) = cfg.rate_limit {
            limiter.record(req.arrived_ms, rl.window_ms);
        }
        return early;
    }
    if let Some(rl) = cfg.rate_limit
        && let Err(denied) = limiter.try_acquire(req.arrived_ms, rl.window_ms, rl.limit)
    {
        return Outcome::RateLimited {
            retry_after_secs: denied.retry_after_secs(),
        };
    }
    if draws.outcome < cfg.error_rate {
        Outcome::ServerError
    } else if draws.outcome < cfg.error_rate + cfg.timeout_rate {
        Outcome::Timeout
    } else if req.key.is_some_and(|k| k.accepted) {
        Outcome::Duplicate
    } else {
        Outcome::Accepted
    }
}

/// The outcomes decided before the rate limit.
fn early_outcome(cfg: &BehaviourConfig, req: &Request<'_>) -> Option<Outcome> {
    if cfg.outage {
        return Some(Outcome::Unavailable);
    }
    if !req.authorized {
        return Some(Outcome::Unauthorized);
    }
    let Some(to) = req.to else {
        return Some(Outcome::BadRequest);
    };
    if !is_e164(to) {
        return Some(Outcome::InvalidNumber(InvalidNumber::NotE164));
    }
    if cfg
        .reject_prefix
        .as_deref()
        .is_some_and(|p| to.starts_with(p))
    {
        return Some(Outcome::InvalidNumber(InvalidNumber::Rejected));
    }
    if req.keeps_opt_outs
        && cfg
            .opted_out_prefix
            .as_deref()
            .is_some_and(|p| to.starts_with(p))
    {
        return Some(Outcome::InvalidNumber(InvalidNumber::OptedOut));
    }
    if let Some(key) = req.key
        && key.prior_requests < u64::from(cfg.fail_first)
    {
        return Some(Outcome::FailFirst {
            status: cfg.fail_status,
            attempt: key.prior_requests + 1,
            of: cfg.fail_first,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_rate_limit;

    const NO_LUCK: Draws = Draws {
        outcome: 0.999,
        latency: [0.5, 0.5],
    };

    fn req(to: &str) -> Request<'_> {
        Request {
            to: Some(to),
            key: None,
            arrived_ms: 10_000,
            authorized: true,
            keeps_opt_outs: false,
        }
    }

    fn with_key(to: &str, prior_requests: u64, accepted: bool) -> Request<'_> {
        Request {
            key: Some(KeyHistory {
                prior_requests,
                accepted,
            }),
            ..req(to)
        }
    }

    fn decide_once(cfg: &BehaviourConfig, r: &Request<'_>, draws: &Draws) -> Outcome {
        decide(cfg, r, &mut SlidingLog::new(), draws).outcome
    }

    #[test]
    fn e164() {
        for ok in ["+15551234567", "+12", "+123456789012345", "+447911123456"] {
            assert!(is_e164(ok), "{ok}");
        }
        for bad in [
            "",
            "+",
            "+1",
            "15551234567",
            "+05551234567",
            "+1234567890123456",
            "+1555 123",
            "+1555-1234",
            "++15551234567",
            "+１５５５",
        ] {
            assert!(!is_e164(bad), "{bad}");
        }
    }

    #[test]
    fn default_config_accepts_immediately() {
        let cfg = BehaviourConfig::default();
        let d = decide(&cfg, &req("+15551234567"), &mut SlidingLog::new(), &NO_LUCK);
        assert_eq!(d.outcome, Outcome::Accepted);
        assert_eq!(d.delay, Duration::ZERO);
    }

    #[test]
    fn bad_body_and_bad_numbers_are_400() {
        let cfg = BehaviourConfig {
            reject_prefix: Some("+1999".to_owned()),
            fail_first: 5,
            error_rate: 1.0,
            ..Default::default()
        };
        let malformed = Request {
            to: None,
            ..req("")
        };
        assert_eq!(decide_once(&cfg, &malformed, &NO_LUCK), Outcome::BadRequest);
        assert_eq!(
            decide_once(&cfg, &with_key("5551234", 0, false), &NO_LUCK),
            Outcome::InvalidNumber(InvalidNumber::NotE164)
        );
        assert_eq!(
            decide_once(&cfg, &with_key("+19995550000", 0, false), &NO_LUCK),
            Outcome::InvalidNumber(InvalidNumber::Rejected)
        );
        assert_eq!(Outcome::BadRequest.status(), 400);
    }

    #[test]
    fn an_opted_out_number_is_refused_only_where_the_api_keeps_opt_outs() {
        let cfg = BehaviourConfig {
            opted_out_prefix: Some("+1998".to_owned()),
            ..Default::default()
        };
        let twilio = Request {
            keeps_opt_outs: true,
            ..req("+19985550000")
        };
        assert_eq!(
            decide_once(&cfg, &twilio, &NO_LUCK),
            Outcome::InvalidNumber(InvalidNumber::OptedOut)
        );
        let other_number = Request {
            keeps_opt_outs: true,
            ..req("+15555550000")
        };
        assert_eq!(
            decide_once(&cfg, &other_number, &NO_LUCK),
            Outcome::Accepted
        );
        // A generic provider never heard the STOP: it sends.
        assert_eq!(
            decide_once(&cfg, &req("+19985550000"), &NO_LUCK),
            Outcome::Accepted
        );
    }

    #[test]
    fn an_outage_answers_everything_503() {
        let cfg = BehaviourConfig {
            outage: true,
            ..Default::default()
        };
        let anonymous = Request {
            authorized: false,
            ..req("+15551234567")
        };
        assert_eq!(
            decide_once(&cfg, &anonymous, &NO_LUCK),
            Outcome::Unavailable
        );
        assert_eq!(Outcome::Unavailable.status(), 503);
    }

    #[test]
    fn missing_credentials_come_first() {
        let cfg = BehaviourConfig {
            fail_first: 5,
            ..Default::default()
        };
        let anonymous = Request {
            to: None,
            authorized: false,
            ..with_key("+15551234567", 0, false)
        };
        assert_eq!(
            decide_once(&cfg, &anonymous, &NO_LUCK),
            Outcome::Unauthorized
        );
        assert_eq!(Outcome::Unauthorized.status(), 401);
    }

    #[test]
    fn fail_first_then_success() {
        let cfg = BehaviourConfig {
            fail_first: 3,
            fail_status: 503,
            ..Default::default()
        };
        for prior in 0..3 {
            assert_eq!(
                decide_once(&cfg, &with_key("+15551234567", prior, false), &NO_LUCK),
                Outcome::FailFirst {
                    status: 503,
                    attempt: prior + 1,
                    of: 3
                }
            );
        }
        assert_eq!(
            decide_once(&cfg, &with_key("+15551234567", 3, false), &NO_LUCK),
            Outcome::Accepted
        );
        // Requests without a key are never failed on purpose.
        assert_eq!(
            decide_once(&cfg, &req("+15551234567"), &NO_LUCK),
            Outcome::Accepted
        );
    }

    #[test]
    fn repeated_success_is_a_duplicate() {
        let cfg = BehaviourConfig::default();
        assert_eq!(
            decide_once(&cfg, &with_key("+15551234567", 1, true), &NO_LUCK),
            Outcome::Duplicate
        );
    }

    #[test]
    fn error_and_timeout_rates_split_one_draw() {
        let cfg = BehaviourConfig {
            error_rate: 0.2,
            timeout_rate: 0.3,
            timeout_hold_ms: 1_234,
            ..Default::default()
        };
        let at = |u| Draws {
            outcome: u,
            latency: [0.0, 0.0],
        };
        let r = req("+15551234567");
        assert_eq!(decide_once(&cfg, &r, &at(0.0)), Outcome::ServerError);
        assert_eq!(decide_once(&cfg, &r, &at(0.199)), Outcome::ServerError);
        assert_eq!(decide_once(&cfg, &r, &at(0.2)), Outcome::Timeout);
        assert_eq!(decide_once(&cfg, &r, &at(0.499)), Outcome::Timeout);
        assert_eq!(decide_once(&cfg, &r, &at(0.5)), Outcome::Accepted);
        let d = decide(&cfg, &r, &mut SlidingLog::new(), &at(0.3));
        assert_eq!(d.delay, Duration::from_millis(1_234));
        // Rates of 1.0 and 0.0 are absolute.
        let always = BehaviourConfig {
            error_rate: 1.0,
            ..Default::default()
        };
        assert_eq!(
            decide_once(&always, &r, &at(0.999_999)),
            Outcome::ServerError
        );
        let never = BehaviourConfig::default();
        assert_eq!(decide_once(&never, &r, &at(0.0)), Outcome::Accepted);
    }

    #[test]
    fn lost_answers_are_successes_in_the_band_after_timeouts() {
        let cfg = BehaviourConfig {
            error_rate: 0.1,
            timeout_rate: 0.1,
            lose_rate: 0.3,
            ..Default::default()
        };
        let at = |u| Draws {
            outcome: u,
            latency: [0.0, 0.0],
        };
        let r = req("+15551234567");
        let d = |u| decide(&cfg, &r, &mut SlidingLog::new(), &at(u));
        assert!(!d(0.05).answer_lost);
        assert_eq!(d(0.15).outcome, Outcome::Timeout);
        assert!(!d(0.15).answer_lost);
        assert_eq!(d(0.2).outcome, Outcome::Accepted);
        assert!(d(0.2).answer_lost);
        assert!(d(0.499).answer_lost);
        assert!(!d(0.5).answer_lost);
        let failing = BehaviourConfig {
            fail_after_send_rate: 0.2,
            ..cfg
        };
        let d = |u| decide(&failing, &r, &mut SlidingLog::new(), &at(u));
        assert!(!d(0.499).failed_after_send, "lost, not failed");
        assert_eq!(d(0.5).outcome, Outcome::Accepted);
        assert!(d(0.5).failed_after_send);
        assert!(d(0.699).failed_after_send);
        assert!(!d(0.7).failed_after_send);
    }

    #[test]
    fn rate_limit_comes_after_fail_first_and_before_errors() {
        let cfg = BehaviourConfig {
            rate_limit: parse_rate_limit("2/1s").unwrap(),
            error_rate: 0.5,
            fail_first: 1,
            ..Default::default()
        };
        let mut log = SlidingLog::new();
        let ok_draw = NO_LUCK;
        let err_draw = Draws {
            outcome: 0.1,
            ..NO_LUCK
        };
        // A fail-first answer is not rate limited but uses up capacity.
        let first = decide(
            &cfg,
            &with_key("+15551234567", 0, false),
            &mut log,
            &ok_draw,
        );
        assert_eq!(first.outcome.status(), 500);
        let second = decide(
            &cfg,
            &with_key("+15551234567", 1, false),
            &mut log,
            &err_draw,
        );
        assert_eq!(second.outcome, Outcome::ServerError);
        let third = decide(
            &cfg,
            &with_key("+15551234567", 2, false),
            &mut log,
            &ok_draw,
        );
        assert_eq!(
            third.outcome,
            Outcome::RateLimited {
                retry_after_secs: 1
            }
        );
        assert_eq!(third.outcome.status(), 429);
        // Later, capacity is back.
        let later = Request {
            arrived_ms: 11_000,
            ..with_key("+15551234567", 3, false)
        };
        assert_eq!(
            decide(&cfg, &later, &mut log, &ok_draw).outcome,
            Outcome::Accepted
        );
    }

    #[test]
    fn no_rate_limit_records_nothing() {
        let cfg = BehaviourConfig::default();
        let mut log = SlidingLog::new();
        decide(&cfg, &req("+15551234567"), &mut log, &NO_LUCK);
        assert_eq!(log.count(10_000, 1_000), 0);
    }

    #[test]
    fn latency_is_applied_to_every_answer() {
        let cfg = BehaviourConfig {
            latency: Latency::Fixed(25.0),
            ..Default::default()
        };
        let malformed = Request {
            to: None,
            ..req("")
        };
        let d = decide(&cfg, &malformed, &mut SlidingLog::new(), &NO_LUCK);
        assert_eq!(d.delay, Duration::from_millis(25));
    }

    #[test]
    fn latency_sampling() {
        let ms = |l: Latency, u| sample_latency(&l, u).as_secs_f64() * 1_000.0;
        assert_eq!(ms(Latency::Fixed(7.5), [0.3, 0.3]), 7.5);
        let uni = Latency::Uniform {
            min: 10.0,
            max: 20.0,
        };
        assert_eq!(ms(uni, [0.0, 0.0]), 10.0);
        assert_eq!(ms(uni, [0.5, 0.0]), 15.0);
        assert!(ms(uni, [0.999_999, 0.0]) <= 20.0);
        let exp = Latency::Exp { mean: 100.0 };
        assert_eq!(ms(exp, [0.0, 0.0]), 0.0);
        let at_median = ms(exp, [0.5, 0.0]);
        assert!((at_median - 100.0 * 2f64.ln()).abs() < 0.01, "{at_median}");
        let normal = Latency::Normal {
            mean: 50.0,
            stddev: 10.0,
        };
        // cos(2π·0.25) = 0 → exactly the mean.
        assert!((ms(normal, [0.7, 0.25]) - 50.0).abs() < 0.01);
        // Far in the left tail, clamped at zero.
        assert_eq!(ms(normal, [0.999_999_9, 0.5]), 0.0);
    }

    #[test]
    fn sampled_distributions_have_the_right_moments() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let n = 20_000;
        let mean_of = |l: Latency, rng: &mut rand::rngs::StdRng| {
            (0..n)
                .map(|_| sample_latency(&l, Draws::sample(rng).latency).as_secs_f64() * 1e3)
                .sum::<f64>()
                / n as f64
        };
        let exp = mean_of(Latency::Exp { mean: 40.0 }, &mut rng);
        assert!((exp - 40.0).abs() < 2.0, "exp mean {exp}");
        let normal = Latency::Normal {
            mean: 100.0,
            stddev: 15.0,
        };
        let nm = mean_of(normal, &mut rng);
        assert!((nm - 100.0).abs() < 1.0, "normal mean {nm}");
        let uni = mean_of(
            Latency::Uniform {
                min: 0.0,
                max: 10.0,
            },
            &mut rng,
        );
        assert!((uni - 5.0).abs() < 0.2, "uniform mean {uni}");
    }
}
