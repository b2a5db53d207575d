//! Exchanges and queues, declared idempotently by every service at (re)connection.
//!
//! ```text
//!                                  ┌─"<provider A id>"─▶ (herald.dispatch.<A>, quorum) ──▶ workers
//! scheduler ──publish──▶ [herald.dispatch]
//!                                  └─"<provider B id>"─▶ (herald.dispatch.<B>, quorum) ──▶ workers
//!                                                                │ reject / delivery limit
//!                                                                ▼
//!                         [herald.dead-letter] ──▶ (herald.dead-letters, quorum): undecodable messages
//! ```
//! One dispatch queue per provider: a *lane*. A slow or failing provider fills only its own
//! lane, and workers consume each lane with its own prefetch, so its messages can never
//! occupy the prefetch that another provider's messages need (one shared queue cannot give
//! that: a worker's prefetch would fill with the slow provider's messages). Lanes are quorum
//! queues (replicated when RabbitMQ runs as a cluster, and they count redeliveries so a
//! poison message cannot loop forever).

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};
use uuid::Uuid;

pub const DISPATCH_EXCHANGE: &str = "herald.dispatch";
pub const DEAD_LETTER_EXCHANGE: &str = "herald.dead-letter";
/// A quorum queue like the lanes: a classic queue lives on one node, and while that node is
/// down no service could declare its topology. (Versions before 2026-11-30 declared a
/// classic `herald.dead-letter`; see the README on upgrading.)
pub const DEAD_LETTER_QUEUE: &str = "herald.dead-letters";

/// The lane (queue) of one provider's dispatch messages.
pub fn lane_queue(provider_id: Uuid) -> String {
    format!("herald.dispatch.{provider_id}")
}

/// The routing key that reaches a provider's lane.
pub fn lane_routing_key(provider_id: Uuid) -> String {
    provider_id.to_string()
}
/// Redeliveries after which RabbitMQ dead-letters a message. RabbitMQ 3.10 has no default.
pub const DELIVERY_LIMIT: i64 = 20;

/// Declares the exchanges and the dead-letter queue; safe to call any number of times from
/// any service. Lanes are declared by [`declare_lane`] as providers come into use.
pub async fn declare(channel: &Channel) -> Result<(), lapin::Error> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            DEAD_LETTER_EXCHANGE.into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
    let mut quorum = FieldTable::default();
    quorum.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            DEAD_LETTER_QUEUE.into(),
            QueueDeclareOptions::durable(),
            quorum,
        )
        .await?;
    channel
        .queue_bind(
            DEAD_LETTER_QUEUE.into(),
            DEAD_LETTER_EXCHANGE.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    channel
        .exchange_declare(
            DISPATCH_EXCHANGE.into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Declares a provider's lane and answers how many messages are ready in it (the scheduler
/// measures each lane's depth with this every tick). Idempotent.
pub async fn declare_lane(channel: &Channel, provider_id: Uuid) -> Result<LaneState, lapin::Error> {
    let queue = lane_queue(provider_id);
    let declared = channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::durable(),
            dispatch_queue_arguments(),
        )
        .await?;
    channel
        .queue_bind(
            queue.as_str().into(),
            DISPATCH_EXCHANGE.into(),
            lane_routing_key(provider_id).as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(LaneState {
        ready: declared.message_count(),
        consumers: declared.consumer_count(),
    })
}

/// A lane's queue as the broker reported it when declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneState {
    /// Messages ready (not yet delivered to a consumer).
    pub ready: u32,
    pub consumers: u32,
}

fn dispatch_queue_arguments() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(DELIVERY_LIMIT),
    );
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(DEAD_LETTER_EXCHANGE.into()),
    );
    args
}

/// Ready (not yet delivered) messages in a queue, from a passive declare.
pub async fn ready_messages(channel: &Channel, queue: &str) -> Result<u32, lapin::Error> {
    let options = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let queue = channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await?;
    Ok(queue.message_count())
}
