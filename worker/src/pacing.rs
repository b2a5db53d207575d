//! Fleet-wide pacing of requests to rate-limited providers.
//!
//! A provider limited to N requests per window gets one request every `window / N`, across
//! all workers: each worker reserves send times from the provider's row in
//! `provider_pacing` (GCRA: the next free time moves forward one spacing per request), many
//! reservations per statement, then waits for its slots. A slot is granted only within
//! [`HORIZON`] of now: the worker reserves it before taking the recipient's lease and sends
//! right when it comes (so a slow lease statement cannot bunch requests together), and the
//! lease (provider timeout + grace) always outlasts the wait. A request that finds every slot
//! within the horizon taken waits, holding nothing but its delivery, and asks again.
//!
//! When the provider throttles anyway (429 or its throttle error), [`Pacer::throttled`]
//! doubles the provider's slowdown (at most once per second, however many requests in flight
//! are refused together) and pushes the next free time past any `Retry-After`; the slowdown
//! then decays back towards the configured rate (×0.8 per second), probing back up.

use crate::batch::Batcher;
use sqlx::PgPool;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Never slower than this many times the configured rate.
const MAX_SLOWDOWN: f64 = 64.0;
/// Reservations answered by one statement at most.
const MAX_BATCH: usize = 500;
/// How far ahead a send slot may be granted. Well under the lease grace (10 s by default).
pub const HORIZON: Duration = Duration::from_secs(4);
/// A request that missed its slot by more than this (a busy machine, a slow lease statement)
/// takes a new one instead of going out late: late requests would bunch with the next ones
/// and break the limit in some window, so any request is sent within this of its slot.
const LATE: Duration = Duration::from_millis(10);
/// No slot is granted sooner than this: time for the lease statement to finish before the
/// slot comes, so that requests leave on their slots rather than late and bunched.
const LEAD: Duration = Duration::from_millis(150);

/// The answer to a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Send at this time.
    At(Instant),
    /// Every slot within the horizon is taken; ask again at this time.
    Full(Instant),
}

/// A request for one send slot of a provider whose requests are `spacing` apart.
#[derive(Debug, Clone, Copy)]
pub struct Reservation {
    pub provider: Uuid,
    pub spacing: Duration,
}

#[derive(Clone)]
pub struct Pacer {
    pool: PgPool,
    reserve: Batcher<Reservation, Result<Slot, String>>,
}

impl Pacer {
    pub fn new(pool: PgPool) -> Self {
        let db = pool.clone();
        let reserve = Batcher::spawn(MAX_BATCH, move |requests: Vec<Reservation>| {
            let db = db.clone();
            async move { reserve_all(&db, &requests).await }
        });
        Self { pool, reserve }
    }

    /// A send slot within the horizon, waiting (without reserving) while there is none.
    pub async fn slot(&self, reservation: Reservation) -> Result<Instant, String> {
        loop {
            match self
                .reserve
                .call(reservation)
                .await
                .map_err(|e| e.to_string())??
            {
                Slot::At(at) => return Ok(at),
                Slot::Full(retry_at) => tokio::time::sleep_until(retry_at.into()).await,
            }
        }
    }

    /// Waits for `slot`, then returns when the request may go: at its slot, or at a new one
    /// if it missed that by more than [`LATE`].
    pub async fn send_on_slot(
        &self,
        provider: &crate::providers::Provider,
        mut slot: Instant,
    ) -> Result<(), String> {
        let Some(spacing) = provider.pacing else {
            return Ok(());
        };
        loop {
            tokio::time::sleep_until(slot.into()).await;
            if Instant::now() <= slot + LATE {
                return Ok(());
            }
            slot = self
                .slot(Reservation {
                    provider: provider.id,
                    spacing,
                })
                .await?;
        }
    }

    /// The provider refused a request for being too fast.
    pub async fn throttled(
        &self,
        provider: Uuid,
        retry_after: Option<Duration>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO provider_pacing AS p (provider_id, next_at, slowdown, throttled_at)
             VALUES ($1, clock_timestamp() + make_interval(secs => $2), 2.0, clock_timestamp())
             ON CONFLICT (provider_id) DO UPDATE SET
                 slowdown = CASE WHEN p.throttled_at > clock_timestamp() - interval '1 second'
                                 THEN p.slowdown ELSE least(p.slowdown * 2, $3) END,
                 next_at = greatest(p.next_at, clock_timestamp() + make_interval(secs => $2)),
                 throttled_at = clock_timestamp(),
                 updated_at = clock_timestamp()",
        )
        .bind(provider)
        .bind(retry_after.unwrap_or_default().as_secs_f64())
        .bind(MAX_SLOWDOWN)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// Answers every reservation of a batch: one statement per provider in it.
async fn reserve_all(pool: &PgPool, requests: &[Reservation]) -> Vec<Result<Slot, String>> {
    let mut by_provider: HashMap<Uuid, (Duration, Vec<usize>)> = HashMap::new();
    for (index, r) in requests.iter().enumerate() {
        by_provider
            .entry(r.provider)
            .or_insert_with(|| (r.spacing, Vec::new()))
            .1
            .push(index);
    }
    let mut answers: Vec<Result<Slot, String>> =
        vec![Err("not reserved".to_owned()); requests.len()];
    for (provider, (spacing, indices)) in by_provider {
        match reserve(pool, provider, spacing, indices.len()).await {
            Ok(slots) => {
                for (index, slot) in indices.into_iter().zip(slots) {
                    answers[index] = Ok(slot);
                }
            }
            Err(error) => {
                for index in indices {
                    answers[index] = Err(format!("reserving a send slot: {error}"));
                }
            }
        }
    }
    answers
}

/// Reserves up to `count` consecutive slots within the horizon; the rest are told when to
/// ask again.
async fn reserve(
    pool: &PgPool,
    provider: Uuid,
    spacing: Duration,
    count: usize,
) -> Result<Vec<Slot>, sqlx::Error> {
    sqlx::query("INSERT INTO provider_pacing (provider_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(provider)
        .execute(pool)
        .await?;
    // The slowdown decays with the time since the last reservation, so that a provider
    // that stopped throttling is probed back up to its configured rate.
    let (granted, first_secs, spacing_secs): (i32, f64, f64) = sqlx::query_as(
        "WITH cur AS (
             SELECT clock_timestamp() AS now,
                    greatest(next_at, clock_timestamp() + make_interval(secs => $5)) AS free_at,
                    greatest(1.0, slowdown * power(0.8, extract(epoch FROM clock_timestamp() - updated_at)::float8)) AS slowdown
             FROM provider_pacing WHERE provider_id = $1 FOR UPDATE
         ), grant_ AS (
             SELECT cur.*, $3 * cur.slowdown AS spacing,
                    least($2, greatest(0, floor(extract(epoch FROM cur.now + make_interval(secs => $4) - cur.free_at)::float8
                                               / ($3 * cur.slowdown))::int + 1)) AS n
             FROM cur
         )
         UPDATE provider_pacing p
         SET next_at = g.free_at + g.n * make_interval(secs => g.spacing),
             slowdown = g.slowdown, updated_at = g.now
         FROM grant_ g WHERE p.provider_id = $1
         RETURNING g.n, extract(epoch FROM g.free_at - g.now)::float8, g.spacing",
    )
    .bind(provider)
    .bind(i32::try_from(count).unwrap_or(i32::MAX))
    .bind(spacing.as_secs_f64())
    .bind(HORIZON.as_secs_f64())
    .bind(LEAD.as_secs_f64())
    .fetch_one(pool)
    .await?;
    Ok(slots(
        Instant::now(),
        first_secs,
        Duration::from_secs_f64(spacing_secs),
        usize::try_from(granted).unwrap_or(0),
        count,
    ))
}

/// `granted` slots one `spacing` apart from `first_secs` after `now`, then, for the rest,
/// when to ask again (once the horizon has moved past the last granted slot).
fn slots(
    now: Instant,
    first_secs: f64,
    spacing: Duration,
    granted: usize,
    count: usize,
) -> Vec<Slot> {
    let at = |secs: f64| now + Duration::from_secs_f64(secs.max(0.0));
    let retry_secs = first_secs + spacing.as_secs_f64() * granted as f64 - HORIZON.as_secs_f64();
    (0..count)
        .map(|i| {
            if i < granted {
                Slot::At(at(first_secs + spacing.as_secs_f64() * i as f64))
            } else {
                Slot::Full(at(retry_secs.max(spacing.as_secs_f64())))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_one_spacing_apart_and_never_in_the_past() {
        let now = Instant::now();
        let ms = |slot: &Slot| match slot {
            Slot::At(t) => (*t - now).as_millis() as i64,
            Slot::Full(t) => -((*t - now).as_millis() as i64),
        };
        let got: Vec<i64> = slots(now, 0.25, Duration::from_millis(250), 4, 4)
            .iter()
            .map(ms)
            .collect();
        assert_eq!(got, vec![250, 500, 750, 1000]);
        let got: Vec<i64> = slots(now, 0.0, Duration::from_millis(10), 2, 2)
            .iter()
            .map(ms)
            .collect();
        assert_eq!(got, vec![0, 10]);
    }

    #[test]
    fn requests_beyond_the_horizon_are_told_when_to_ask_again() {
        let now = Instant::now();
        // Two granted at 3.5 s and 4.0 s; the horizon (4 s) moves past the last granted
        // slot 0.5 s from now.
        let got = slots(now, 3.5, Duration::from_millis(500), 2, 3);
        assert!(matches!(got[1], Slot::At(_)));
        match got[2] {
            Slot::Full(t) => assert_eq!((t - now).as_millis(), 500),
            other => panic!("{other:?}"),
        }
    }
}
