//! RabbitMQ's own ceiling on this machine: persistent messages published with confirms into
//! a lane like Herald's (a quorum queue behind the dispatch exchange) and consumed with an
//! ack each, no Herald logic and no database. A bench runs it just before Herald's run, so
//! Herald's rate can be read as a fraction of what the broker alone carries at that minute.
//!
//! Each message is one recipient's dispatch, encoded as the scheduler encodes it: the
//! ceiling is a message per recipient. Herald carries several recipients to an AMQP message
//! (`shared/src/queue/message.rs`), so its rate in recipients may exceed this one.

use crate::cpu;
use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use herald_shared::config::Tls;
use herald_shared::domain::Channel;
use herald_shared::queue::message::{self, DispatchMessage, FORMAT_VERSION};
use herald_shared::queue::topology;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation, Connection, PublisherConfirm};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How the broker is driven.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Messages to carry.
    pub messages: u32,
    /// Publishes awaiting their confirm at most (the scheduler awaits a whole pass's
    /// confirms together; a window keeps the publisher from running unboundedly ahead).
    pub window: usize,
    /// The consumer's prefetch.
    pub prefetch: u16,
    /// The most the measurement may take (a broker that blocks publishers, say on a disk
    /// alarm, would otherwise hold it for good).
    pub timeout: Duration,
}

/// The defaults, also `herald-demo broker`'s.
pub const MESSAGES: u32 = 100_000;
pub const WINDOW: u32 = 1_000;
pub const PREFETCH: u16 = 1_000;
pub const TIMEOUT_SECS: u64 = 300;
/// How long a connection's close may take once the measurement is over.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

impl Default for Load {
    fn default() -> Self {
        Self {
            messages: MESSAGES,
            window: WINDOW as usize,
            prefetch: PREFETCH,
            timeout: Duration::from_secs(TIMEOUT_SECS),
        }
    }
}

/// Publishes and consumes `load.messages` through a fresh lane of the broker at `amqp_url`;
/// prints one line for the rate and one for the CPU each of `parts` spent per message, and
/// answers the rate (messages a second). The lane is deleted afterwards, whatever happened.
pub async fn measure(
    amqp_url: &str,
    load: Load,
    label: &str,
    parts: &[cpu::Part],
) -> anyhow::Result<f64> {
    if load.messages == 0 || load.window == 0 || load.prefetch == 0 {
        bail!(
            "the broker's measurement needs at least one message, a window and a prefetch of at least 1"
        );
    }
    let tls = Tls::default();
    let publishing = herald_shared::queue::connect(amqp_url, "herald-bench-publisher", &tls)
        .await
        .context("connecting to RabbitMQ")?;
    let consuming = herald_shared::queue::connect(amqp_url, "herald-bench-consumer", &tls)
        .await
        .context("connecting to RabbitMQ")?;
    // A lane of a provider that does not exist: Herald's services never consume it.
    let lane = Uuid::new_v4();
    let carried = tokio::time::timeout(
        load.timeout,
        carry(&publishing, &consuming, lane, load, parts),
    )
    .await
    .unwrap_or_else(|_| {
        Err(anyhow::anyhow!(
            "RabbitMQ did not carry {} messages within {:?}",
            load.messages,
            load.timeout
        ))
    });
    // On a channel of its own: the publisher's may be the one that failed.
    let deleted = async {
        publishing
            .create_channel()
            .await?
            .queue_delete(
                topology::lane_queue(lane).as_str().into(),
                QueueDeleteOptions::default(),
            )
            .await
    }
    .await;
    // Bounded too: a publisher cut off by the time limit mid-stream once waited for ever on
    // its connection's close (the process's exit closes it in any case).
    let close = |connection: Connection| async move {
        let closing = connection.close(200, "measured".into());
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
    };
    close(consuming).await;
    close(publishing).await;
    let Carried { secs, bytes, cpu } = carried?;
    deleted.context("deleting the measured lane")?;
    let total = load.messages;
    let rate = f64::from(total) / secs;
    println!(
        "{label}: RabbitMQ alone: {total} messages of {bytes} bytes to a lane (quorum queue), published \
         with confirms ({} awaited at most) and consumed with an ack each (prefetch {}) in {secs:.1} s: \
         {rate:.0} msg/s",
        load.window, load.prefetch,
    );
    if !parts.is_empty() {
        println!("{label}: RabbitMQ alone: {cpu}");
    }
    Ok(rate)
}

/// What carrying the messages took.
struct Carried {
    secs: f64,
    /// The size of each message.
    bytes: usize,
    /// The CPU each part spent meanwhile, per message.
    cpu: String,
}

/// Declares `lane`, then publishes `load.messages` into it on `publishing` while a consumer
/// on `consuming` acks them; timed from the first publish to the last ack.
async fn carry(
    publishing: &Connection,
    consuming: &Connection,
    lane: Uuid,
    load: Load,
    parts: &[cpu::Part],
) -> anyhow::Result<Carried> {
    let publisher = publishing.create_channel().await?;
    publisher
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await?;
    topology::declare(&publisher).await?;
    topology::declare_lane(&publisher, lane).await?;
    let body = message::encode_batch(&[sample_dispatch(lane)]);

    let consumer_channel = consuming.create_channel().await?;
    consumer_channel
        .basic_qos(load.prefetch, BasicQosOptions::default())
        .await?;
    let consumer = consumer_channel
        .basic_consume(
            topology::lane_queue(lane).as_str().into(),
            "herald-bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let total = load.messages;
    // Each delivery acked on its own (as a worker acks each message), the acks of the
    // deliveries at hand sent together.
    let prefetch = usize::from(load.prefetch);
    let consume = async move {
        let acked = consumer
            .take(total as usize)
            .map(|delivery| async move {
                delivery?.ack(BasicAckOptions::default()).await?;
                anyhow::Ok(())
            })
            .buffer_unordered(prefetch)
            .try_fold(0u32, |acked, ()| async move { Ok(acked + 1) })
            .await?;
        if acked < total {
            bail!("the consumer was cancelled after {acked} messages");
        }
        anyhow::Ok(())
    };

    let cpu_before = cpu::Snapshot::take(parts);
    let started = Instant::now();
    let options = BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    };
    // Publishes in flight together, each until its confirm: the broker and lapin's I/O loop
    // see many frames a wake-up, not one publish at a time.
    let routing_key = topology::lane_routing_key(lane);
    let (publisher, body) = (&publisher, &body);
    let publish = futures::stream::iter(0..total)
        .map(|_| {
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into());
            let routing_key = routing_key.as_str();
            async move {
                let confirm = publisher
                    .basic_publish(
                        topology::DISPATCH_EXCHANGE.into(),
                        routing_key.into(),
                        options,
                        body,
                        properties,
                    )
                    .await?;
                confirmed(confirm).await
            }
        })
        .buffer_unordered(load.window)
        .try_collect::<()>();
    futures::try_join!(publish, consume)?;
    let secs = started.elapsed().as_secs_f64();
    Ok(Carried {
        secs,
        bytes: body.len(),
        cpu: cpu::Snapshot::take(parts).report(&cpu_before, i64::from(total)),
    })
}

/// Waits for a publish's confirm; anything but a plain ack ends the measurement.
async fn confirmed(confirm: PublisherConfirm) -> anyhow::Result<()> {
    match confirm.await? {
        Confirmation::Ack(None) => Ok(()),
        other => bail!("the broker did not take a message: {other:?}"),
    }
}

/// One recipient's dispatch, as large as a typical SMS campaign's.
fn sample_dispatch(provider_id: Uuid) -> DispatchMessage {
    let mut variables = serde_json::Map::new();
    variables.insert("first_name".into(), "Ada".into());
    DispatchMessage {
        v: FORMAT_VERSION,
        recipient_id: 1_234_567,
        seq: 1,
        tenant_id: Uuid::new_v4(),
        campaign_id: Uuid::new_v4(),
        provider_id,
        channel: Channel::Sms,
        to: "+15550001234".into(),
        body: "Hi Ada, your appointment is confirmed for tomorrow at 10:00. Reply STOP to opt out."
            .into(),
        expires_at: None,
        variables,
    }
}
