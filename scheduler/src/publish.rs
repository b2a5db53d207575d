//! Publishing dispatch messages with publisher confirms.
//!
//! Messages are persistent and `mandatory`; a tick's batch is published back to back and the
//! confirms awaited together (never one publish at a time, which is fsync-bound). A message
//! counts as published only on a positive, routed confirm within the timeout.

use futures::future::join_all;
use herald_shared::config::Tls;
use herald_shared::ops::metrics as metrics_names;
use herald_shared::queue::message::DispatchMessage;
use herald_shared::queue::pool::{Pool, PooledConnection};
use herald_shared::queue::topology;
use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel};
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot reach RabbitMQ: {0}")]
    Pool(String),
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
}

pub struct Publisher {
    /// A pool per node of the cluster (one, without a cluster), in the order tried.
    pools: Vec<Pool>,
    /// The node that answered last: tried first next time.
    current: usize,
    channel: Option<Channel>,
    confirm_timeout: Duration,
}

impl Publisher {
    pub fn new(
        amqp_urls: &str,
        tls: &Tls,
        confirm_timeout: Duration,
    ) -> Result<Self, PublishError> {
        let pools = herald_shared::queue::nodes(amqp_urls)
            .into_iter()
            // One channel is used at a time; a second connection covers a replacement.
            .map(|url| herald_shared::queue::pool::node_pool(url, "herald-scheduler", tls, 2))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PublishError::Pool(e.to_string()))?;
        if pools.is_empty() {
            return Err(PublishError::Pool("no RabbitMQ URL".into()));
        }
        Ok(Self {
            pools,
            current: 0,
            channel: None,
            confirm_timeout,
        })
    }

    /// A connection from the first node that answers, starting with the last one that did.
    async fn connection(&mut self) -> Result<PooledConnection, PublishError> {
        let mut last = String::new();
        for step in 0..self.pools.len() {
            let index = (self.current + step) % self.pools.len();
            match self.pools[index].get().await {
                Ok(connection) => {
                    self.current = index;
                    return Ok(connection);
                }
                Err(error) => last = error.to_string(),
            }
        }
        Err(PublishError::Pool(last))
    }

    /// A confirm-mode channel with the topology declared, reused across ticks and replaced
    /// after any error.
    async fn channel(&mut self) -> Result<Channel, PublishError> {
        if let Some(channel) = &self.channel
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        self.channel = None;
        let connection = self.connection().await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        topology::declare(&channel).await?;
        self.channel = Some(channel.clone());
        Ok(channel)
    }

    /// Ready messages in a provider's lane (declared first if it is new).
    pub async fn lane_depth(&mut self, provider_id: Uuid) -> Result<u32, PublishError> {
        let channel = self.channel().await?;
        let state = topology::declare_lane(&channel, provider_id)
            .await
            .inspect_err(|_| self.channel = None)?;
        let lane = provider_id.to_string();
        metrics::gauge!(metrics_names::LANE_QUEUE_DEPTH, "lane" => lane.clone())
            .set(f64::from(state.ready));
        metrics::gauge!(metrics_names::LANE_CONSUMERS, "lane" => lane)
            .set(f64::from(state.consumers));
        Ok(state.ready)
    }

    /// Whether the broker can be reached: a channel is open or can be opened.
    pub async fn check(&mut self) -> Result<(), PublishError> {
        self.channel().await.map(|_| ())
    }

    /// Publishes `messages` in order, each to its provider's lane (which must have been
    /// declared, by [`lane_depth`](Self::lane_depth)); returns, per message, whether the broker confirmed it.
    pub async fn publish(
        &mut self,
        messages: &[DispatchMessage],
    ) -> Result<Vec<bool>, PublishError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let channel = self.channel().await?;
        let options = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let mut pending = Vec::with_capacity(messages.len());
        for message in messages {
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(message.message_id().into());
            let published = channel
                .basic_publish(
                    topology::DISPATCH_EXCHANGE.into(),
                    topology::lane_routing_key(message.provider_id)
                        .as_str()
                        .into(),
                    options,
                    &message.encode(),
                    properties,
                )
                .await;
            match published {
                Ok(confirm) => pending.push(Some(confirm)),
                Err(error) => {
                    // The channel is gone: nothing after this can be published on it.
                    tracing::warn!(%error, "publish failed; the rest of this batch goes back to pending");
                    self.channel = None;
                    pending.resize_with(messages.len(), || None);
                    break;
                }
            }
        }
        let timeout = self.confirm_timeout;
        let confirms = join_all(pending.into_iter().map(|confirm| async move {
            let confirm = confirm?;
            match tokio::time::timeout(timeout, confirm).await {
                Ok(Ok(Confirmation::Ack(None))) => Some(()),
                // Returned as unroutable, nacked, or not confirmed at all.
                Ok(Ok(_)) | Ok(Err(_)) | Err(_) => None,
            }
        }))
        .await;
        let confirmed: Vec<bool> = confirms.iter().map(Option::is_some).collect();
        if confirmed.iter().any(|ok| !ok) {
            self.channel = None;
        }
        Ok(confirmed)
    }
}
