//! The supervised consumer: connect, declare, consume; on any broker failure, reconnect with
//! backoff. lapin's own recovery is not relied on.

use crate::delivery::{self, Context};
use futures::StreamExt;
use herald_shared::queue::{self, topology};
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    #[error("the broker ended the consumer")]
    ConsumerEnded,
}

/// Where and how to consume.
pub struct Settings<'a> {
    pub amqp_url: &'a str,
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
    let mut backoff = BACKOFF_START;
    loop {
        match session(&ctx, &settings, tracker, shutdown, &mut backoff).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(%error, retry_in = ?backoff, "broker connection lost; reconnecting")
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection's lifetime. Returns `Ok` only after a requested shutdown.
async fn session(
    ctx: &Context,
    settings: &Settings<'_>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
    backoff: &mut Duration,
) -> Result<(), ConsumeError> {
    let prefetch = settings.prefetch;
    let connection = queue::connect(settings.amqp_url, "herald-worker").await?;
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    topology::declare(&channel).await?;
    let mut consumer = channel
        .basic_consume(
            topology::DISPATCH_QUEUE.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(prefetch, "consuming");
    *backoff = BACKOFF_START;

    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                // Stop new deliveries; those in hand finish (or are requeued when we close).
                let _ = channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()).await;
                wait_for_drain(tracker, settings.drain_timeout).await;
                let _ = channel.close(200, "worker shutting down".into()).await;
                let _ = connection.close(200, "worker shutting down".into()).await;
                return Ok(());
            }
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    tracker.spawn(delivery::handle(ctx.clone(), delivery));
                }
                Some(Err(error)) => return Err(error.into()),
                None => return Err(ConsumeError::ConsumerEnded),
            },
        }
    }
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
