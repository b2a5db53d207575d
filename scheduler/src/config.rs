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

    /// Settings that work together, but wastefully: a pass may wait up to the database
    /// deadline and then for the broker's confirms of what it published, and a claim the
    /// sweeper takes back sooner, its message still on its way, is dispatched a second time
    /// (the later copy is dropped by the lease: nothing is sent twice, but a send slot is
    /// wasted and a retry bounced unsent). Tests shorten the wait on purpose, so this is a
    /// warning, not a refusal.
    pub fn warning(&self) -> Option<String> {
        let pass = self.connections.db_deadline_ms + self.confirm_timeout_ms;
        (self.requeue_after_ms <= pass).then(|| {
            format!(
                "HERALD_SCHEDULER_REQUEUE_AFTER_MS ({}) is not more than HERALD_DB_DEADLINE_MS \
                 plus HERALD_SCHEDULER_CONFIRM_TIMEOUT_MS ({pass}): claims a slow pass is still \
                 publishing may be dispatched twice (the second copy is dropped unsent)",
                self.requeue_after_ms
            )
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: SchedulerConfig,
    }

    fn config(args: &[&str]) -> SchedulerConfig {
        let url = ["scheduler", "--database-url", "postgres://h@localhost/h"];
        Cli::try_parse_from(url.iter().chain(args))
            .expect("valid settings")
            .config
    }

    #[test]
    fn a_requeue_within_a_pass_is_warned_of() {
        assert_eq!(config(&[]).warning(), None, "the defaults fit");
        let short = config(&["--requeue-after-ms", "5000"]).warning();
        assert!(short.is_some_and(
            |w| w.contains("HERALD_SCHEDULER_REQUEUE_AFTER_MS (5000)") && w.contains("(25000)")
        ),);
        let fitted = [
            "--requeue-after-ms",
            "5000",
            "--db-deadline-ms",
            "2000",
            "--confirm-timeout-ms",
            "2000",
        ];
        assert_eq!(config(&fitted).warning(), None);
    }
}
