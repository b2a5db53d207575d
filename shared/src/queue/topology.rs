//! Exchanges and queues, declared idempotently by every service at (re)connection.
//!
//! ```text
//! scheduler ──publish──▶ [herald.dispatch] ──"dispatch"──▶ (herald.dispatch, quorum) ──▶ workers
//!                                                                │ reject / delivery limit
//!                                                                ▼
//!                         [herald.dead-letter] ──▶ (herald.dead-letter): undecodable messages
//! ```
//! The dispatch queue is a quorum queue (replicated when RabbitMQ runs as a cluster, and it
//! counts redeliveries so a poison message cannot loop forever).

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

pub const DISPATCH_EXCHANGE: &str = "herald.dispatch";
pub const DISPATCH_QUEUE: &str = "herald.dispatch";
pub const DISPATCH_ROUTING_KEY: &str = "dispatch";
pub const DEAD_LETTER_EXCHANGE: &str = "herald.dead-letter";
pub const DEAD_LETTER_QUEUE: &str = "herald.dead-letter";

/// Redeliveries after which RabbitMQ dead-letters a message. RabbitMQ 3.10 has no default.
pub const DELIVERY_LIMIT: i64 = 20;

/// Declares everything; safe to call any number of times from any service.
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
    channel
        .queue_declare(
            DEAD_LETTER_QUEUE.into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
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
    channel
        .queue_declare(
            DISPATCH_QUEUE.into(),
            QueueDeclareOptions::durable(),
            dispatch_queue_arguments(),
        )
        .await?;
    channel
        .queue_bind(
            DISPATCH_QUEUE.into(),
            DISPATCH_EXCHANGE.into(),
            DISPATCH_ROUTING_KEY.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
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
