//! What operators rely on: metrics that agree with what was sent, the dashboard's metrics,
//! and a draining worker that says so. (Readiness against a stopped broker, and TLS, need
//! backends of their own: `tests/tests/backends`.)

use anyhow::{Context, Result, ensure};
use herald_tests::{TestEnv, metric_names, metric_sum, numbers, wait_until};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_agree_with_the_provider_and_the_backlog_drains() -> Result<()> {
    let mut env = TestEnv::new(&["--latency", "fixed:50"]).await?;
    env.receiver().await?;
    let tenant = env.tenant("acme", 1).await?;
    let provider = env.create_provider(&env.provider()).await?;
    // Rate-limited, so the run lasts long enough to watch the backlog, and so send slots
    // are counted.
    sqlx::query("UPDATE providers SET rate_limit = 400, rate_window_ms = 1000 WHERE id = $1")
        .bind(provider)
        .execute(&env.pool)
        .await?;
    let campaign = env
        .campaign(
            tenant,
            provider,
            "metrics",
            &numbers("+1555300", 2_000),
            500,
        )
        .await?;
    let scheduler = env.scheduler(500, &[])?;
    // On one runtime thread, as a replica given its share of a machine's CPUs runs.
    let worker = env.worker(&[
        ("HERALD_WORKER_PREFETCH", "50"),
        ("HERALD_WORKER_THREADS", "1"),
    ])?;
    env.wait_readiness(&scheduler, 200, Duration::from_secs(20))
        .await?;
    env.wait_readiness(&worker, 200, Duration::from_secs(20))
        .await?;
    env.start(campaign).await?;

    // The backlog shows while the campaign runs.
    let mut most_due = 0.0_f64;
    let deadline = Instant::now() + Duration::from_secs(20);
    while most_due == 0.0 {
        ensure!(
            Instant::now() < deadline,
            "the backlog metric never showed the campaign"
        );
        if let Ok(text) = env.scrape(&scheduler).await {
            most_due = most_due.max(metric_sum(&text, "herald_recipients_due", &[]).unwrap_or(0.0));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.wait_completed(&[campaign], Duration::from_secs(60))
        .await?;

    let accepted: u64 = env.simulator_accepted().await?.values().sum();
    ensure!(accepted == 2_000, "the simulator accepted {accepted}");
    let tenant_label = tenant.to_string();
    let provider_label = provider.to_string();
    let worker_text = env.scrape(&worker).await?;
    let sent = metric_sum(
        &worker_text,
        "herald_messages_total",
        &[
            ("outcome", "sent"),
            ("tenant", &tenant_label),
            ("provider", &provider_label),
        ],
    );
    ensure!(
        sent == Some(accepted as f64),
        "sent counter {sent:?} vs {accepted} accepted"
    );
    let requests = metric_sum(
        &worker_text,
        "herald_provider_request_duration_seconds_count",
        &[("provider", &provider_label)],
    );
    ensure!(
        requests == Some(2_000.0),
        "request histogram count {requests:?}"
    );
    // Every delivery leased passed through each step once, and its outcome was counted
    // once: one per recipient, and one more for each put off with no request made (its send
    // slot not within its lease, which a loaded machine may miss) and leased again later.
    let outcomes = metric_sum(
        &worker_text,
        "herald_messages_total",
        &[("tenant", &tenant_label)],
    );
    ensure!(
        outcomes.is_some_and(|n| n >= 2_000.0),
        "outcomes counted: {outcomes:?}"
    );
    for step in ["lease", "request", "outcome"] {
        let steps = metric_sum(
            &worker_text,
            "herald_worker_delivery_step_seconds_count",
            &[("step", step)],
        );
        ensure!(
            steps == outcomes,
            "{step} steps: {steps:?}, outcomes {outcomes:?}"
        );
    }
    for write in ["lease", "outcome"] {
        let written = metric_sum(
            &worker_text,
            "herald_worker_write_batch_recipients_sum",
            &[("write", write)],
        );
        ensure!(
            written == outcomes,
            "{write} writes covered {written:?}, outcomes {outcomes:?}"
        );
    }
    let reserved = metric_sum(
        &worker_text,
        "herald_pacing_slots_total",
        &[("result", "reserved")],
    );
    ensure!(
        reserved.is_some_and(|n| n >= 2_000.0),
        "send slots reserved: {reserved:?}"
    );
    ensure!(
        metric_sum(&worker_text, "process_resident_memory_bytes", &[]).is_some_and(|b| b > 0.0),
        "no process metrics"
    );

    // After the end, the leader's next tick reads the backlog as empty.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = env.scrape(&scheduler).await?;
        let last = metric_sum(
            &text,
            "herald_recipients_due",
            &[("provider", &provider_label)],
        );
        if last == Some(0.0) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the backlog stayed at {last:?} (it peaked at {most_due})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let scheduler_text = env.scrape(&scheduler).await?;
    ensure!(
        metric_sum(&scheduler_text, "herald_scheduler_claimed_total", &[]) == Some(2_000.0),
        "claimed: {:?}",
        metric_sum(&scheduler_text, "herald_scheduler_claimed_total", &[])
    );
    ensure!(metric_sum(&scheduler_text, "herald_scheduler_leader", &[]) == Some(1.0));
    // The leader's first tick folds at least the deltas the audience's insert left.
    let folded = metric_sum(
        &scheduler_text,
        "herald_scheduler_counter_deltas_folded_total",
        &[],
    );
    ensure!(
        folded.is_some_and(|n| n >= 1.0),
        "counter deltas folded: {folded:?}"
    );
    for step in ["lease_recovery", "completion"] {
        let rounds = metric_sum(
            &scheduler_text,
            "herald_scheduler_housekeeping_duration_seconds_count",
            &[("step", step)],
        );
        ensure!(
            rounds.is_some_and(|n| n >= 1.0),
            "housekeeping step {step} timed {rounds:?} times"
        );
    }
    // Recorded by the worker, or by the receiver when a receipt came first.
    let receiver_text = env
        .scrape(env.receiver_service().context("the receiver runs")?)
        .await?;
    let first_sends = [&worker_text, &receiver_text]
        .iter()
        .filter_map(|text| {
            metric_sum(
                text,
                "herald_campaign_time_to_first_send_seconds_count",
                &[],
            )
        })
        .reduce(|a, b| a + b);
    ensure!(
        first_sends == Some(1.0),
        "time to first send observed {first_sends:?} times"
    );

    // Every metric the Grafana dashboard queries is one these services serve.
    let mut served: BTreeSet<String> = metric_names(&scheduler_text);
    served.extend(metric_names(&worker_text));
    let receiver_text = env
        .scrape(env.receiver_service().context("receiver")?)
        .await?;
    ensure!(
        metric_sum(&receiver_text, "herald_receipts_total", &[]).is_some_and(|n| n > 0.0),
        "no receipts counted"
    );
    served.extend(metric_names(&receiver_text));
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/herald.json"
    ))?)?;
    let queried = dashboard_metrics(&dashboard);
    ensure!(
        queried.len() >= 10,
        "the dashboard queries only {queried:?}"
    );
    let missing: Vec<&String> = queried.iter().filter(|m| !served.contains(*m)).collect();
    ensure!(
        missing.is_empty(),
        "the dashboard queries metrics nobody serves: {missing:?}"
    );
    Ok(())
}

/// The metric names in every `expr` of a Grafana dashboard, histogram series by their base
/// name.
fn dashboard_metrics(dashboard: &Value) -> BTreeSet<String> {
    fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr", Value::String(expr)) => out.push(expr.clone()),
                        _ => walk(value, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut exprs = Vec::new();
    walk(dashboard, &mut exprs);
    let mut names = BTreeSet::new();
    for expr in exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find(|c: char| c.is_ascii_lowercase()) {
            rest = &rest[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let word = &rest[..end];
            if word.starts_with("herald_") || word.starts_with("process_") {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| word.strip_suffix(s))
                    .unwrap_or(word);
                names.insert(base.to_owned());
            }
            rest = &rest[end..];
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_worker_is_not_ready() -> Result<()> {
    let env = TestEnv::new(&["--latency", "fixed:3000"]).await?;
    let tenant = env.tenant("acme", 1).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let campaign = env
        .campaign(tenant, provider, "slow", &numbers("+1555301", 20), 20)
        .await?;
    let _scheduler = env.scheduler(500, &[])?;
    let mut worker = env.worker(&[("HERALD_WORKER_DRAIN_TIMEOUT_MS", "20000")])?;
    env.wait_readiness(&worker, 200, Duration::from_secs(20))
        .await?;
    env.start(campaign).await?;
    wait_until(Duration::from_secs(20), || async {
        env.simulator_stats()
            .await
            .is_ok_and(|s| s["requests"].as_u64().unwrap_or(0) > 0)
    })
    .await
    .map_err(|_| anyhow::anyhow!("no request reached the provider"))?;
    worker.terminate();
    let (body, _) = env
        .wait_readiness(&worker, 503, Duration::from_secs(2))
        .await?;
    ensure!(body["status"] == "draining", "{body}");
    ensure!(
        worker.wait(Duration::from_millis(500)).await.is_none(),
        "the worker did not drain"
    );
    let exit = worker.wait(Duration::from_secs(20)).await;
    ensure!(
        exit.is_some_and(|s| s.success()),
        "the worker did not finish its drain: {exit:?}"
    );
    Ok(())
}

/// A service whose database lacks this build's latest migration is not ready, and says
/// what to do; once the migrations are applied, it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_is_not_ready_on_a_schema_behind_its_build() -> Result<()> {
    let mut env = TestEnv::new(&[]).await?;
    let latest: i64 = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(&env.pool)
        .await?;
    // As if the migrate step had not run since the previous release (its schema change
    // left in place: the check reads what was applied).
    let forgotten: (i64, String, Vec<u8>, i64) = sqlx::query_as(
        "DELETE FROM _sqlx_migrations WHERE version = $1
         RETURNING version, description, checksum, execution_time",
    )
    .bind(latest)
    .fetch_one(&env.pool)
    .await?;
    env.receiver_answering().await?;
    let receiver = env.receiver_service().expect("the receiver");
    let said = wait_until(Duration::from_secs(10), || async {
        env.readiness(receiver)
            .await
            .is_ok_and(|(status, body)| status == 503 && body.to_string().contains("migrate"))
    })
    .await;
    ensure!(said.is_ok(), "{:?}", env.readiness(receiver).await);
    // What an alert reads (Prometheus scrapes /metrics, not /readyz).
    assert_eq!(ready_gauge(&env).await, Some(0.0));
    // A worker started meanwhile does no work (it would write to a schema behind its
    // build): it does not even join the fleet until the schema is brought up to date.
    let _worker = env.worker(&[])?;
    let workers = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM workers")
            .fetch_one(&env.pool)
            .await
            .unwrap_or(-1)
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        workers().await,
        0,
        "a worker joined on a schema behind its build"
    );
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES ($1, $2, true, $3, $4)",
    )
    .bind(forgotten.0)
    .bind(forgotten.1)
    .bind(forgotten.2)
    .bind(forgotten.3)
    .execute(&env.pool)
    .await?;
    env.wait_readiness(receiver, 200, Duration::from_secs(10))
        .await?;
    assert_eq!(ready_gauge(&env).await, Some(1.0));
    wait_until(Duration::from_secs(10), || async { workers().await == 1 })
        .await
        .map_err(|_| anyhow::anyhow!("the worker did not start work once the schema was"))?;
    Ok(())
}

/// The receiver's `herald_ready` gauge.
async fn ready_gauge(env: &TestEnv) -> Option<f64> {
    let scraped = env.scrape(env.receiver_service()?).await.ok()?;
    metric_sum(&scraped, "herald_ready", &[])
}
