//! Circuit breakers: a provider answering mostly errors or timeouts is left alone for a
//! cool-down, then probed, instead of burning every recipient's attempts.
//!
//! Each worker keeps a breaker per provider over its own recent calls (this module: pure
//! decisions, no I/O). When one opens, the worker also tells the fleet (`provider_pacing.
//! open_until`, written by [`Breakers::record`]): the scheduler stops releasing that provider's
//! recipients until then, and the recipients already queued wait, with no attempt spent.
//!
//! ```text
//!  closed ──(≥ MIN_CALLS calls in the last 10 s, ≥ 60% failed)──▶ open (cool-down)
//!    ▲                                                                  │ cool-down over
//!    └──────────── probe succeeds ──── half-open (one probe) ◀──────────┘
//!                                        │ probe fails: open again, cool-down doubled
//! ```

use herald_store as store;
use sqlx::PgPool;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How far back calls are remembered. A time window, not the last N calls: answers arrive
/// sorted by how long they took, so the last N calls over-represent timeouts (the slowest
/// answers of all) and would open the breaker of a provider that is merely slow at times.
const WINDOW: Duration = Duration::from_secs(10);
/// Most calls remembered (the oldest go first).
const MAX_CALLS: usize = 2_000;
/// Calls needed before the breaker may judge.
const MIN_CALLS: usize = 20;
/// Share of failures among the remembered calls that opens the breaker: "mostly". A
/// provider failing 30% of requests is slow and costly, but up.
const TRIP_RATIO: f64 = 0.6;
pub const COOLDOWN_START: Duration = Duration::from_secs(2);
/// The longest cool-down: a probe is one request, so probing every few seconds costs the
/// provider nothing, while a long doubling cool-down left a provider that was back unused
/// for up to 18 s after a 20 s outage.
pub const COOLDOWN_MAX: Duration = Duration::from_secs(5);
/// How long a request waits while another one probes a half-open provider.
const PROBE_WAIT: Duration = Duration::from_secs(1);

/// What the provider's answer says about the provider's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// It answered (success, or a refusal about this request: the provider is up).
    Up,
    /// Timeout, connection error, 5xx.
    Failing,
}

/// Whether a request may go out now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Send,
    /// The provider is half-open: this request is the probe.
    Probe,
    /// Hold the recipient until then (no attempt spent).
    Wait(Instant),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug, Clone)]
pub struct Breaker {
    state: State,
    /// Recent calls: when, and `true` for a failure.
    calls: VecDeque<(Instant, bool)>,
    /// The next cool-down: doubles with each failed probe, back to the start on success.
    cooldown: Duration,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            state: State::Closed,
            calls: VecDeque::new(),
            cooldown: COOLDOWN_START,
        }
    }
}

impl Breaker {
    /// May a request go out at `now`?
    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.state {
            State::Closed => Admission::Send,
            State::Open { until } if now < until => Admission::Wait(until),
            State::Open { .. } | State::HalfOpen { probing: false } => {
                self.state = State::HalfOpen { probing: true };
                Admission::Probe
            }
            State::HalfOpen { probing: true } => Admission::Wait(now + PROBE_WAIT),
        }
    }

    /// Takes in a call's result at `now`; returns `Some(until)` when this call opened the
    /// breaker (so the fleet can be told).
    pub fn record(&mut self, health: Health, probe: bool, now: Instant) -> Option<Instant> {
        match (self.state, probe) {
            (State::HalfOpen { .. }, true) => {
                if health == Health::Up {
                    self.state = State::Closed;
                    self.calls.clear();
                    self.cooldown = COOLDOWN_START;
                    None
                } else {
                    self.cooldown = (self.cooldown * 2).min(COOLDOWN_MAX);
                    Some(self.open(now))
                }
            }
            (State::Closed, _) => {
                while self.calls.len() >= MAX_CALLS
                    || self
                        .calls
                        .front()
                        .is_some_and(|(at, _)| now.saturating_duration_since(*at) > WINDOW)
                {
                    self.calls.pop_front();
                }
                self.calls.push_back((now, health == Health::Failing));
                let failures = self.calls.iter().filter(|(_, failed)| *failed).count();
                let tripped = self.calls.len() >= MIN_CALLS
                    && failures as f64 >= TRIP_RATIO * self.calls.len() as f64;
                tripped.then(|| self.open(now))
            }
            // Answers to requests sent before the breaker opened change nothing.
            _ => None,
        }
    }

    /// The probe was admitted but never sent (it found no send slot in time): the next
    /// request probes instead, rather than every request waiting for an answer that will
    /// not come.
    pub fn probe_not_sent(&mut self) {
        if self.state == (State::HalfOpen { probing: true }) {
            self.state = State::HalfOpen { probing: false };
        }
    }

    /// Whether requests are being held back (open, or half-open with a probe out).
    pub fn is_open(&self, now: Instant) -> bool {
        match self.state {
            State::Closed => false,
            State::Open { until } => now < until,
            State::HalfOpen { probing } => probing,
        }
    }

    /// When the current cool-down ends, if open.
    pub fn open_until(&self) -> Option<Instant> {
        match self.state {
            State::Open { until } => Some(until),
            _ => None,
        }
    }

    /// Another worker opened the provider's breaker until `until`: follow it.
    pub fn opened_elsewhere(&mut self, until: Instant, now: Instant) {
        if until > now && self.state == State::Closed {
            self.state = State::Open { until };
            self.calls.clear();
        }
    }

    fn open(&mut self, now: Instant) -> Instant {
        let until = now + self.cooldown;
        self.state = State::Open { until };
        self.calls.clear();
        until
    }
}

/// This worker's breakers, one per provider, and the fleet's view of them in PostgreSQL.
#[derive(Clone)]
pub struct Breakers {
    pool: PgPool,
    breakers: Arc<Mutex<HashMap<Uuid, Breaker>>>,
}

impl Breakers {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            breakers: Arc::default(),
        }
    }

    fn with<T>(&self, provider: Uuid, f: impl FnOnce(&mut Breaker) -> T) -> T {
        let mut breakers = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
        f(breakers.entry(provider).or_default())
    }

    pub fn admit(&self, provider: Uuid) -> Admission {
        self.with(provider, |b| b.admit(Instant::now()))
    }

    /// See [`Breaker::probe_not_sent`].
    pub fn probe_not_sent(&self, provider: Uuid) {
        self.with(provider, Breaker::probe_not_sent);
    }

    /// Takes in a call's result. If it opened the breaker, tells the fleet, and answers
    /// until when the provider is left alone.
    pub async fn record(&self, provider: Uuid, health: Health, probe: bool) -> Option<Instant> {
        let opened = self.with(provider, |b| b.record(health, probe, Instant::now()))?;
        let secs = opened
            .saturating_duration_since(Instant::now())
            .as_secs_f64();
        tracing::warn!(%provider, cool_down_s = secs, "provider failing: circuit breaker open");
        let told =
            herald_shared::db::within(store::pacing::open_breaker(&self.pool, provider, secs))
                .await;
        if let Err(error) = told {
            tracing::warn!(%error, "could not tell the fleet about the open breaker");
        }
        Some(opened)
    }

    /// Until when the provider's breaker holds requests back, if it does.
    pub fn open_until(&self, provider: Uuid) -> Option<Instant> {
        self.with(provider, |b| {
            b.is_open(Instant::now()).then(|| b.open_until()).flatten()
        })
    }

    /// Follows breakers other workers opened (read every refresh).
    pub async fn sync(&self) -> Result<(), sqlx::Error> {
        let open = herald_shared::db::within(store::pacing::open_breakers(&self.pool)).await?;
        let now = Instant::now();
        for (provider, secs) in open {
            let until = now + Duration::from_secs_f64(secs.max(0.0));
            self.with(provider, |b| b.opened_elsewhere(until, now));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failing(breaker: &mut Breaker, n: usize, now: Instant) -> Option<Instant> {
        let mut opened = None;
        for _ in 0..n {
            opened = opened.or(breaker.record(Health::Failing, false, now));
        }
        opened
    }

    #[test]
    fn a_few_failures_do_not_open_it() {
        let now = Instant::now();
        let mut breaker = Breaker::default();
        assert_eq!(failing(&mut breaker, MIN_CALLS - 1, now), None);
        assert_eq!(breaker.admit(now), Admission::Send);
        // Half the calls failing amid successes neither.
        for _ in 0..MAX_CALLS {
            breaker.record(Health::Up, false, now);
            assert_eq!(breaker.record(Health::Failing, false, now), None);
        }
    }

    #[test]
    fn mostly_failures_open_it_for_a_cool_down_then_one_probe_goes() {
        let now = Instant::now();
        let mut breaker = Breaker::default();
        let until = failing(&mut breaker, MIN_CALLS, now).expect("opened");
        assert_eq!(until, now + COOLDOWN_START);
        assert_eq!(breaker.admit(now), Admission::Wait(until));
        assert!(breaker.is_open(now));
        assert_eq!(breaker.admit(until), Admission::Probe);
        assert!(
            matches!(breaker.admit(until), Admission::Wait(_)),
            "one probe at a time"
        );
        assert_eq!(breaker.record(Health::Up, true, until), None);
        assert_eq!(breaker.admit(until), Admission::Send);
        assert!(!breaker.is_open(until));
    }

    #[test]
    fn a_probe_that_was_not_sent_lets_the_next_request_probe() {
        let t0 = Instant::now();
        let mut b = Breaker {
            state: State::Open { until: t0 },
            ..Breaker::default()
        };
        assert_eq!(b.admit(t0), Admission::Probe);
        assert!(matches!(b.admit(t0), Admission::Wait(_)));
        b.probe_not_sent();
        assert_eq!(b.admit(t0), Admission::Probe);
    }

    #[test]
    fn failed_probes_double_the_cool_down_up_to_the_cap() {
        let mut now = Instant::now();
        let mut breaker = Breaker::default();
        failing(&mut breaker, MIN_CALLS, now);
        let mut cooldown = COOLDOWN_START;
        for _ in 0..10 {
            now = breaker.open_until().expect("open");
            assert_eq!(breaker.admit(now), Admission::Probe);
            cooldown = (cooldown * 2).min(COOLDOWN_MAX);
            assert_eq!(
                breaker.record(Health::Failing, true, now),
                Some(now + cooldown)
            );
        }
        assert_eq!(cooldown, COOLDOWN_MAX);
        // A successful probe closes it and resets the cool-down.
        now = breaker.open_until().expect("open");
        breaker.admit(now);
        breaker.record(Health::Up, true, now);
        assert_eq!(
            failing(&mut breaker, MIN_CALLS, now),
            Some(now + COOLDOWN_START)
        );
    }

    #[test]
    fn old_failures_are_forgotten() {
        let now = Instant::now();
        let mut breaker = Breaker::default();
        assert_eq!(failing(&mut breaker, MIN_CALLS - 1, now), None);
        let later = now + WINDOW + Duration::from_secs(1);
        assert_eq!(breaker.record(Health::Failing, false, later), None);
        assert_eq!(breaker.admit(later), Admission::Send);
    }

    #[test]
    fn late_answers_while_open_change_nothing() {
        let now = Instant::now();
        let mut breaker = Breaker::default();
        let until = failing(&mut breaker, MIN_CALLS, now).expect("opened");
        assert_eq!(breaker.record(Health::Up, false, now), None);
        assert_eq!(breaker.record(Health::Failing, false, now), None);
        assert_eq!(breaker.open_until(), Some(until));
    }

    #[test]
    fn follows_a_breaker_opened_elsewhere() {
        let now = Instant::now();
        let mut breaker = Breaker::default();
        breaker.opened_elsewhere(now + Duration::from_secs(5), now);
        assert!(matches!(breaker.admit(now), Admission::Wait(_)));
        assert_eq!(
            breaker.admit(now + Duration::from_secs(5)),
            Admission::Probe
        );
    }
}
