//! The supervised consumer: connect, declare, consume every provider's lane; on any broker
//! failure, reconnect with backoff. lapin's own recovery is not relied on.
//!
//! Each lane (one provider's queue) is consumed on its own channel with its own prefetch,
//! sized from this worker's share of the provider's fleet-wide in-flight cap. So a slow provider's
//! deliveries can only fill its own lane's prefetch, never the prefetch another provider's
//! messages need. Every `REFRESH` the worker beats its heartbeat, reads the providers and
//! opens, resizes or closes lanes to match. A worker joining the fleet starts at once with
//! what the others leave of each cap, and grows as they shrink.

use crate::delivery::{self, Context};
use crate::fleet;
use crate::in_flight::InFlight;
use futures::StreamExt;
use herald_shared::config::Tls;
use herald_shared::ops::health::Health;
use herald_shared::ops::metrics::BREAKER_OPEN;
use herald_shared::queue::{self, topology};
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

// Reconnecting is cheap and a worker not consuming is costly: when the broker comes back,
// the workers are too within a second.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How often lanes and the heartbeat are refreshed.
const REFRESH: Duration = Duration::from_secs(2);
/// The longest a stopping worker waits for the broker to confirm its consumers' cancel, and
/// then its connection's close. Over a connection that went silent without a reset (a cut
/// network), each would wait until the broker's heartbeat is missed, a minute or more: the
/// drain, started after the cancel, would be cut off by the grace period's SIGKILL with its
/// outcomes unwritten.
const BROKER_GOODBYE_WITHIN: Duration = Duration::from_secs(5);
/// The longest the session waits for the broker to answer a call that resizes, opens or
/// closes a lane. While it waits, the session's loop sees neither a stop nor its heartbeat;
/// a broker gone silent ends the session instead, and the worker carries on without it
/// (beating with what it has in flight, draining at a stop) until it reconnects.
const BROKER_CALL_WITHIN: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("the broker ended the consumer of lane {0}")]
    ConsumerEnded(Uuid),
    #[error("no answer from the broker within {BROKER_CALL_WITHIN:?}")]
    Silent,
}

/// `call` to the broker, within [`BROKER_CALL_WITHIN`].
async fn answered<T>(
    call: impl Future<Output = Result<T, lapin::Error>>,
) -> Result<T, ConsumeError> {
    Ok(tokio::time::timeout(BROKER_CALL_WITHIN, call)
        .await
        .map_err(|_| ConsumeError::Silent)??)
}

/// Where and how to consume.
pub struct Settings<'a> {
    pub amqp_url: &'a str,
    pub pool: PgPool,
    /// This worker's id in the fleet.
    pub id: Uuid,
    /// Most deliveries held per lane.
    pub prefetch: u16,
    pub drain_timeout: Duration,
    pub tls: Tls,
    /// Where the broker's state is reported (readiness).
    pub health: Health,
}

/// Consumes until `shutdown`; each delivery runs as a task on `tracker`.
pub async fn run(
    ctx: Context,
    settings: Settings<'_>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let mut backoff = BACKOFF_START;
    let up = AtomicBool::new(false);
    let connected = AtomicBool::new(false);
    let mut place = Place::default();
    'sessions: loop {
        // While no session beats (connecting, or the broker out of reach), the deliveries of
        // a lost one may still be making requests: this worker keeps its place in the fleet
        // for them (`Place`), and a stop still drains them.
        let ended = {
            let attempt = session(
                &ctx,
                &settings,
                tracker,
                shutdown,
                &mut backoff,
                (&up, &connected),
            );
            tokio::pin!(attempt);
            let mut beats = tokio::time::interval(REFRESH);
            beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    ended = &mut attempt => break ended,
                    // Checked again in each arm: the session may have come up in the same poll
                    // (a stop is then the session's to drain; it stays cancelled for it).
                    _ = beats.tick(), if !up.load(Ordering::Acquire) => {
                        if !up.load(Ordering::Acquire) {
                            place.keep(&settings, &ctx.in_flight).await;
                        }
                    }
                    () = shutdown.cancelled(), if !up.load(Ordering::Acquire) => {
                        if up.load(Ordering::Acquire) {
                            continue;
                        }
                        // Asked to stop with no session (it drains itself): the deliveries in
                        // hand need only the database and the providers to finish.
                        drain(&settings, &ctx.in_flight, tracker).await;
                        break 'sessions;
                    }
                }
            }
        };
        if connected.swap(false, Ordering::AcqRel) {
            place.found();
        }
        match ended {
            Ok(()) => break,
            Err(error) => {
                settings.health.report("broker", Err(error.to_string()));
                tracing::warn!(%error, retry_in = ?backoff, "broker connection lost; reconnecting");
                place.lost();
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => {
                drain(&settings, &ctx.in_flight, tracker).await;
                break;
            }
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    let left = herald_store::fleet::leave(&settings.pool, settings.id);
    if let Err(error) = herald_shared::db::within(left).await {
        tracing::debug!(%error, "could not leave the fleet; the heartbeat will expire");
    }
}

/// How long a worker that lost its broker keeps its caps, so that a blip finds it where it
/// was; past this it gives them up (keeping only the requests still running), so that a
/// worker that cannot reach the broker for long (a wrong vhost, an outage) does not hold
/// its share of every provider's cap from the others.
const HOLD_PLACE_FOR: Duration = Duration::from_secs(10);

/// This worker's place in the fleet while no session beats for it.
#[derive(Default)]
struct Place {
    /// When the last session was lost (`None`: none yet, or one is up).
    lost_at: Option<std::time::Instant>,
    /// The caps were given up after [`HOLD_PLACE_FOR`].
    given_up: bool,
    /// Its heartbeat row was removed: nothing left to keep.
    left: bool,
}

impl Place {
    fn lost(&mut self) {
        self.lost_at.get_or_insert_with(std::time::Instant::now);
    }

    /// Beats with what this worker may still have in flight, if anything: its caps while
    /// a lost session may come back soon, then only what is still running; nothing at all
    /// (its row removed) once nothing is. A worker that never had a session has no caps,
    /// and never beats here.
    async fn keep(&mut self, settings: &Settings<'_>, in_flight: &InFlight) {
        let Some(lost_at) = self.lost_at else {
            return;
        };
        if !self.given_up && lost_at.elapsed() >= HOLD_PLACE_FOR {
            in_flight.give_up_all();
            self.given_up = true;
            tracing::info!(held_for = ?HOLD_PLACE_FOR, "no broker: giving up this worker's caps but for the requests still running");
        }
        if in_flight.in_use_at_most().values().any(|&n| n > 0) {
            beat_in_use(&settings.pool, settings.id, in_flight).await;
            self.left = false;
        } else if !self.left {
            // Bounded like a beat: this runs while neither the connection attempt nor a stop
            // is watched.
            match tokio::time::timeout(
                REFRESH,
                herald_store::fleet::leave(&settings.pool, settings.id),
            )
            .await
            {
                Ok(Ok(())) => self.left = true,
                Ok(Err(error)) => tracing::debug!(%error, "could not leave the fleet now"),
                Err(_) => tracing::debug!("no answer from the database to leave the fleet"),
            }
        }
    }

    /// A session was up since the last loss: it beat, and set the caps.
    fn found(&mut self) {
        *self = Self::default();
    }
}

/// Marks the session down when it ends, however it ends.
struct Down<'a>(&'a AtomicBool);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// One lane being consumed, or idle (prefetch 0: no consumer) with its channel kept for
/// the deliveries it had in hand.
struct Lane {
    channel: Channel,
    consumer_tag: String,
    prefetch: u16,
    /// Told apart from earlier consumers of the same lane, whose end is expected.
    generation: u64,
}

impl Lane {
    fn idle(channel: Channel, generation: u64) -> Self {
        Self {
            channel,
            consumer_tag: String::new(),
            prefetch: 0,
            generation,
        }
    }

    fn consuming(&self) -> bool {
        self.prefetch > 0
    }

    /// Stops new deliveries; those in hand finish on the same channel.
    async fn cancel(&self) -> Result<(), lapin::Error> {
        self.channel
            .basic_cancel(
                self.consumer_tag.as_str().into(),
                BasicCancelOptions::default(),
            )
            .await
    }
}

/// A lane's forwarding task ended: the broker cancelled or the channel failed.
struct Ended {
    provider: Uuid,
    generation: u64,
    error: Option<lapin::Error>,
}

/// One connection's lifetime. Returns `Ok` only after a requested shutdown.
async fn session(
    ctx: &Context,
    settings: &Settings<'_>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
    backoff: &mut Duration,
    flags: (&AtomicBool, &AtomicBool),
) -> Result<(), ConsumeError> {
    let connection = queue::connect(settings.amqp_url, "herald-worker", &settings.tls).await?;
    let ended = consume_on(
        &connection,
        ctx,
        settings,
        tracker,
        shutdown,
        backoff,
        flags,
    )
    .await;
    if ended.is_err() {
        // However it ended (one lane's consumer, a broker call unanswered), the connection
        // is closed: dropped, it lives on (lapin's consumers hold it), and the other lanes'
        // consumers would go on taking deliveries beside the next session's, never resized,
        // never cancelled at a stop. Deliveries in hand are handed back with it; their
        // recipients' leases fence any that come again.
        let _ = tokio::time::timeout(
            BROKER_GOODBYE_WITHIN,
            connection.close(200, "worker session ended; reconnecting".into()),
        )
        .await;
    }
    ended
}

/// [`session`]'s work on its `connection`.
async fn consume_on(
    connection: &Connection,
    ctx: &Context,
    settings: &Settings<'_>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
    backoff: &mut Duration,
    (up, connected): (&AtomicBool, &AtomicBool),
) -> Result<(), ConsumeError> {
    let control = connection.create_channel().await?;
    topology::declare(&control).await?;
    settings.health.report("broker", Ok(()));
    // From here this session beats (and drains at a stop) itself; whatever way it ends,
    // the caller takes over again.
    up.store(true, Ordering::Release);
    let _down = Down(up);
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<Ended>();
    let mut lanes: HashMap<Uuid, Lane> = HashMap::new();
    let mut generation = 0u64;
    let mut refresh = tokio::time::interval(REFRESH);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reset_backoff = true;
    let mut steadiness = fleet::Steadiness::default();
    let mut last_beat = std::time::Instant::now();

    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                // Stop new deliveries; those in hand finish (those still waiting for room
                // hand themselves back, and so would any the broker sent before an
                // unconfirmed cancel reached it).
                let cancels = futures::future::join_all(
                    lanes.values().filter(|lane| lane.consuming()).map(Lane::cancel),
                );
                if tokio::time::timeout(BROKER_GOODBYE_WITHIN, cancels).await.is_err() {
                    tracing::warn!(
                        within = ?BROKER_GOODBYE_WITHIN,
                        "the broker did not confirm the consumers' cancel; draining anyway"
                    );
                }
                drain(settings, &ctx.in_flight, tracker).await;
                let _ = tokio::time::timeout(
                    BROKER_GOODBYE_WITHIN,
                    connection.close(200, "worker shutting down".into()),
                )
                .await;
                return Ok(());
            }
            _ = refresh.tick() => {
                // A database blip keeps the lanes as they are: reconnecting to the broker
                // for it would hand back every delivery in hand.
                // Bounded: a database cut off without a reset would hold the heartbeat (and
                // the share below) for as long as TCP takes to notice.
                // The others date this worker's beat by when it reached the database.
                let beat_sent = std::time::Instant::now();
                let refreshed = match tokio::time::timeout(
                    REFRESH,
                    wanted_lanes(settings, &ctx.in_flight, &mut steadiness),
                )
                .await
                {
                    Ok(result) => result.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("no answer from the database within {REFRESH:?}")),
                };
                let wanted = match refreshed {
                    Ok(wanted) => {
                        last_beat = beat_sent;
                        // A session that beat: the place it held without a broker is its own
                        // again (one that fails before its first beat keeps the hold's clock).
                        connected.store(true, Ordering::Release);
                        wanted
                    }
                    Err(error) => {
                        // Before the others count this worker gone (and take its share), it
                        // gives its share up: when the database comes back, what it holds
                        // must not go out beside their grown shares.
                        if last_beat.elapsed() + REFRESH >= fleet::LIVE_FOR {
                            for provider in lanes.keys() {
                                ctx.in_flight.set(*provider, 0);
                            }
                        }
                        tracing::warn!(%error, "cannot refresh the lanes; keeping them");
                        continue;
                    }
                };
                if let Err(error) = ctx.breakers.sync().await {
                    tracing::warn!(%error, "cannot read the fleet's circuit breakers");
                }
                for provider in wanted.keys() {
                    let open = ctx.breakers.open_until(*provider).is_some();
                    metrics::gauge!(BREAKER_OPEN, "provider" => provider.to_string())
                        .set(if open { 1.0 } else { 0.0 });
                }
                settings.health.report(
                    "broker",
                    if connection.status().connected() {
                        Ok(())
                    } else {
                        Err("the connection is closed".into())
                    },
                );
                for (provider, &Wanted { allowed, basis, room }) in &wanted {
                    // A lane at a cap of zero is not consumed: its deliveries are other
                    // workers' to send. With no room for it here at all (a fleet-wide cap
                    // smaller than the fleet, a newcomer's first beats), those in hand
                    // waiting for room are handed back (after the consumer's cancel, so that
                    // they go elsewhere); with growth only withheld (just after an outage,
                    // a fleet still changing), they wait, as they did through the outage.
                    let prefetch = if allowed == 0 { 0 } else { fleet::prefetch(allowed, basis) };
                    let current = lanes.get(provider).map(|lane| lane.prefetch);
                    let set_cap = || if allowed == 0 && !room {
                        ctx.in_flight.idle(*provider);
                    } else {
                        ctx.in_flight.set(*provider, allowed);
                    };
                    if current == Some(prefetch) || (current.is_none() && prefetch == 0) {
                        set_cap();
                        continue;
                    }
                    // A resized or idled lane keeps its channel: deliveries in hand stay
                    // acknowledgeable on it.
                    let channel = match lanes.remove(provider) {
                        Some(old) => {
                            if old.consuming() {
                                answered(old.cancel()).await?;
                            }
                            Some(old.channel)
                        }
                        None => None,
                    };
                    set_cap();
                    generation += 1;
                    let lane = match channel {
                        Some(channel) if prefetch == 0 => {
                            tracing::info!(%provider, room, "lane idle: this worker's cap there is zero for now");
                            Lane::idle(channel, generation)
                        }
                        channel => {
                            let lane = answered(open_lane(connection, channel, *provider, prefetch, generation, ctx, tracker, &ended_tx)).await?;
                            tracing::info!(%provider, prefetch, "consuming lane");
                            lane
                        }
                    };
                    lanes.insert(*provider, lane);
                }
                let gone: Vec<Uuid> = lanes.keys().filter(|p| !wanted.contains_key(p)).copied().collect();
                for provider in gone {
                    if let Some(lane) = lanes.remove(&provider) {
                        if lane.consuming() {
                            answered(lane.cancel()).await?;
                        }
                        // Those waiting for room there (held through an outage) go.
                        ctx.in_flight.idle(provider);
                        tracing::info!(%provider, "lane closed: provider removed");
                    }
                }
                if reset_backoff {
                    *backoff = BACKOFF_START;
                    reset_backoff = false;
                }
            }
            Some(ended) = ended_rx.recv() => {
                let current = lanes.get(&ended.provider).is_some_and(|l| l.generation == ended.generation);
                if current {
                    return Err(ended.error.map_or(ConsumeError::ConsumerEnded(ended.provider), Into::into));
                }
            }
        }
    }
}

/// What this worker takes of one provider's lane ([`wanted_lanes`]).
#[derive(Debug, Clone, Copy)]
struct Wanted {
    /// Its cap on requests in flight there.
    allowed: u32,
    /// The allowance the scheduler cuts the lane's batches for.
    basis: u32,
    /// Whether the fleet leaves it any room there ([`fleet::has_room`]).
    room: bool,
}

/// The lanes this worker should consume now, with this worker's cap on requests in flight
/// to each (see [`fleet`]) and the allowance the scheduler cuts the lane's batches for.
async fn wanted_lanes(
    settings: &Settings<'_>,
    in_flight: &InFlight,
    steadiness: &mut fleet::Steadiness,
) -> Result<HashMap<Uuid, Wanted>, sqlx::Error> {
    let caps = herald_store::providers::in_flight_caps(&settings.pool).await?;
    let in_use = in_flight.in_use_at_most();
    fleet::heartbeat(&settings.pool, settings.id, &worker_name(), |view| {
        let may_grow = steadiness.beat(view.live, std::time::Instant::now(), REFRESH);
        let mut room: HashMap<Uuid, bool> = HashMap::new();
        let wanted: HashMap<Uuid, u32> = caps
            .iter()
            .map(|&(id, cap)| {
                let cap = u32::try_from(cap).unwrap_or(1);
                let share = fleet::share(cap, view.live, settings.prefetch);
                let others = view.others.get(&id).copied().unwrap_or(0);
                let current = in_flight.size(id).unwrap_or(0);
                room.insert(id, fleet::has_room(share, cap, others));
                (id, fleet::allowed(share, cap, others, current, may_grow))
            })
            .collect();
        // Requests still running from a larger cap count until they finish.
        let published: HashMap<Uuid, u32> = wanted
            .iter()
            .map(|(id, &n)| (*id, n.max(in_use.get(id).copied().unwrap_or(0))))
            .collect();
        let lanes = wanted
            .iter()
            .map(|(id, &n)| {
                let own = published.get(id).copied().unwrap_or(n);
                let basis = fleet::batch_basis(own, view.smallest_other.get(id).copied());
                let room = room.get(id).copied().unwrap_or(true);
                (
                    *id,
                    Wanted {
                        allowed: n,
                        basis,
                        room,
                    },
                )
            })
            .collect();
        (published, lanes)
    })
    .await
}

fn worker_name() -> String {
    format!(
        "{}@{}",
        std::process::id(),
        std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into())
    )
}

/// Starts consuming a lane (on `channel` if given, else a new one) and forwards its
/// deliveries to `tracker` until the consumer ends.
#[allow(clippy::too_many_arguments)]
async fn open_lane(
    connection: &Connection,
    channel: Option<Channel>,
    provider: Uuid,
    prefetch: u16,
    generation: u64,
    ctx: &Context,
    tracker: &TaskTracker,
    ended: &mpsc::UnboundedSender<Ended>,
) -> Result<Lane, lapin::Error> {
    // An idle lane's channel may have closed meanwhile, nothing consuming it to say so.
    let channel = match channel {
        Some(channel) if channel.status().connected() => channel,
        _ => connection.create_channel().await?,
    };
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    topology::declare_lane(&channel, provider).await?;
    let consumer = channel
        .basic_consume(
            topology::lane_queue(provider).as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let consumer_tag = consumer.tag().to_string();
    let (ctx, tracker, ended) = (ctx.clone(), tracker.clone(), ended.clone());
    tokio::spawn(async move {
        let mut consumer = consumer;
        let error = loop {
            match consumer.next().await {
                Some(Ok(delivery)) => {
                    tracker.spawn(delivery::handle(ctx.clone(), delivery));
                }
                Some(Err(error)) => break Some(error),
                None => break None,
            }
        };
        let _ = ended.send(Ended {
            provider,
            generation,
            error,
        });
    });
    Ok(Lane {
        channel,
        consumer_tag,
        prefetch,
        generation,
    })
}

/// Takes no more work and waits, at most `settings.drain_timeout`, for the deliveries in
/// hand to finish. Meanwhile the heartbeat goes on with only the requests still running
/// (every cap set to nothing): the others take up this worker's room as it frees, never
/// while it is still in use, and do not count it gone while its requests last.
async fn drain(settings: &Settings<'_>, in_flight: &InFlight, tracker: &TaskTracker) {
    tracker.close();
    in_flight.give_up_all();
    let in_hand = tracker.len();
    tracing::info!(in_flight = in_hand, timeout = ?settings.drain_timeout, "draining in-flight deliveries");
    let deadline = tokio::time::sleep(settings.drain_timeout);
    tokio::pin!(deadline);
    let mut beats = tokio::time::interval(REFRESH);
    // Beside the wait, not in it (a slow database must not hold the drain's end), and
    // stopped with it: a beat landing after the worker left would count it live again.
    let mut beating = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            () = tracker.wait() => break,
            () = &mut deadline => {
                tracing::warn!(
                    left = tracker.len(),
                    "drain timeout; unfinished deliveries return to the queue"
                );
                break;
            }
            _ = beats.tick() => {
                let (pool, id, in_flight) = (settings.pool.clone(), settings.id, in_flight.clone());
                beating.spawn(async move { beat_in_use(&pool, id, &in_flight).await });
            }
        }
    }
    beating.shutdown().await;
}

/// Beats the heartbeat with what this worker may still have in flight, outside a session
/// (which beats with its lanes): bounded like the session's, and a failure only logged.
async fn beat_in_use(pool: &PgPool, id: Uuid, in_flight: &InFlight) {
    let in_use = in_flight.in_use_at_most();
    let name = worker_name();
    let beat = fleet::heartbeat(pool, id, &name, |_| (in_use, ()));
    match tokio::time::timeout(REFRESH, beat).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "cannot beat the heartbeat now"),
        Err(_) => tracing::debug!("no answer from the database for the heartbeat"),
    }
}
