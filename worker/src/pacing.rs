//! Fleet-wide pacing of requests to rate-limited providers.
//!
//! A provider limited to N requests per window gets one request every `window / N`, across
//! all workers: each worker reserves send times from the provider's row in
//! `provider_pacing` (GCRA: the next free time moves forward one spacing per request), many
//! reservations per statement, then waits for its slots. A slot is granted only within
//! [`HORIZON`] of now: the worker reserves it once it holds the recipient's lease, right
//! before the request, and sends when it comes ([`crate::on_time`]); the wait is bounded by the lease (the
//! delivery defers the recipient when the lease would run out first). A request that finds
//! every slot within the horizon taken waits and asks again. The scheduler releases no more
//! into a paced lane than the pace allows, so these waits stay short.
//!
//! Slots are times on the database's clock, the one clock the whole fleet shares: each
//! worker maps them onto its own monotonic clock through [`DbClock`], an estimate of the
//! offset between the two taken from the reservations themselves (the database's time is
//! read during the statement, so it falls within the round trip). Reading a slot as "so
//! long after the statement's answer arrived" instead would shift each batch of slots later
//! by a varying part of its round trip (up to 13 ms measured), and two workers' slots one
//! window apart could then both land in one window at the provider.
//!
//! When the provider throttles anyway (429 or its throttle error), [`Pacer::throttled`]
//! doubles the provider's slowdown (at most once per second, however many requests in flight
//! are refused together) and pushes the next free time past any `Retry-After`; the slowdown
//! then decays back towards the configured rate (×0.8 per second), probing back up.

use herald_shared::batch::Batcher;
use herald_store as store;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Never slower than this many times the configured rate.
const MAX_SLOWDOWN: f64 = 64.0;
/// Reservations answered by one statement at most.
const MAX_BATCH: usize = 500;
/// How far ahead a send slot may be granted, at most; never past the reservation's own
/// deadline (see [`Reservation::until`]).
pub const HORIZON: Duration = Duration::from_secs(4);
/// No slot is granted sooner than this: time for the reservation's answer to arrive and for
/// the request to be made ready before the slot comes, so that requests leave on their
/// slots rather than late and bunched.
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
    /// The latest slot of use: the recipient's lease runs out after it. A slot granted past
    /// it would be missed, a send the provider's rate allowed and nobody made; when many
    /// recipients wait, such slots would spend the whole rate on nothing.
    pub until: Instant,
}

#[derive(Clone)]
pub struct Pacer {
    pool: PgPool,
    reserve: Batcher<Reservation, Result<Slot, String>>,
    clock: Arc<Mutex<DbClock>>,
}

impl Pacer {
    pub fn new(pool: PgPool) -> Self {
        let db = pool.clone();
        let clock = Arc::new(Mutex::new(DbClock::default()));
        let reserve = Batcher::spawn(MAX_BATCH, {
            let clock = clock.clone();
            move |requests: Vec<Reservation>| {
                let (db, clock) = (db.clone(), clock.clone());
                async move { reserve_all(&db, &clock, &requests).await }
            }
        });
        Self {
            pool,
            reserve,
            clock,
        }
    }

    /// The local instant of a time on the database's clock (a campaign's expiry, which the
    /// database judges), as slots are placed; by the worker's own wall clock until the
    /// first reservation has read the database's.
    pub fn local_instant(&self, at: chrono::DateTime<chrono::Utc>) -> Instant {
        let now = Instant::now();
        let clock = self.clock.lock().unwrap_or_else(|e| e.into_inner());
        if clock.uncertainty(now).is_none() {
            let ahead = (at - chrono::Utc::now()).to_std().unwrap_or_default();
            return now + ahead;
        }
        clock.local(at.timestamp_micros() as f64 / 1e6, now)
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

    /// The provider refused a request for being too fast.
    pub async fn throttled(
        &self,
        provider: Uuid,
        retry_after: Option<Duration>,
    ) -> Result<(), sqlx::Error> {
        herald_shared::db::within(store::pacing::throttled(
            &self.pool,
            provider,
            retry_after.unwrap_or_default().as_secs_f64(),
            MAX_SLOWDOWN,
        ))
        .await?;
        Ok(())
    }
}

/// Answers every reservation of a batch: one transaction per provider in it.
async fn reserve_all(
    pool: &PgPool,
    clock: &Mutex<DbClock>,
    requests: &[Reservation],
) -> Vec<Result<Slot, String>> {
    let mut answers: Vec<Result<Slot, String>> =
        vec![Err("not reserved".to_owned()); requests.len()];
    let mut by_provider: HashMap<Uuid, (Duration, Vec<usize>)> = HashMap::new();
    for (index, r) in requests.iter().enumerate() {
        by_provider
            .entry(r.provider)
            .or_insert_with(|| (r.spacing, Vec::new()))
            .1
            .push(index);
    }
    for (provider, (spacing, mut indices)) in by_provider {
        // Earliest deadlines first: they take the earliest slots.
        indices.sort_by_key(|&i| requests[i].until);
        let untils: Vec<Instant> = indices.iter().map(|&i| requests[i].until).collect();
        let reserved = herald_shared::db::within(reserve(pool, clock, provider, spacing, &untils));
        match reserved.await {
            Ok(slots) => {
                for (index, slot) in indices.into_iter().zip(slots) {
                    answers[index] = slot;
                }
            }
            Err(error) => {
                // Said once for the batch here; each reservation is answered with it.
                tracing::warn!(%provider, %error, reservations = indices.len(), "could not reserve send slots");
                for index in indices {
                    answers[index] = Err(format!("reserving a send slot: {error}"));
                }
            }
        }
    }
    answers
}

/// Reserves for reservations sorted by deadline (`untils`) the consecutive slots they can
/// use: only those, so that no slot is granted that nobody can use. A reservation beyond the
/// horizon is told when to ask again; one no slot can reach in time is refused at once.
async fn reserve(
    pool: &PgPool,
    clock: &Mutex<DbClock>,
    provider: Uuid,
    spacing: Duration,
    untils: &[Instant],
) -> Result<Vec<Result<Slot, String>>, sqlx::Error> {
    store::pacing::ensure_row(pool, provider).await?;
    sync_clock(pool, clock).await?;
    let mut tx = pool.begin().await?;
    let sent_at = Instant::now();
    let store::pacing::Locked {
        db_now,
        free_at,
        slowdown,
    } = store::pacing::lock(&mut tx, provider, LEAD.as_secs_f64()).await?;
    let answered = Instant::now();
    // Bounded here too: a row written by hand (or by an older worker) must not overflow the
    // spacing (`mul_f64` panics past `Duration::MAX`).
    let slowdown = if slowdown.is_finite() {
        slowdown.clamp(1.0, MAX_SLOWDOWN)
    } else {
        1.0
    };
    let spacing = spacing.mul_f64(slowdown);
    // Deadlines on the database's clock, as if `db_now` were read as late as `answered`:
    // if anything, early.
    let deadlines: Vec<f64> = untils
        .iter()
        .map(|&until| db_now + signed_secs(answered, until) - free_at)
        .collect();
    let planned = plan(
        &deadlines,
        spacing.as_secs_f64(),
        db_now + HORIZON.as_secs_f64() - free_at,
    );
    let granted = planned
        .iter()
        .filter(|p| matches!(p, Planned::Slot(_)))
        .count();
    store::pacing::advance(
        &mut tx,
        provider,
        free_at,
        spacing.as_secs_f64() * granted as f64,
        slowdown,
    )
    .await?;
    tx.commit().await?;
    let now = Instant::now();
    let first = {
        let mut clock = clock.lock().unwrap_or_else(|e| e.into_inner());
        clock.observe(db_now, sent_at, answered);
        clock.local(free_at, now)
    };
    Ok(slots(now, first, spacing, &planned, untils))
}

/// `to − from` in seconds, negative if `to` comes first.
fn signed_secs(from: Instant, to: Instant) -> f64 {
    if to >= from {
        (to - from).as_secs_f64()
    } else {
        -(from - to).as_secs_f64()
    }
}

/// What one reservation of a batch gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Planned {
    /// The n-th slot from the first free one.
    Slot(u32),
    /// None within the horizon: ask again.
    Later,
    /// None before its deadline.
    TooLate,
}

/// Plans a batch of reservations sorted by deadline, `deadlines` and `horizon` in seconds
/// after the first free slot, slots `spacing` seconds apart: each takes the next slot if
/// that comes by its deadline and within the horizon. Giving the earliest slots to the
/// earliest deadlines serves as many as any assignment could.
fn plan(deadlines: &[f64], spacing: f64, horizon: f64) -> Vec<Planned> {
    let mut next = 0u32;
    deadlines
        .iter()
        .map(|&deadline| {
            let at = f64::from(next) * spacing;
            if at > deadline {
                Planned::TooLate
            } else if at > horizon {
                Planned::Later
            } else {
                next += 1;
                Planned::Slot(next - 1)
            }
        })
        .collect()
}

/// How far two clocks may drift apart per second of elapsed time (100 ppm; quartz clocks
/// keep within a few tens).
const DRIFT: f64 = 1e-4;
/// How uncertain the database's clock may be before slots are placed with it. Two workers
/// each this far off in opposite directions take 4 ms of the pace's margin.
const CLOCK_TOLERANCE: Duration = Duration::from_millis(2);
/// Readings made at most to bring the clock within [`CLOCK_TOLERANCE`] before a reservation.
const SYNC_READINGS: usize = 3;
/// At most one round of such readings this often: a database farther than about 4 ms away
/// never gets within the tolerance, and must not cost extra statements on every reservation.
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// Reads the database's clock with a statement of its own while the estimate is too
/// uncertain: at start, when only slow round trips were seen (the first reservation on a
/// new connection took 166 ms, and its slots were placed up to 55 ms off), or after long
/// without a reading.
async fn sync_clock(pool: &PgPool, clock: &Mutex<DbClock>) -> Result<(), sqlx::Error> {
    let lock = || clock.lock().unwrap_or_else(|e| e.into_inner());
    if !lock().wants_readings(Instant::now()) {
        return Ok(());
    }
    lock().synced_at = Some(Instant::now());
    for _ in 0..SYNC_READINGS {
        if lock()
            .uncertainty(Instant::now())
            .is_some_and(|u| u <= CLOCK_TOLERANCE)
        {
            break;
        }
        let sent = Instant::now();
        let db_now = store::pacing::db_clock(pool).await?;
        let answered = Instant::now();
        lock().observe(db_now, sent, answered);
    }
    Ok(())
}

/// The database's clock as seen from this process: one reading of it (unix seconds) paired
/// with the local instant it most likely corresponds to, the midpoint of the round trip it
/// was read in. The reading with the least uncertainty (half its round trip, plus drift
/// since) is kept.
#[derive(Debug, Default, Clone, Copy)]
pub struct DbClock {
    best: Option<Reading>,
    /// When the last round of readings of its own was made.
    synced_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Reading {
    db_secs: f64,
    local: Instant,
    half_round_trip: Duration,
}

impl Reading {
    fn uncertainty(&self, now: Instant) -> f64 {
        self.half_round_trip.as_secs_f64()
            + DRIFT * now.saturating_duration_since(self.local).as_secs_f64()
    }

    /// Seconds by which this reading places the database time `db_secs` after `local`.
    fn offset_from(&self, db_secs: f64, local: Instant) -> f64 {
        let since = if local >= self.local {
            (local - self.local).as_secs_f64()
        } else {
            -(self.local - local).as_secs_f64()
        };
        (db_secs - self.db_secs) - since
    }
}

impl DbClock {
    /// Takes in a reading `db_secs` of the database's clock made by a statement sent at
    /// `sent` and answered at `answered`.
    pub fn observe(&mut self, db_secs: f64, sent: Instant, answered: Instant) {
        let half_round_trip = answered.saturating_duration_since(sent) / 2;
        let reading = Reading {
            db_secs,
            local: sent + half_round_trip,
            half_round_trip,
        };
        self.best = Some(match self.best {
            Some(best) => {
                let (old, new) = (best.uncertainty(answered), reading.uncertainty(answered));
                // A reading that the kept one cannot explain means a clock was stepped:
                // start again from it.
                let disagreement = best.offset_from(db_secs, reading.local).abs();
                if new < old || disagreement > old + new {
                    reading
                } else {
                    best
                }
            }
            None => reading,
        });
    }

    /// Whether to read the clock with statements of its own before placing slots: always
    /// before the first reading, and, while it is more uncertain than [`CLOCK_TOLERANCE`],
    /// at most every [`SYNC_EVERY`].
    fn wants_readings(&self, now: Instant) -> bool {
        match self.uncertainty(now) {
            None => true,
            Some(u) if u > CLOCK_TOLERANCE => self
                .synced_at
                .is_none_or(|at| now.saturating_duration_since(at) >= SYNC_EVERY),
            Some(_) => false,
        }
    }

    /// How far off the estimate may be now (`None` before the first reading).
    pub fn uncertainty(&self, now: Instant) -> Option<Duration> {
        self.best
            .map(|best| Duration::from_secs_f64(best.uncertainty(now)))
    }

    /// The local instant of the database time `db_secs` (`now` before the first reading).
    pub fn local(&self, db_secs: f64, now: Instant) -> Instant {
        let Some(best) = self.best else {
            return now;
        };
        let offset = db_secs - best.db_secs;
        if offset >= 0.0 {
            best.local + Duration::from_secs_f64(offset)
        } else {
            best.local
                .checked_sub(Duration::from_secs_f64(-offset))
                .unwrap_or(now)
        }
    }
}

/// What a reservation gets when no slot can come before its deadline.
pub const TOO_LATE: &str = "no send slot before the lease ran out";

/// The planned slots, one `spacing` apart from `first`; for the reservations beyond the
/// horizon, when to ask again (once it has moved past the last granted slot), unless that is
/// past their deadline (`untils`).
///
/// A slot is where the database put it, even if that is already past (a reservation
/// answered later than the pacer's lead): the request then misses it and takes another.
/// Moving such slots to `now` would put them next to slots already given to other workers.
fn slots(
    now: Instant,
    first: Instant,
    spacing: Duration,
    planned: &[Planned],
    untils: &[Instant],
) -> Vec<Result<Slot, String>> {
    let granted = planned
        .iter()
        .filter(|p| matches!(p, Planned::Slot(_)))
        .count();
    let after_last = first + spacing * u32::try_from(granted).unwrap_or(u32::MAX);
    let retry = after_last
        .checked_sub(HORIZON)
        .unwrap_or(now)
        .max(now + spacing);
    planned
        .iter()
        .zip(untils)
        .map(|(planned, &until)| match planned {
            Planned::Slot(n) => Ok(Slot::At(first + spacing * *n)),
            Planned::Later if retry < until => Ok(Slot::Full(retry)),
            Planned::Later | Planned::TooLate => Err(TOO_LATE.to_owned()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_go_to_the_earliest_deadlines_that_can_use_them_and_no_more() {
        use Planned::TooLate;
        // Slots 0.1 s apart from the first free one; horizon 10 s.
        let got = plan(&[-0.05, 0.15, 0.15, 0.15, 5.0], 0.1, 10.0);
        // The first has passed its deadline; the next two fit; the fourth would need the
        // slot at 0.2 s; the last takes the slot at 0.2 s. Three slots, all used.
        assert_eq!(
            got,
            vec![
                TooLate,
                Planned::Slot(0),
                Planned::Slot(1),
                TooLate,
                Planned::Slot(2)
            ]
        );
    }

    #[test]
    fn reservations_beyond_the_horizon_ask_again_unless_their_deadline_comes_first() {
        use Planned::Later;
        let got = plan(&[1.0, 2.0, 2.0], 1.0, 1.5);
        assert_eq!(got, vec![Planned::Slot(0), Planned::Slot(1), Later]);
        let now = Instant::now();
        let ms = |n: u64| now + Duration::from_millis(n);
        // The horizon (4 s) moves past the last granted slot (at 5 s) 1 s from now.
        let got = slots(
            now,
            ms(4_000),
            Duration::from_millis(1_000),
            &[Planned::Slot(0), Planned::Slot(1), Later, Later],
            &[ms(4_500), ms(5_500), ms(6_000), ms(900)],
        );
        assert_eq!(got[0], Ok(Slot::At(ms(4_000))));
        assert_eq!(got[1], Ok(Slot::At(ms(5_000))));
        assert_eq!(got[2], Ok(Slot::Full(ms(2_000))));
        assert_eq!(got[3], Err(TOO_LATE.to_owned()), "its deadline comes first");
    }

    #[test]
    fn slots_are_one_spacing_apart_even_when_the_first_has_passed() {
        let now = Instant::now() + Duration::from_secs(10);
        // Milliseconds from now to a granted slot, negative if it has passed.
        let ms = |slot: &Result<Slot, String>| match slot {
            Ok(Slot::At(t)) if *t >= now => (*t - now).as_millis() as i64,
            Ok(Slot::At(t)) => -((now - *t).as_millis() as i64),
            other => panic!("not granted: {other:?}"),
        };
        let far = [now + Duration::from_secs(60); 4];
        let planned = [
            Planned::Slot(0),
            Planned::Slot(1),
            Planned::Slot(2),
            Planned::Slot(3),
        ];
        let got: Vec<i64> = slots(
            now,
            now + Duration::from_millis(250),
            Duration::from_millis(250),
            &planned,
            &far,
        )
        .iter()
        .map(ms)
        .collect();
        assert_eq!(got, vec![250, 500, 750, 1000]);
        // Answered 30 ms after its first slot: that one is past, the next keeps its place.
        let first = now - Duration::from_millis(30);
        let got: Vec<i64> = slots(
            now,
            first,
            Duration::from_millis(20),
            &planned[..3],
            &far[..3],
        )
        .iter()
        .map(ms)
        .collect();
        assert_eq!(got, vec![-30, -10, 10]);
    }

    #[test]
    fn database_times_map_through_the_reading_with_the_shortest_round_trip() {
        let t0 = Instant::now();
        let ms = |n: u64| Duration::from_millis(n);
        let mut clock = DbClock::default();
        // Read at db 100.000 during a 20 ms round trip: placed at its midpoint, t0 + 10 ms.
        assert_eq!(clock.uncertainty(t0), None);
        clock.observe(100.0, t0, t0 + ms(20));
        assert_eq!(clock.local(100.5, t0 + ms(20)), t0 + ms(510));
        assert_eq!(clock.uncertainty(t0 + ms(10)), Some(ms(10)));
        // A 2 ms round trip later pins the clock better (the first reading was 4 ms off).
        clock.observe(100.995, t0 + ms(1_000), t0 + ms(1_002));
        assert_eq!(clock.local(101.995, t0 + ms(1_002)), t0 + ms(2_001));
        // A slower reading that agrees within its uncertainty changes nothing.
        clock.observe(103.0, t0 + ms(2_990), t0 + ms(3_030));
        assert_eq!(clock.local(101.995, t0 + ms(3_030)), t0 + ms(2_001));
        // One that cannot be reconciled (the database's clock was stepped a second ahead)
        // replaces it.
        clock.observe(105.0, t0 + ms(4_000), t0 + ms(4_010));
        assert_eq!(clock.local(105.5, t0 + ms(4_010)), t0 + ms(4_505));
    }

    #[test]
    fn an_uncertain_clock_is_read_again_at_most_once_a_second() {
        let t0 = Instant::now();
        let ms = |n: u64| Duration::from_millis(n);
        let mut clock = DbClock::default();
        assert!(clock.wants_readings(t0));
        // A far database: 10 ms round trips, never within the tolerance.
        clock.observe(100.0, t0, t0 + ms(10));
        assert!(clock.wants_readings(t0 + ms(10)));
        clock.synced_at = Some(t0 + ms(10));
        assert!(!clock.wants_readings(t0 + ms(500)));
        assert!(clock.wants_readings(t0 + ms(1_010)));
        // A near one: within the tolerance, no readings of its own.
        clock.observe(101.0005, t0 + ms(1_000), t0 + ms(1_001));
        assert!(!clock.wants_readings(t0 + ms(1_001)));
    }

    #[test]
    fn without_a_reading_database_times_are_now() {
        let now = Instant::now();
        assert_eq!(DbClock::default().local(1e9, now), now);
    }
}
