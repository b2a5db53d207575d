//! The scheduler's settings, from flags or `HERALD_*` environment variables.

use herald_shared::config::{Broker, Connections};
use herald_shared::ops::OpsConfig;
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct SchedulerConfig {
    #[command(flatten)]
    pub connections: Connections,

    #[command(flatten)]
    pub broker: Broker,

    #[command(flatten)]
    pub ops: OpsConfig,

    /// Milliseconds between ticks; each tick publishes one fair batch.
    #[arg(long, env = "HERALD_TICK_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub tick_ms: u64,

    /// Target depth of the dispatch queue, in ticks of measured worker drain.
    #[arg(long, env = "HERALD_SCHEDULER_QUEUE_DEPTH_TICKS", default_value_t = 1.0, value_parser = parse_depth_ticks)]
    pub queue_depth_ticks: f64,

    /// The least a tick gives a lane while its workers' capacity is unknown (a new or quiet
    /// lane); a busy lane holds about one tick of its drain, however small.
    #[arg(long, env = "HERALD_SCHEDULER_MIN_BUDGET", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub min_budget: u32,

    /// Most messages one pass (a tick, a top-up between ticks, or a wake) publishes into a lane.
    #[arg(long, env = "HERALD_SCHEDULER_MAX_BUDGET", default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_budget: u32,

    /// Fewest recipients a campaign is claimed at once while it has that many due. When a
    /// lane's fair share per campaign is smaller (thousands of campaigns), campaigns take
    /// turns at batches of this size, each kept within about one batch of its fair share.
    #[arg(long, env = "HERALD_SCHEDULER_MIN_BATCH", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub min_batch: u32,

    /// A recipient claimed longer ago than this (ms) and not leased yet is assumed to have
    /// lost its message and is dispatched again (of the old message, if any, and the new
    /// one, whichever comes second is dropped).
    #[arg(long, env = "HERALD_SCHEDULER_REQUEUE_AFTER_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1_000..=86_400_000))]
    pub requeue_after_ms: u64,

    /// How long to wait for RabbitMQ to confirm a tick's publishes (ms).
    #[arg(long, env = "HERALD_SCHEDULER_CONFIRM_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub confirm_timeout_ms: u64,

    /// Receipts are deleted after this many days (they are the audit trail of what providers
    /// reported; recipients keep their latest status regardless).
    #[arg(long, env = "HERALD_RECEIPT_RETENTION_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub receipt_retention_days: u32,

    /// A receipt that has matched no recipient for this long (ms) is reported as orphaned:
    /// logged, and listed by the admin API (`GET /api/v1/receipts/orphans`).
    #[arg(long, env = "HERALD_RECEIPT_ORPHAN_AFTER_MS", default_value_t = 3_600_000, value_parser = clap::value_parser!(u64).range(1_000..=604_800_000))]
    pub receipt_orphan_after_ms: u64,
}

impl SchedulerConfig {
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms)
    }
}

fn parse_depth_ticks(value: &str) -> Result<f64, String> {
    let ticks: f64 = value
        .parse()
        .map_err(|_| format!("`{value}` is not a number"))?;
    if !(0.1..=10.0).contains(&ticks) {
        return Err("must be between 0.1 and 10".into());
    }
    Ok(ticks)
}
