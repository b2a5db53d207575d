//! Herald's scheduler: every tick, one fair batch per active campaign into its provider's
//! lane (dispatch queue).
//!
//! - [`leader`]: only one scheduler acts at a time (PostgreSQL advisory lock).
//! - [`lanes`]: each provider's lane, budgeted apart; [`backpressure`]: how much to publish
//!   so a lane stays about one tick deep.
//! - [`fairness`]: how a tick's budget is split across tenants and campaigns, and the order.
//! - [`claim`]: claiming due recipients atomically.
//! - [`publish`]: publishing with confirms.
//! - [`sweeper`]: recovering lost claims and leases; completing campaigns.
//! - [`tick`]: one tick, end to end.

pub mod backpressure;
pub mod claim;
pub mod config;
pub mod fairness;
pub mod lanes;
pub mod leader;
pub mod publish;
pub mod sweeper;
pub mod tick;

use backpressure::Limits;
use config::SchedulerConfig;
use lanes::Lanes;
use leader::Leadership;
use publish::Publisher;
use std::time::Duration;
use tick::Ticker;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] herald_shared::db::DbError),
    #[error(transparent)]
    Publish(#[from] publish::PublishError),
}

/// Runs until `shutdown` is cancelled; a tick in progress is finished first.
pub async fn run(config: SchedulerConfig, shutdown: CancellationToken) -> Result<(), StartError> {
    let pool = herald_shared::db::connect(
        &config.connections.database_url,
        config.connections.db_pool_size,
    )
    .await?;
    let publisher = Publisher::new(
        &config.connections.amqp_url,
        Duration::from_millis(config.confirm_timeout_ms),
    )?;
    let lanes = Lanes::new(Limits {
        tick: config.tick(),
        depth_ticks: config.queue_depth_ticks,
        min_budget: config.min_budget,
        max_budget: config.max_budget,
    });
    let mut ticker = Ticker::new(
        pool.clone(),
        publisher,
        lanes,
        config.max_budget,
        Duration::from_millis(config.requeue_after_ms),
        tick::ReceiptKeeping {
            retention: Duration::from_secs(u64::from(config.receipt_retention_days) * 86_400),
            orphan_after: Duration::from_millis(config.receipt_orphan_after_ms),
        },
    );
    let mut leadership = Leadership::new(&config.connections.database_url);
    tracing::info!(
        tick_ms = config.tick_ms,
        "scheduler started; contending for leadership"
    );

    let mut interval = tokio::time::interval(config.tick());
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let starvation_poll = (config.tick() / 8).max(Duration::from_millis(50));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = interval.tick() => {}
            () = ticker.starved(starvation_poll) => {
                if leadership.refresh().await
                    && let Err(error) = ticker.top_up().await
                {
                    tracing::warn!(%error, "top-up failed");
                }
                continue;
            }
        }
        if !leadership.refresh().await {
            continue;
        }
        if let Err(error) = ticker.run().await {
            tracing::warn!(%error, "tick failed; retrying next tick");
        }
    }
    leadership.resign().await;
    pool.close().await;
    tracing::info!("scheduler stopped");
    Ok(())
}
