//! The supervised consumer: connect, declare, consume every provider's lane; on any broker
//! failure, reconnect with backoff. lapin's own recovery is not relied on.
//!
//! Each lane (one provider's queue) is consumed on its own channel with its own prefetch:
//! this worker's share of the provider's fleet-wide in-flight cap. So a slow provider's
//! deliveries can only fill its own lane's prefetch, never the prefetch another provider's
//! messages need. Every `REFRESH` the worker beats its heartbeat, reads the providers and
//! opens, resizes or closes lanes to match.

use crate::delivery::{self, Context};
use crate::fleet;
use futures::StreamExt;
use herald_shared::queue::{self, topology};
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use sqlx::PgPool;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How often lanes and the heartbeat are refreshed.
const REFRESH: Duration = Duration::from_secs(2);
/// Longest wait for the fleet's old requests when joining it.
const JOIN_WAIT_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("the broker ended the consumer of lane {0}")]
    ConsumerEnded(Uuid),
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
}

/// Consumes until `shutdown`; each delivery runs as a task on `tracker`.
pub async fn run(
    ctx: Context,
    settings: Settings<'_>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    join_fleet(&settings, shutdown).await;
    let mut backoff = BACKOFF_START;
    loop {
        match session(&ctx, &settings, tracker, shutdown, &mut backoff).await {
            Ok(()) => break,
            Err(error) => {
                tracing::warn!(%error, retry_in = ?backoff, "broker connection lost; reconnecting")
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    if let Err(error) = fleet::leave(&settings.pool, settings.id).await {
        tracing::debug!(%error, "could not leave the fleet; the heartbeat will expire");
    }
}

/// Registers this worker with the fleet. When others are already running, waits until they
/// have seen it and shrunk their shares of every in-flight cap (their next refresh), and
/// until the requests they started on their old shares are over (a provider timeout at
/// most): only then does this worker send, so the fleet never exceeds a cap as it grows.
async fn join_fleet(settings: &Settings<'_>, shutdown: &CancellationToken) {
    let others = match fleet::heartbeat(&settings.pool, settings.id, &worker_name()).await {
        Ok(live) => live - 1,
        Err(error) => {
            tracing::warn!(%error, "cannot register with the fleet yet");
            return;
        }
    };
    if others == 0 {
        return;
    }
    let longest: Option<i32> = sqlx::query_scalar("SELECT max(timeout_ms) FROM providers")
        .fetch_one(&settings.pool)
        .await
        .unwrap_or(None);
    let longest = Duration::from_millis(u64::try_from(longest.unwrap_or(0)).unwrap_or(0));
    let wait = REFRESH + longest.min(JOIN_WAIT_MAX);
    tracing::info!(
        others,
        ?wait,
        "joining a running fleet: waiting for the others to shrink their in-flight shares"
    );
    // Beat the heartbeat meanwhile: a silent worker would soon count as gone, and the
    // others would grow their shares back.
    let until = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < until {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep_until(until.min(tokio::time::Instant::now() + REFRESH)) => {}
        }
        if let Err(error) = fleet::heartbeat(&settings.pool, settings.id, &worker_name()).await {
            tracing::warn!(%error, "heartbeat failed while joining");
        }
    }
}

/// One lane being consumed.
struct Lane {
    channel: Channel,
    consumer_tag: String,
    prefetch: u16,
    /// Told apart from earlier consumers of the same lane, whose end is expected.
    generation: u64,
}

impl Lane {
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
) -> Result<(), ConsumeError> {
    let connection = queue::connect(settings.amqp_url, "herald-worker").await?;
    let control = connection.create_channel().await?;
    topology::declare(&control).await?;
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<Ended>();
    let mut lanes: HashMap<Uuid, Lane> = HashMap::new();
    let mut generation = 0u64;
    let mut refresh = tokio::time::interval(REFRESH);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reset_backoff = true;

    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                // Stop new deliveries; those in hand finish (or are requeued when we close).
                for lane in lanes.values() {
                    let _ = lane.cancel().await;
                }
                wait_for_drain(tracker, settings.drain_timeout).await;
                let _ = connection.close(200, "worker shutting down".into()).await;
                return Ok(());
            }
            _ = refresh.tick() => {
                // A database blip keeps the lanes as they are: reconnecting to the broker
                // for it would hand back every delivery in hand.
                let wanted = match wanted_lanes(settings).await {
                    Ok(wanted) => wanted,
                    Err(error) => {
                        tracing::warn!(%error, "cannot refresh the lanes; keeping them");
                        continue;
                    }
                };
                if let Err(error) = ctx.breakers.sync().await {
                    tracing::warn!(%error, "cannot read the fleet's circuit breakers");
                }
                for (provider, prefetch) in &wanted {
                    ctx.in_flight.set(*provider, u32::from(*prefetch));
                    let current = lanes.get(provider).map(|lane| lane.prefetch);
                    if current == Some(*prefetch) {
                        continue;
                    }
                    // A resized lane keeps its channel: deliveries in hand stay
                    // acknowledgeable on it.
                    let channel = match lanes.remove(provider) {
                        Some(old) => {
                            old.cancel().await?;
                            Some(old.channel)
                        }
                        None => None,
                    };
                    generation += 1;
                    let lane = open_lane(&connection, channel, *provider, *prefetch, generation, ctx, tracker, &ended_tx).await?;
                    lanes.insert(*provider, lane);
                    tracing::info!(%provider, prefetch, "consuming lane");
                }
                let gone: Vec<Uuid> = lanes.keys().filter(|p| !wanted.contains_key(p)).copied().collect();
                for provider in gone {
                    if let Some(lane) = lanes.remove(&provider) {
                        lane.cancel().await?;
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

/// The lanes this worker should consume now, with their prefetch.
async fn wanted_lanes(settings: &Settings<'_>) -> Result<HashMap<Uuid, u16>, sqlx::Error> {
    let live = fleet::heartbeat(&settings.pool, settings.id, &worker_name()).await?;
    let caps: Vec<(Uuid, i32)> = sqlx::query_as("SELECT id, max_in_flight FROM providers")
        .fetch_all(&settings.pool)
        .await?;
    Ok(caps
        .into_iter()
        .map(|(id, cap)| {
            let cap = u32::try_from(cap).unwrap_or(1);
            (id, fleet::share(cap, live, settings.prefetch))
        })
        .collect())
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
    let channel = match channel {
        Some(channel) => channel,
        None => connection.create_channel().await?,
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

async fn wait_for_drain(tracker: &TaskTracker, timeout: Duration) {
    tracker.close();
    let in_flight = tracker.len();
    tracing::info!(in_flight, ?timeout, "draining in-flight deliveries");
    if tokio::time::timeout(timeout, tracker.wait()).await.is_err() {
        tracing::warn!(
            left = tracker.len(),
            "drain timeout; unfinished deliveries return to the queue"
        );
    }
}
