//! Publishing dispatch messages with publisher confirms.
//!
//! A tick's dispatches go out several to an AMQP message (consecutive ones of one lane, up to
//! the lane's batch size, [`message::per_message`]): the broker's cost is per AMQP message,
//! and one per recipient cost it as much CPU as PostgreSQL spent. Messages are persistent and
//! `mandatory`; a tick's messages are published back to back and the confirms awaited
//! together (never one publish at a time, which is fsync-bound). A dispatch counts as
//! published only on a positive, routed confirm of its message within the timeout.

use futures::future::join_all;
use herald_shared::config::Tls;
use herald_shared::ops::metrics as metrics_names;
use herald_shared::queue::message::{self, DispatchMessage};
use herald_shared::queue::pool::{Pool, PooledConnection};
use herald_shared::queue::topology;
use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel};
use std::collections::{BTreeSet, HashMap, VecDeque};
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
    /// Per lane, how many dispatches each of the messages last published to it carries,
    /// newest last: the broker counts a lane's depth in messages, the budget is in
    /// recipients, and the lane (first in, first out) holds the newest of them.
    sizes: HashMap<Uuid, VecDeque<u16>>,
    /// Lanes whose gauges this scheduler has set, zeroed when it stops leading.
    shown: BTreeSet<Uuid>,
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
            sizes: HashMap::new(),
            shown: BTreeSet::new(),
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

    /// Forgets the sizes of the messages this process published: at a new term, others led
    /// meanwhile and published their own, which a lane's depth must count as full batches,
    /// not as this process's old ones (a lane of twenty-recipient messages read as holding
    /// one each would be filled twenty times past a tick).
    pub fn forget_sizes(&mut self) {
        self.sizes.clear();
    }

    /// Zeroes the gauges of every lane this scheduler measured (its depth, consumers, drain
    /// rate and drain time): a scheduler that no longer leads stops measuring, and its last
    /// values, exported for as long as it lives, would sit beside the new leader's (a
    /// dashboard's `max by (lane)` shows them).
    pub fn zero_lane_gauges(&mut self) {
        for lane in std::mem::take(&mut self.shown) {
            let lane = lane.to_string();
            for name in [
                metrics_names::LANE_QUEUE_DEPTH,
                metrics_names::LANE_CONSUMERS,
                metrics_names::LANE_DRAIN_RATE,
                metrics_names::LANE_DRAIN,
            ] {
                metrics::gauge!(name, "lane" => lane.clone()).set(0.0);
            }
        }
    }

    /// Dispatches ready in a provider's lane (declared first if it is new): the sizes of the
    /// newest messages this scheduler published to it, as many as are ready; any more (from
    /// before this scheduler started) count as `full` each, a full batch.
    pub async fn lane_depth(
        &mut self,
        provider_id: Uuid,
        full: usize,
    ) -> Result<u32, PublishError> {
        let channel = self.channel().await?;
        let state = topology::declare_lane(&channel, provider_id)
            .await
            .inspect_err(|_| self.channel = None)?;
        self.shown.insert(provider_id);
        let lane = provider_id.to_string();
        metrics::gauge!(metrics_names::LANE_QUEUE_DEPTH, "lane" => lane.clone())
            .set(f64::from(state.ready));
        metrics::gauge!(metrics_names::LANE_CONSUMERS, "lane" => lane)
            .set(f64::from(state.consumers));
        let sizes = self.sizes.get(&provider_id);
        Ok(depth_in_dispatches(
            state.ready,
            sizes.unwrap_or(&VecDeque::new()),
            full,
        ))
    }

    /// Whether the broker can be reached: a channel is open or can be opened.
    pub async fn check(&mut self) -> Result<(), PublishError> {
        self.channel().await.map(|_| ())
    }

    /// Publishes `messages` in order, each to its provider's lane (which must have been
    /// declared, by [`lane_depth`](Self::lane_depth)), consecutive ones of a lane together
    /// up to `per_message(lane)` to an AMQP message; returns, per dispatch, whether the
    /// broker confirmed its message.
    pub async fn publish(
        &mut self,
        messages: &[DispatchMessage],
        per_message: impl Fn(Uuid) -> usize,
    ) -> Result<Vec<bool>, PublishError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let channel = self.channel().await?;
        let options = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let chunks = chunks(messages, per_message);
        let mut pending = Vec::with_capacity(chunks.len());
        for chunk in &chunks {
            let provider = chunk[0].provider_id;
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(message::batch_message_id(chunk).into());
            let published = channel
                .basic_publish(
                    topology::DISPATCH_EXCHANGE.into(),
                    topology::lane_routing_key(provider).as_str().into(),
                    options,
                    &message::encode_batch(chunk),
                    properties,
                )
                .await;
            match published {
                Ok(confirm) => pending.push(Some(confirm)),
                Err(error) => {
                    // The channel is gone: nothing after this can be published on it.
                    tracing::warn!(%error, "publish failed; the rest of this batch goes back to pending");
                    self.channel = None;
                    pending.resize_with(chunks.len(), || None);
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
        if confirms.iter().any(Option::is_none) {
            self.channel = None;
        }
        // Only what the broker holds counts toward a lane's depth.
        for (chunk, _) in chunks.iter().zip(&confirms).filter(|(_, c)| c.is_some()) {
            let sizes = self.sizes.entry(chunk[0].provider_id).or_default();
            if sizes.len() == SIZES_KEPT {
                sizes.pop_front();
            }
            sizes.push_back(u16::try_from(chunk.len()).unwrap_or(u16::MAX));
        }
        Ok(chunks
            .iter()
            .zip(&confirms)
            .flat_map(|(chunk, confirm)| std::iter::repeat_n(confirm.is_some(), chunk.len()))
            .collect())
    }
}

/// `messages` cut into AMQP messages: runs of one lane, each at most `per_message(lane)`
/// long, in order.
fn chunks(
    messages: &[DispatchMessage],
    per_message: impl Fn(Uuid) -> usize,
) -> Vec<&[DispatchMessage]> {
    let mut chunks = Vec::new();
    let mut rest = messages;
    while let Some(first) = rest.first() {
        let most = per_message(first.provider_id).max(1);
        let run = rest
            .iter()
            .take(most)
            .take_while(|m| m.provider_id == first.provider_id)
            .count();
        let (chunk, after) = rest.split_at(run);
        chunks.push(chunk);
        rest = after;
    }
    chunks
}

/// Message sizes kept per lane: more than any lane holds while this scheduler paces it.
const SIZES_KEPT: usize = 4096;

/// A lane's depth in dispatches: the sizes of the newest `ready` messages published to it
/// (`sizes`, newest last). Messages beyond those known (published before this scheduler
/// started, or handed back by a worker) count as `full` each: a lane taken for shallower
/// than it is would be filled deeper than a newcomer can wait behind.
fn depth_in_dispatches(ready: u32, sizes: &VecDeque<u16>, full: usize) -> u32 {
    let ready = usize::try_from(ready).unwrap_or(usize::MAX);
    let known = ready.min(sizes.len());
    let counted: u64 = sizes.iter().rev().take(known).map(|&n| u64::from(n)).sum();
    let unknown = (ready - known) as u64;
    let full = u64::try_from(full.max(1)).unwrap_or(1);
    u32::try_from(counted.saturating_add(unknown.saturating_mul(full))).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_shared::domain::Channel;

    fn dispatch(provider: u128, recipient: i64) -> DispatchMessage {
        DispatchMessage {
            v: message::FORMAT_VERSION,
            recipient_id: recipient,
            seq: 1,
            tenant_id: Uuid::nil(),
            campaign_id: Uuid::nil(),
            provider_id: Uuid::from_u128(provider),
            channel: Channel::Sms,
            to: "+15551234567".into(),
            body: "hi".into(),
            expires_at: None,
            variables: serde_json::Map::new(),
        }
    }

    #[test]
    fn messages_hold_runs_of_one_lane_up_to_its_batch_size() {
        let messages: Vec<DispatchMessage> = [1, 1, 1, 1, 1, 2, 2, 1]
            .iter()
            .enumerate()
            .map(|(i, &p)| dispatch(p, i as i64))
            .collect();
        let sizes = |p: Uuid| if p == Uuid::from_u128(1) { 2 } else { 50 };
        let cut: Vec<Vec<i64>> = chunks(&messages, sizes)
            .iter()
            .map(|c| c.iter().map(|m| m.recipient_id).collect())
            .collect();
        assert_eq!(
            cut,
            vec![vec![0, 1], vec![2, 3], vec![4], vec![5, 6], vec![7]]
        );
        // Order is kept: fairness decided it.
        assert!(chunks(&[], sizes).is_empty());
        assert_eq!(
            chunks(&messages, |_| 0).len(),
            messages.len(),
            "at least one each"
        );
    }

    #[test]
    fn depth_counts_the_newest_messages_dispatches() {
        let sizes: VecDeque<u16> = [20, 20, 3, 1, 20].into_iter().collect();
        assert_eq!(depth_in_dispatches(0, &sizes, 20), 0);
        // The lane holds the newest messages: the oldest were consumed first.
        assert_eq!(depth_in_dispatches(2, &sizes, 20), 21);
        assert_eq!(depth_in_dispatches(5, &sizes, 20), 64);
        // Two more than were published since the start: full batches.
        assert_eq!(depth_in_dispatches(7, &sizes, 20), 64 + 2 * 20);
        assert_eq!(depth_in_dispatches(3, &VecDeque::new(), 5), 15);
        assert_eq!(depth_in_dispatches(3, &VecDeque::new(), 0), 3);
        assert_eq!(depth_in_dispatches(u32::MAX, &sizes, 20), u32::MAX);
    }
}
