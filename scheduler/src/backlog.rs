//! The backlog: recipients of running campaigns not yet sent, per provider and per tenant,
//! published as gauges for dashboards and for worker autoscaling (KEDA scales on work to
//! do, not on queue length: the lanes are kept about a tick deep on purpose).
//!
//! Read from the progress counters and the ledger's deltas not yet folded into them (view
//! `campaign_bucket_counts`: a few rows per campaign), never by counting recipients, so it costs the same with ten recipients or ten million.

use herald_shared::ops::metrics::{RECIPIENTS_DUE, TENANT_RECIPIENTS_DUE};
use sqlx::PgPool;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The label values last published, so that those whose backlog is gone read 0 rather
/// than their last figure.
#[derive(Debug, Default)]
pub struct Backlog {
    providers: BTreeSet<Uuid>,
    tenants: BTreeSet<Uuid>,
    /// Not measured again before then (see [`next_measurement`]).
    next_at: Option<Instant>,
}

/// At most a twentieth of the scheduler's time goes to the backlog, and it is never older than
/// `MOST_STALE`: a few campaigns are measured every tick, while ten thousand (about 0.4 s a
/// read on a 2-core machine, a fifth of the database's time in that bench) every few ticks.
/// Dashboards and autoscalers poll every 15–30 s.
const MOST_STALE: Duration = Duration::from_secs(15);

/// When to measure again after a measurement that took `cost` and ended at `ended`.
pub fn next_measurement(ended: Instant, cost: Duration) -> Instant {
    ended + (cost * 19).min(MOST_STALE)
}

/// Per provider and per tenant totals of `(provider, tenant, recipients)` rows.
pub fn totals(rows: &[(Uuid, Uuid, i64)]) -> (BTreeMap<Uuid, i64>, BTreeMap<Uuid, i64>) {
    let mut providers = BTreeMap::new();
    let mut tenants = BTreeMap::new();
    for &(provider, tenant, n) in rows {
        *providers.entry(provider).or_insert(0) += n;
        *tenants.entry(tenant).or_insert(0) += n;
    }
    (providers, tenants)
}

impl Backlog {
    /// Reads the backlog and publishes it, unless it was read too recently for its cost.
    pub async fn measure(&mut self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let started = Instant::now();
        if self.next_at.is_some_and(|at| started < at) {
            return Ok(());
        }
        let rows = herald_store::campaigns::backlog(pool).await?;
        let (providers, tenants) = totals(&rows);
        publish(RECIPIENTS_DUE, "provider", &providers, &mut self.providers);
        publish(TENANT_RECIPIENTS_DUE, "tenant", &tenants, &mut self.tenants);
        let ended = Instant::now();
        self.next_at = Some(next_measurement(ended, ended - started));
        Ok(())
    }

    /// A standby publishes no backlog: the leader's is the fleet's.
    pub fn clear(&mut self) {
        publish(
            RECIPIENTS_DUE,
            "provider",
            &BTreeMap::new(),
            &mut self.providers,
        );
        publish(
            TENANT_RECIPIENTS_DUE,
            "tenant",
            &BTreeMap::new(),
            &mut self.tenants,
        );
        // A scheduler that leads again measures at once.
        self.next_at = None;
    }
}

fn publish(
    name: &'static str,
    label: &'static str,
    now: &BTreeMap<Uuid, i64>,
    shown: &mut BTreeSet<Uuid>,
) {
    for gone in shown.iter().filter(|id| !now.contains_key(id)) {
        metrics::gauge!(name, label => gone.to_string()).set(0.0);
    }
    for (id, &n) in now {
        metrics::gauge!(name, label => id.to_string()).set(n as f64);
    }
    shown.extend(now.keys().copied());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_per_provider_and_per_tenant() {
        let (p1, p2, t1, t2) = (
            Uuid::from_u128(1),
            Uuid::from_u128(2),
            Uuid::from_u128(3),
            Uuid::from_u128(4),
        );
        let (providers, tenants) = totals(&[(p1, t1, 10), (p1, t2, 5), (p2, t2, 7)]);
        assert_eq!(providers, BTreeMap::from([(p1, 15), (p2, 7)]));
        assert_eq!(tenants, BTreeMap::from([(t1, 10), (t2, 12)]));
        assert_eq!(totals(&[]), (BTreeMap::new(), BTreeMap::new()));
    }

    #[test]
    fn a_dear_backlog_is_read_less_often_and_never_goes_stale() {
        let now = Instant::now();
        let after = |cost_ms| next_measurement(now, Duration::from_millis(cost_ms)) - now;
        // A few campaigns: again at the next tick.
        assert_eq!(after(2), Duration::from_millis(38));
        // Ten thousand: a twentieth of the time.
        assert_eq!(after(400), Duration::from_millis(7_600));
        assert_eq!(after(10_000), MOST_STALE);
    }
}
