//! Herald's demo and benchmark driver: seeds tenants and campaigns into a running Herald,
//! shows live progress, and summarises. The services themselves are started by
//! `scripts/demo.sh` / `bench/run.sh`.
#![allow(clippy::print_stdout)]

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use herald_shared::domain::Channel;
use herald_store::catalog::{self, NewCampaign, NewProvider, NewRecipient};
use herald_store::progress::{self, CampaignProgress};
use serde_json::{Map, Value};
use sqlx::PgPool;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};
use uuid::Uuid;

mod broker;
mod cpu;
mod many;

#[derive(Debug, Parser)]
#[command(
    name = "herald-demo",
    version,
    about = "Seeds campaigns into a running Herald and reports on them"
)]
struct Cli {
    /// PostgreSQL URL of the running Herald.
    #[arg(
        long,
        env = "HERALD_DATABASE_URL",
        global = true,
        default_value = "postgres://herald:herald@127.0.0.1:5432/herald"
    )]
    database_url: String,
    /// Base URL of the provider simulator the campaigns send through.
    #[arg(
        long,
        env = "HERALD_SIMULATOR_URL",
        global = true,
        default_value = "http://127.0.0.1:9090"
    )]
    simulator_url: String,
    /// The secret the simulator signs its receipts with (its `--webhook-secret`): providers
    /// get it as their webhook secret, so workers ask for receipts (given a receiver).
    #[arg(
        long,
        env = "HERALD_SIMULATOR_WEBHOOK_SECRET",
        global = true,
        default_value = "simulator-webhook-secret"
    )]
    webhook_secret: String,
    /// RabbitMQ URL of the running Herald (for `broker` and `bench --broker-ceiling`).
    #[arg(
        long,
        env = "HERALD_AMQP_URL",
        global = true,
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Three tenants, campaigns started a few seconds apart, live progress and a summary.
    Run {
        /// Recipients per campaign, one tenant each.
        #[arg(long, value_delimiter = ',', default_value = "10000,10000,1000")]
        sizes: Vec<usize>,
        /// Seconds between campaign starts.
        #[arg(long, default_value_t = 3)]
        stagger_secs: u64,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// One campaign of N recipients as fast as Herald goes; prints messages per second.
    Bench {
        #[arg(long, default_value_t = 50_000)]
        recipients: usize,
        /// A label for the result line (e.g. the simulator latency).
        #[arg(long, default_value = "bench")]
        label: String,
        #[arg(long, default_value_t = 900)]
        timeout_secs: u64,
        /// The campaign's `batch_size` (the admin's default is 1,000).
        #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(i32).range(1..=100_000))]
        batch_size: i32,
        /// Also run, for another tenant, a large campaign through a second provider at this
        /// simulator URL (started just before the measured one, cancelled after it): the
        /// isolation benchmark's slow, failing neighbour.
        #[arg(long)]
        neighbour_url: Option<String>,
        /// The neighbour provider's fleet-wide in-flight cap.
        #[arg(long, default_value_t = 100)]
        neighbour_in_flight: i32,
        /// The neighbour provider's timeout (ms).
        #[arg(long, default_value_t = 3_000)]
        neighbour_timeout_ms: i32,
        /// First measure RabbitMQ alone (as `broker` does, with as many messages as
        /// recipients, at most 200,000) and give Herald's rate as a fraction of it.
        #[arg(long)]
        broker_ceiling: bool,
        #[command(flatten)]
        cpu: cpu::Parts,
    },
    /// RabbitMQ's own ceiling, no Herald logic: persistent messages (a recipient's dispatch
    /// each) published with confirms into a lane like Herald's and consumed with an ack each;
    /// prints messages per second and the CPU the named parts spent.
    Broker {
        #[arg(long, default_value_t = broker::MESSAGES, value_parser = clap::value_parser!(u32).range(1..))]
        messages: u32,
        /// Publishes awaiting their confirm at most.
        #[arg(long, default_value_t = broker::WINDOW, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        window: u32,
        /// The consumer's prefetch.
        #[arg(long, default_value_t = broker::PREFETCH, value_parser = clap::value_parser!(u16).range(1..))]
        prefetch: u16,
        /// Give up (and delete the lane) after this many seconds.
        #[arg(long, default_value_t = broker::TIMEOUT_SECS)]
        timeout_secs: u64,
        #[arg(long, default_value = "broker")]
        label: String,
        #[command(flatten)]
        cpu: cpu::Parts,
    },
    /// Many tenants' small campaigns at once (by default 1,000 tenants × 10 campaigns × 20
    /// recipients, all due at the same moment); prints messages per second and how long the
    /// scheduler's ticks took meanwhile (from its metrics).
    Many {
        #[arg(long, default_value_t = 1_000)]
        tenants: usize,
        #[arg(long, default_value_t = 10)]
        campaigns_per_tenant: usize,
        #[arg(long, default_value_t = 20)]
        recipients: usize,
        /// The scheduler's metrics endpoint (its HERALD_OPS_LISTEN).
        #[arg(long, default_value = "http://127.0.0.1:9410/metrics")]
        scheduler_metrics: String,
        #[arg(long, default_value = "many")]
        label: String,
        #[arg(long, default_value_t = 1_800)]
        timeout_secs: u64,
        #[command(flatten)]
        cpu: cpu::Parts,
    },
    /// The receipt receiver alone: N recipients already sent, and a `sent` then a
    /// `delivered` receipt for each, signed, posted by C concurrent clients; prints
    /// receipts per second and answer times.
    Receipts {
        #[arg(long, default_value_t = 50_000)]
        recipients: usize,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Where the receiver listens.
        #[arg(
            long,
            env = "HERALD_RECEIVER_URL",
            default_value = "http://127.0.0.1:8090"
        )]
        receiver_url: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            sizes,
            stagger_secs,
            timeout_secs,
        } => {
            let pool = database(&cli.database_url).await?;
            demo(
                &pool,
                &cli.simulator_url,
                &cli.webhook_secret,
                &sizes,
                stagger_secs,
                Duration::from_secs(timeout_secs),
            )
            .await
        }
        Command::Bench {
            recipients,
            label,
            timeout_secs,
            batch_size,
            neighbour_url,
            neighbour_in_flight,
            neighbour_timeout_ms,
            broker_ceiling,
            cpu,
        } => {
            if recipients == 0 {
                bail!("--recipients must be at least 1");
            }
            let pool = database(&cli.database_url).await?;
            let ceiling = if broker_ceiling {
                let load = broker::Load {
                    messages: u32::try_from(recipients).unwrap_or(u32::MAX).min(200_000),
                    ..broker::Load::default()
                };
                Some(broker::measure(&cli.amqp_url, load, &label, &with_client(&cpu.parts)).await?)
            } else {
                None
            };
            let neighbour = match neighbour_url {
                Some(url) => Some(
                    start_neighbour(&pool, &url, neighbour_in_flight, neighbour_timeout_ms).await?,
                ),
                None => None,
            };
            let rate = bench(
                &pool,
                &cli.simulator_url,
                &cli.webhook_secret,
                BenchCampaign {
                    recipients,
                    batch_size,
                },
                &label,
                Duration::from_secs(timeout_secs),
                &cpu.parts,
            )
            .await?;
            let beside_neighbour = neighbour.is_some();
            if let Some(campaign) = neighbour {
                stop_neighbour(&pool, campaign).await?;
            }
            if let Some(ceiling) = ceiling {
                let beside = if beside_neighbour {
                    "; a neighbour's campaign ran beside Herald's"
                } else {
                    ""
                };
                println!(
                    "{label}: {:.0}% of RabbitMQ alone ({rate:.0} against {:.0} msg/s, a message \
                     per recipient, measured just before{beside})",
                    100.0 * rate / ceiling,
                    ceiling
                );
            }
            Ok(())
        }
        Command::Broker {
            messages,
            window,
            prefetch,
            timeout_secs,
            label,
            cpu,
        } => {
            let load = broker::Load {
                messages,
                window: window as usize,
                prefetch,
                timeout: Duration::from_secs(timeout_secs),
            };
            broker::measure(&cli.amqp_url, load, &label, &with_client(&cpu.parts)).await?;
            Ok(())
        }
        Command::Many {
            tenants,
            campaigns_per_tenant,
            recipients,
            scheduler_metrics,
            label,
            timeout_secs,
            cpu,
        } => {
            let pool = database(&cli.database_url).await?;
            let run = Utc::now().format("%H%M%S%3f").to_string();
            let provider = provider(
                &pool,
                &cli.simulator_url,
                &cli.webhook_secret,
                &format!("many-{run}"),
            )
            .await?;
            let shape = many::Shape {
                tenants,
                campaigns_per_tenant,
                recipients,
            };
            many::run(
                &pool,
                provider,
                &shape,
                &scheduler_metrics,
                &label,
                Duration::from_secs(timeout_secs),
                &cpu.parts,
            )
            .await
        }
        Command::Receipts {
            recipients,
            concurrency,
            receiver_url,
        } => {
            let pool = database(&cli.database_url).await?;
            receipts_bench(
                &pool,
                &cli.simulator_url,
                &cli.webhook_secret,
                &receiver_url,
                recipients,
                concurrency.max(1),
            )
            .await
        }
    }
}

/// Posts `sent` and `delivered` receipts for `recipients` sent messages to the receiver.
async fn receipts_bench(
    pool: &PgPool,
    simulator_url: &str,
    secret: &str,
    receiver_url: &str,
    recipients: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let run = Utc::now().format("%H%M%S%3f").to_string();
    let provider = provider(pool, simulator_url, secret, &format!("receipts-{run}")).await?;
    let tenant = catalog::create_tenant(pool, &format!("receipts-{run}"), 1).await?;
    let campaign = seed(pool, tenant, provider, "receipts", recipients, 1_000, 0).await?;
    // As if every message had just been sent through the provider.
    sqlx::query(
        "UPDATE recipients SET state = 'sent', sent_at = now(), sent_via = $2,
                provider_message_id = 'bench-' || id
         WHERE campaign_id = $1",
    )
    .bind(campaign)
    .bind(provider)
    .execute(pool)
    .await?;
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM recipients WHERE campaign_id = $1")
        .bind(campaign)
        .fetch_all(pool)
        .await?;
    let url = format!("{receiver_url}/webhooks/http/{provider}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .build()?;
    let bodies: Vec<(String, String)> = ["sent", "delivered"]
        .iter()
        .flat_map(|status| {
            ids.iter().map(move |id| {
                let body = serde_json::json!({
                    "id": format!("bench-{id}"), "status": status,
                    "reference": herald_shared::queue::message::reference(campaign, *id),
                })
                .to_string();
                let signature = herald_shared::signature::hub(secret, body.as_bytes());
                (body, signature)
            })
        })
        .collect();
    let bodies = std::sync::Arc::new(bodies);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, url, bodies, next) =
                (http.clone(), url.clone(), bodies.clone(), next.clone());
            tokio::spawn(async move {
                let mut times = Vec::new();
                let mut refused = 0usize;
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((body, signature)) = bodies.get(i) else {
                        break;
                    };
                    let sent = Instant::now();
                    let answer = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .header(herald_shared::signature::HERALD_SIGNATURE_HEADER, signature)
                        .body(body.clone())
                        .send()
                        .await;
                    times.push(sent.elapsed());
                    if !answer.is_ok_and(|a| a.status().is_success()) {
                        refused += 1;
                    }
                }
                (times, refused)
            })
        })
        .collect();
    let mut times = Vec::with_capacity(bodies.len());
    let mut refused = 0;
    for task in tasks {
        let (t, r) = task.await?;
        times.extend(t);
        refused += r;
    }
    let took = started.elapsed().as_secs_f64();
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_secs_f64() * 1_000.0;
    let delivered: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM recipients WHERE campaign_id = $1 AND delivery_status = 'delivered'",
    )
    .bind(campaign)
    .fetch_one(pool)
    .await?;
    println!(
        "receiver: {} receipts in {took:.1} s = {:.0} receipts/s with {concurrency} in flight; \
         answered in {:.1} ms (median), {:.1} ms (p99); {refused} not 2xx; {delivered} of {} recipients delivered",
        bodies.len(),
        bodies.len() as f64 / took,
        at(0.5),
        at(0.99),
        ids.len()
    );
    Ok(())
}

async fn provider(
    pool: &PgPool,
    simulator_url: &str,
    webhook_secret: &str,
    name: &str,
) -> anyhow::Result<Uuid> {
    let mut provider = NewProvider::http(name, &format!("{simulator_url}/v1/messages"));
    provider.max_in_flight = 10_000;
    provider.credentials = serde_json::json!({ "webhook_secret": webhook_secret });
    Ok(catalog::create_provider(pool, &provider).await?)
}

async fn seed(
    pool: &PgPool,
    tenant: Uuid,
    provider: Uuid,
    name: &str,
    size: usize,
    batch: i32,
    offset: usize,
) -> anyhow::Result<Uuid> {
    let first_names = [
        "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken",
    ];
    let recipients: Vec<NewRecipient> = (0..size)
        .map(|i| {
            let mut variables = Map::new();
            variables.insert(
                "first_name".into(),
                Value::String(first_names[i % first_names.len()].into()),
            );
            NewRecipient {
                address: format!("+1555{:07}", offset + i),
                variables,
            }
        })
        .collect();
    let campaign = NewCampaign {
        tenant_id: tenant,
        provider_id: provider,
        overflow_provider_id: None,
        name: name.to_owned(),
        channel: Channel::Sms,
        template: "Hi {{first_name}}, your order has shipped.".into(),
        batch_size: batch,
    };
    Ok(catalog::create_campaign(pool, &campaign, &recipients).await?)
}

async fn demo(
    pool: &PgPool,
    simulator_url: &str,
    webhook_secret: &str,
    sizes: &[usize],
    stagger_secs: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let run = Utc::now().format("%H%M%S").to_string();
    let provider = provider(
        pool,
        simulator_url,
        webhook_secret,
        &format!("simulator-{run}"),
    )
    .await?;
    let tenant_names = ["acme", "globex", "initech", "umbrella", "hooli", "soylent"];
    let mut campaigns = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let tenant_name = format!("{}-{run}", tenant_names[i % tenant_names.len()]);
        let tenant = catalog::create_tenant(pool, &tenant_name, 1).await?;
        let campaign = seed(
            pool,
            tenant,
            provider,
            &format!("spring-sale-{}", i + 1),
            size,
            // The admin's default batch size.
            1_000,
            i * 1_000_000,
        )
        .await?;
        println!("created campaign {campaign} for tenant {tenant_name} with {size} recipients");
        campaigns.push(campaign);
    }

    let started = Instant::now();
    let mut to_start = campaigns.clone().into_iter().enumerate().peekable();
    let mut drawn = 0;
    loop {
        while let Some((i, campaign)) = to_start.peek().copied() {
            if started.elapsed() < Duration::from_secs(stagger_secs * i as u64) {
                break;
            }
            catalog::start_campaign(pool, campaign, None).await?;
            to_start.next();
        }
        let rows = progress::campaigns(pool, &campaigns).await?;
        drawn = draw(&rows, &delivered(pool, &campaigns).await?, drawn);
        if to_start.peek().is_none() && rows.iter().all(|r| r.status == "completed") {
            break;
        }
        if started.elapsed() > timeout {
            bail!("campaigns did not complete within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Receipts trail the sends: give the last ones a few seconds.
    let waited = Instant::now();
    loop {
        let receipts = final_receipts(pool, &campaigns).await?;
        let rows = progress::campaigns(pool, &campaigns).await?;
        let sent: i64 = rows.iter().map(|r| r.counts.sent).sum();
        if receipts.values().sum::<i64>() >= sent || waited.elapsed() > Duration::from_secs(10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    summary(
        &progress::campaigns(pool, &campaigns).await?,
        &last_sends(pool, &campaigns).await?,
        &delivered(pool, &campaigns).await?,
    );
    if let Ok(stats) = simulator_stats(simulator_url).await {
        println!(
            "provider simulator: {} requests, {} accepted, {} duplicates, {} receipts posted",
            stats["requests"],
            stats["accepted"],
            stats["duplicates"],
            stats["receipts"]["accepted"]
        );
    }
    Ok(())
}

/// Redraws the progress block in place on a terminal; prints plain lines otherwise.
fn draw(
    rows: &[CampaignProgress],
    delivered: &std::collections::HashMap<Uuid, i64>,
    previous_lines: usize,
) -> usize {
    let tty = std::io::stdout().is_terminal();
    let mut out = String::new();
    if tty && previous_lines > 0 {
        out.push_str(&format!("\x1b[{previous_lines}A"));
    }
    for row in rows {
        let done = row.counts.finished() as f64 / row.counts.total.max(1) as f64;
        let width = 30;
        let filled = (done * width as f64).round() as usize;
        out.push_str(&format!(
            "{:<22} {:<16} [{}{}] {:>5.1}%  sent {:>6}  delivered {:>6}  failed {:>4}  in flight {:>5}  {:<9}{}\n",
            row.tenant,
            row.name,
            "#".repeat(filled),
            "-".repeat(width - filled),
            done * 100.0,
            row.counts.sent,
            delivered.get(&row.id).copied().unwrap_or(0),
            row.counts.failed,
            row.counts.queued + row.counts.sending,
            row.status,
            if tty { "\x1b[K" } else { "" },
        ));
    }
    if tty {
        print!("{out}");
    } else {
        println!("{}", out.trim_end().replace('\n', " | "));
    }
    let _ = std::io::stdout().flush();
    rows.len()
}

/// Recipients of each campaign with a final receipt (delivered, undelivered, failed…).
async fn final_receipts(
    pool: &PgPool,
    ids: &[Uuid],
) -> anyhow::Result<std::collections::HashMap<Uuid, i64>> {
    let counts = progress::delivery_counts(pool, ids).await?;
    let mut finals = std::collections::HashMap::new();
    for count in counts {
        let summary = progress::DeliverySummary::of([(count.status.as_str(), count.n)], 0);
        *finals.entry(count.campaign_id).or_insert(0) +=
            summary.delivered + summary.undelivered + summary.failed;
    }
    Ok(finals)
}

/// Recipients of each campaign whose receipts say the message was delivered.
async fn delivered(
    pool: &PgPool,
    ids: &[Uuid],
) -> anyhow::Result<std::collections::HashMap<Uuid, i64>> {
    let counts = progress::delivery_counts(pool, ids).await?;
    let mut delivered = std::collections::HashMap::new();
    for count in counts {
        let summary = progress::DeliverySummary::of([(count.status.as_str(), count.n)], 0);
        *delivered.entry(count.campaign_id).or_insert(0) += summary.delivered;
    }
    Ok(delivered)
}

/// When each campaign's last send happened: read once for the summary, straight from the
/// recipients (progress counters do not keep it).
async fn last_sends(
    pool: &PgPool,
    ids: &[Uuid],
) -> anyhow::Result<std::collections::HashMap<Uuid, DateTime<Utc>>> {
    let rows: Vec<(Uuid, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT campaign_id, max(sent_at) FROM recipients WHERE campaign_id = ANY($1) GROUP BY campaign_id",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, at)| Some((id, at?)))
        .collect())
}

fn summary(
    rows: &[CampaignProgress],
    last_sent: &std::collections::HashMap<Uuid, DateTime<Utc>>,
    delivered: &std::collections::HashMap<Uuid, i64>,
) {
    println!("\nSummary");
    println!(
        "{:<22} {:<16} {:>8} {:>8} {:>10} {:>7} {:>16} {:>10} {:>12}",
        "tenant",
        "campaign",
        "total",
        "sent",
        "delivered",
        "failed",
        "first send (ms)",
        "took (s)",
        "msg/s"
    );
    for row in rows {
        let first = row
            .counts
            .time_to_first_send()
            .map_or("-".into(), |d| d.num_milliseconds().to_string());
        let took = match (row.counts.started_at, last_sent.get(&row.id).copied()) {
            (Some(start), Some(end)) => (end - start).num_milliseconds() as f64 / 1000.0,
            _ => 0.0,
        };
        let rate = if took > 0.0 {
            row.counts.sent as f64 / took
        } else {
            0.0
        };
        println!(
            "{:<22} {:<16} {:>8} {:>8} {:>10} {:>7} {:>16} {:>10.1} {:>12.0}",
            row.tenant,
            row.name,
            row.counts.total,
            row.counts.sent,
            delivered.get(&row.id).copied().unwrap_or(0),
            row.counts.failed,
            first,
            took,
            rate
        );
    }
    let start = rows.iter().filter_map(|r| r.counts.started_at).min();
    let end = last_sent.values().copied().max();
    if let (Some(start), Some(end)) = (start, end) {
        let secs = (end - start).num_milliseconds() as f64 / 1000.0;
        let sent: i64 = rows.iter().map(|r| r.counts.sent).sum();
        println!(
            "overall: {sent} sent in {secs:.1} s = {:.0} msg/s",
            sent as f64 / secs.max(0.001)
        );
    }
}

/// The campaign a bench sends.
struct BenchCampaign {
    recipients: usize,
    batch_size: i32,
}

async fn bench(
    pool: &PgPool,
    simulator_url: &str,
    webhook_secret: &str,
    BenchCampaign {
        recipients,
        batch_size,
    }: BenchCampaign,
    label: &str,
    timeout: Duration,
    cpu: &[cpu::Part],
) -> anyhow::Result<f64> {
    let run = Utc::now().format("%H%M%S%3f").to_string();
    let provider = provider(pool, simulator_url, webhook_secret, &format!("bench-{run}")).await?;
    let tenant = catalog::create_tenant(pool, &format!("bench-{run}"), 1).await?;
    let campaign = seed(pool, tenant, provider, "bench", recipients, batch_size, 0).await?;
    let started = Instant::now();
    let cpu_before = cpu::Snapshot::take(cpu);
    catalog::start_campaign(pool, campaign, None).await?;
    let mut last_print = Instant::now();
    loop {
        let row = progress::campaigns(pool, &[campaign])
            .await?
            .pop()
            .context("bench campaign vanished")?;
        if row.status == "completed" {
            break;
        }
        if last_print.elapsed() > Duration::from_secs(2) {
            eprintln!("  {label}: {} / {} sent", row.counts.sent, row.counts.total);
            last_print = Instant::now();
        }
        if started.elapsed() > timeout {
            bail!("bench did not complete within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cpu_after = cpu::Snapshot::take(cpu);
    // Throughput from the database's own timestamps: campaign start to last send, and the
    // steady state (the middle 80% of sends, leaving out ramp-up and tail).
    let (total_secs, steady_rate): (f64, f64) = sqlx::query_as(
        "WITH s AS (SELECT sent_at, row_number() OVER (ORDER BY sent_at) AS n, count(*) OVER () AS total
                    FROM recipients WHERE campaign_id = $1 AND state = 'sent')
         SELECT extract(epoch FROM (SELECT max(sent_at) FROM s) - (SELECT started_at FROM campaigns WHERE id = $1))::float8,
                (SELECT (max(n) - min(n))::float8 / greatest(extract(epoch FROM max(sent_at) - min(sent_at))::float8, 0.001)
                 FROM s WHERE n BETWEEN total * 0.1 AND total * 0.9)",
    )
    .bind(campaign)
    .fetch_one(pool)
    .await?;
    let row = progress::campaigns(pool, &[campaign])
        .await?
        .pop()
        .context("bench campaign vanished")?;
    // The provider's own count is the check that speed did not cost correctness.
    let stats = simulator_stats(simulator_url).await?;
    let rate = row.counts.sent as f64 / total_secs.max(0.001);
    println!(
        "{label}: {} sent, {} failed in {:.1} s: {rate:.0} msg/s end to end, {:.0} msg/s steady state; \
         provider saw {} requests, {} duplicates",
        row.counts.sent,
        row.counts.failed,
        total_secs,
        steady_rate,
        stats["requests"],
        stats["duplicates"],
    );
    if !cpu.is_empty() {
        println!(
            "{label}: {}",
            cpu_after.report(&cpu_before, row.counts.sent)
        );
    }
    if let Some(memory) = cpu::peak_memory(cpu) {
        println!("{label}: {memory}");
    }
    Ok(rate)
}

async fn database(url: &str) -> anyhow::Result<PgPool> {
    herald_shared::db::connect(url, 4, &Default::default())
        .await
        .context("connecting to PostgreSQL")
}

/// `parts` and this process (the broker's only client while it is measured alone).
fn with_client(parts: &[cpu::Part]) -> Vec<cpu::Part> {
    let mut parts = parts.to_vec();
    if let Ok(me) = format!("client={}", std::process::id()).parse() {
        parts.push(me);
    }
    parts
}

/// Starts the neighbour's campaign: far more recipients than it can send during the bench.
async fn start_neighbour(
    pool: &PgPool,
    url: &str,
    in_flight: i32,
    timeout_ms: i32,
) -> anyhow::Result<Uuid> {
    let run = Utc::now().format("%H%M%S%3f").to_string();
    let mut provider =
        NewProvider::http(&format!("neighbour-{run}"), &format!("{url}/v1/messages"));
    provider.max_in_flight = in_flight;
    provider.timeout_ms = timeout_ms;
    let provider = catalog::create_provider(pool, &provider).await?;
    let tenant = catalog::create_tenant(pool, &format!("neighbour-{run}"), 1).await?;
    let campaign = seed(
        pool,
        tenant,
        provider,
        "neighbour",
        100_000,
        100_000,
        50_000_000,
    )
    .await?;
    catalog::start_campaign(pool, campaign, None).await?;
    Ok(campaign)
}

/// Reports what the neighbour did meanwhile, then cancels its campaign.
async fn stop_neighbour(pool: &PgPool, campaign: Uuid) -> anyhow::Result<()> {
    let row = progress::campaigns(pool, &[campaign])
        .await?
        .pop()
        .context("neighbour campaign vanished")?;
    let retries: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM recipients WHERE campaign_id = $1 AND state = 'pending' AND attempts > 0",
    )
    .bind(campaign)
    .fetch_one(pool)
    .await?;
    println!(
        "  neighbour meanwhile: {} sent, {} waiting to retry after a timeout, {} in flight",
        row.counts.sent,
        retries,
        row.counts.queued + row.counts.sending
    );
    sqlx::query("UPDATE campaigns SET status = 'cancelled' WHERE id = $1")
        .bind(campaign)
        .execute(pool)
        .await?;
    Ok(())
}

async fn simulator_stats(simulator_url: &str) -> anyhow::Result<Value> {
    Ok(reqwest::get(format!("{simulator_url}/control/stats"))
        .await?
        .json()
        .await?)
}
