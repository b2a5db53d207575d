//! The many-campaigns benchmark: a platform's ordinary day, many tenants each running a few
//! small campaigns at once. What it measures is the scheduler's cost per campaign: how long
//! its ticks take with every campaign running, and how much of the one-campaign rate is left.

use anyhow::{Context, bail};
use herald_store::catalog;
use sqlx::PgPool;
use std::time::{Duration, Instant};
use uuid::Uuid;

pub struct Shape {
    pub tenants: usize,
    pub campaigns_per_tenant: usize,
    pub recipients: usize,
}

pub async fn run(
    pool: &PgPool,
    provider: Uuid,
    shape: &Shape,
    scheduler_metrics: &str,
    label: &str,
    timeout: Duration,
    cpu: &[super::cpu::Part],
) -> anyhow::Result<()> {
    let run = chrono::Utc::now().format("%H%M%S%3f").to_string();
    let seeding = Instant::now();
    let mut campaigns = Vec::with_capacity(shape.tenants * shape.campaigns_per_tenant);
    for t in 0..shape.tenants {
        let tenant = catalog::create_tenant(pool, &format!("many-{run}-{t}"), 1).await?;
        for c in 0..shape.campaigns_per_tenant {
            let offset = campaigns.len() * shape.recipients;
            let name = format!("c{c}");
            campaigns.push(
                super::seed(
                    pool,
                    tenant,
                    provider,
                    &name,
                    shape.recipients,
                    1_000,
                    offset,
                )
                .await?,
            );
        }
    }
    let total = (campaigns.len() * shape.recipients) as i64;
    eprintln!(
        "  {label}: seeded {} campaigns of {} recipients in {:.0} s",
        campaigns.len(),
        shape.recipients,
        seeding.elapsed().as_secs_f64()
    );

    // Every campaign due at the same moment, a little ahead, so that all start together:
    // started in one transaction (one by one, a commit each, starting them took longer than
    // the run: 56 s for 10,000 on a busy two-core machine, and the run measured that pace).
    let start_at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT now() + interval '3 seconds'")
            .fetch_one(pool)
            .await?;
    let cpu_before = super::cpu::Snapshot::take(cpu);
    let (before, phases_before) = scrape(scheduler_metrics).await?;
    let starting = Instant::now();
    let count = catalog::start_campaigns(pool, &campaigns, Some(start_at)).await?;
    eprintln!(
        "  {label}: started {count} campaigns in one transaction in {:.2} s, all due 3 s after the first",
        starting.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let mut last_print = Instant::now();
    loop {
        let sent: i64 = sqlx::query_scalar(
            // From the counters, not the recipients: counting 200,000 rows every half second
            // took a quarter of a core from what the bench measures.
            "SELECT coalesce(sum(n), 0)::int8 FROM campaign_bucket_counts
             WHERE campaign_id = ANY($1) AND state IN ('sent', 'failed')",
        )
        .bind(&campaigns)
        .fetch_one(pool)
        .await?;
        if sent >= total {
            break;
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            eprintln!("  {label}: {sent} / {total} done");
            last_print = Instant::now();
        }
        if started.elapsed() > timeout {
            bail!("the campaigns did not finish within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (after, phases_after) = scrape(scheduler_metrics).await?;
    let cpu_after = super::cpu::Snapshot::take(cpu);
    let (secs, sent): (f64, i64) = sqlx::query_as(
        "SELECT extract(epoch FROM max(sent_at) - $2)::float8, count(*) FILTER (WHERE state = 'sent')
         FROM recipients WHERE campaign_id = ANY($1)",
    )
    .bind(&campaigns)
    .bind(start_at)
    .fetch_one(pool)
    .await?;
    let ticks = after.delta(&before);
    println!(
        "{label}: {} campaigns × {} recipients: {sent} sent in {secs:.1} s: {:.0} msg/s; \
         {} ticks, mean {:.0} ms, {:.0}% within 100 ms, {:.0}% within 250 ms, {:.0}% within 1 s, \
         slowest bucket ≤ {}",
        campaigns.len(),
        shape.recipients,
        sent as f64 / secs.max(0.001),
        ticks.count,
        ticks.mean_ms(),
        ticks.share_within(0.1) * 100.0,
        ticks.share_within(0.25) * 100.0,
        ticks.share_within(1.0) * 100.0,
        ticks.slowest_bucket(),
    );
    let phases: Vec<String> = phases_after
        .iter()
        .map(|(phase, &(sum, count))| {
            let (was_sum, was_count) = phases_before.get(phase).copied().unwrap_or_default();
            let (sum, count) = (sum - was_sum, count - was_count);
            format!(
                "{phase} {:.0} ms × {count:.0}",
                sum / count.max(1.0) * 1000.0
            )
        })
        .collect();
    println!(
        "{label}: dispatch phases (mean × times; ticks, top-ups and wakes): {}",
        phases.join(", ")
    );
    if !cpu.is_empty() {
        println!("{label}: {}", cpu_after.report(&cpu_before, sent));
    }
    Ok(())
}

/// The scheduler's tick-duration histogram, as its metrics endpoint shows it.
#[derive(Debug, Default, Clone)]
struct Histogram {
    /// (upper bound in seconds, cumulative count); `+Inf` last.
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

impl Histogram {
    fn delta(&self, before: &Histogram) -> Histogram {
        let buckets = self
            .buckets
            .iter()
            .map(|&(le, n)| {
                let was = before
                    .buckets
                    .iter()
                    .find(|(b, _)| *b == le)
                    .map_or(0.0, |(_, n)| *n);
                (le, n - was)
            })
            .collect();
        Histogram {
            buckets,
            sum: self.sum - before.sum,
            count: self.count - before.count,
        }
    }

    fn mean_ms(&self) -> f64 {
        self.sum / self.count.max(1.0) * 1000.0
    }

    fn share_within(&self, seconds: f64) -> f64 {
        let within = self
            .buckets
            .iter()
            .find(|(le, _)| (*le - seconds).abs() < 1e-9)
            .map_or(0.0, |(_, n)| *n);
        within / self.count.max(1.0)
    }

    /// The smallest bucket holding every tick.
    fn slowest_bucket(&self) -> String {
        self.buckets
            .iter()
            .find(|(_, n)| *n >= self.count)
            .map_or("?".to_owned(), |(le, _)| {
                if le.is_infinite() {
                    "∞".to_owned()
                } else {
                    format!("{:.0} ms", le * 1000.0)
                }
            })
    }
}

/// Per phase of the scheduler's dispatches: (seconds in total, dispatches).
type Phases = std::collections::BTreeMap<String, (f64, f64)>;

/// The scheduler's tick histogram and its phases' totals, as its metrics endpoint shows them.
async fn scrape(url: &str) -> anyhow::Result<(Histogram, Phases)> {
    let text = reqwest::get(url)
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("reading the scheduler's metrics at {url}"))?
        .text()
        .await?;
    Ok((tick_histogram(&text), phases(&text)))
}

/// The `(key, value)` of each sample line of a Prometheus text exposition.
fn samples(text: &str) -> impl Iterator<Item = (&str, f64)> {
    text.lines().filter_map(|line| {
        let (key, value) = line.rsplit_once(' ')?;
        Some((key, value.parse::<f64>().ok()?))
    })
}

fn phases(text: &str) -> Phases {
    let name = herald_shared::ops::metrics::TICK_PHASE_DURATION;
    let mut phases = Phases::new();
    for (key, value) in samples(text) {
        for (suffix, sum) in [("_sum", true), ("_count", false)] {
            if let Some(phase) = key
                .strip_prefix(&format!("{name}{suffix}{{phase=\""))
                .and_then(|rest| rest.strip_suffix("\"}"))
            {
                let entry = phases.entry(phase.to_owned()).or_default();
                if sum {
                    entry.0 = value;
                } else {
                    entry.1 = value;
                }
            }
        }
    }
    phases
}

fn tick_histogram(text: &str) -> Histogram {
    let name = herald_shared::ops::metrics::TICK_DURATION;
    let mut histogram = Histogram::default();
    for (key, value) in samples(text) {
        if let Some(rest) = key.strip_prefix(&format!("{name}_bucket{{le=\"")) {
            let le = rest.trim_end_matches("\"}");
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::NAN)
            };
            histogram.buckets.push((le, value));
        } else if key == format!("{name}_sum") {
            histogram.sum = value;
        } else if key == format!("{name}_count") {
            histogram.count = value;
        }
    }
    histogram
}
