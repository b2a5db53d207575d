//! What operators rely on: metrics that agree with what was sent, readiness that follows the
//! broker, the drain and the leader, the dashboard's metrics, and TLS to both backends.

use anyhow::{Context, Result, ensure};
use herald_tests::services::{PrivatePostgres, RabbitNode};
use herald_tests::tls::Certificates;
use herald_tests::{Backends, Service, TestEnv, metric_names, metric_sum, numbers, wait_until};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await?
}

/// Waits until `service`'s readiness answers `status` (HTTP); returns the body and when.
async fn wait_ready(
    env: &TestEnv,
    service: &Service,
    status: u16,
    timeout: Duration,
) -> Result<(Value, Instant)> {
    let deadline = Instant::now() + timeout;
    loop {
        let answer = env.readiness(service).await;
        if let Ok((got, body)) = &answer
            && *got == status
        {
            return Ok((body.clone(), Instant::now()));
        }
        ensure!(
            Instant::now() < deadline,
            "{} did not answer {status} on /readyz within {timeout:?} (last: {answer:?}); log:\n{}",
            service.name,
            service.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

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
    let worker = env.worker(&[("HERALD_WORKER_PREFETCH", "50")])?;
    wait_ready(&env, &scheduler, 200, Duration::from_secs(20)).await?;
    wait_ready(&env, &worker, 200, Duration::from_secs(20)).await?;
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
    let first_sends = metric_sum(
        &worker_text,
        "herald_campaign_time_to_first_send_seconds_count",
        &[],
    );
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
async fn readiness_follows_the_broker_and_says_standby() -> Result<()> {
    let node = blocking(|| RabbitNode::start("ready")).await?;
    let backends = Backends {
        postgres: None,
        rabbitmq: Some(vec![node.amqp_url()]),
    };
    let env = TestEnv::with(backends, &[]).await?;
    // A provider, so the worker consumes a lane.
    env.create_provider(&env.provider()).await?;
    let scheduler = env.scheduler(500, &[])?;
    let worker = env.worker(&[])?;
    let (body, _) = wait_ready(&env, &scheduler, 200, Duration::from_secs(30)).await?;
    ensure!(body["status"] == "ready", "the leader says {body}");
    wait_ready(&env, &worker, 200, Duration::from_secs(30)).await?;
    let standby = env.scheduler(500, &[])?;
    let (body, _) = wait_ready(&env, &standby, 200, Duration::from_secs(30)).await?;
    ensure!(
        body["status"] == "standby",
        "the second scheduler says {body}"
    );

    let stopped = Instant::now();
    tokio::task::block_in_place(|| node.stop())?;
    for service in [&scheduler, &worker, &standby] {
        let (body, when) = wait_ready(&env, service, 503, Duration::from_secs(10)).await?;
        let after = when - stopped;
        ensure!(
            after <= Duration::from_secs(5),
            "{} still ready {after:?} after the broker stopped",
            service.name
        );
        ensure!(body["checks"]["broker"].is_string(), "{body}");
    }
    tokio::task::block_in_place(|| node.start_again())?;
    for service in [&scheduler, &worker, &standby] {
        wait_ready(&env, service, 200, Duration::from_secs(30)).await?;
    }
    Ok(())
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
    wait_ready(&env, &worker, 200, Duration::from_secs(20)).await?;
    env.start(campaign).await?;
    wait_until(Duration::from_secs(20), || async {
        env.simulator_stats()
            .await
            .is_ok_and(|s| s["requests"].as_u64().unwrap_or(0) > 0)
    })
    .await
    .map_err(|_| anyhow::anyhow!("no request reached the provider"))?;
    worker.terminate();
    let (body, _) = wait_ready(&env, &worker, 503, Duration::from_secs(2)).await?;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_is_verified_against_the_ca_file() -> Result<()> {
    let certs = Arc::new(blocking(Certificates::generate).await?);
    let ca = certs.ca_file();
    let pg = blocking({
        let certs = certs.clone();
        move || PrivatePostgres::start_tls(&certs)
    })
    .await?;
    let migrate = |url: String, ca: Option<std::path::PathBuf>| {
        let mut command = std::process::Command::new(herald_tests::binary("herald-scheduler"));
        command
            .arg("migrate")
            .env("HERALD_DATABASE_URL", url)
            .env("HERALD_OPS_LISTEN", "off");
        if let Some(ca) = ca {
            command.env("HERALD_TLS_CA_FILE", ca);
        }
        command.output()
    };
    let verified = format!("{}?sslmode=verify-full", pg.url("postgres"));
    let ok = migrate(verified.clone(), Some(ca.clone()))?;
    ensure!(
        ok.status.success(),
        "verify-full with the right CA failed: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let wrong = migrate(verified, Some(certs.other_ca_file()))?;
    ensure!(
        !wrong.status.success(),
        "a server signed by another CA was accepted"
    );
    let stderr = String::from_utf8_lossy(&wrong.stderr).to_lowercase();
    ensure!(
        stderr.contains("certificate") || stderr.contains("issuer"),
        "{stderr}"
    );
    // The server takes TLS only: without it, nothing connects.
    let plain = migrate(format!("{}?sslmode=disable", pg.url("postgres")), None)?;
    ensure!(!plain.status.success(), "a plain connection was accepted");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_over_tls_is_verified_against_the_ca_file() -> Result<()> {
    let certs = Arc::new(blocking(Certificates::generate).await?);
    let node = blocking({
        let certs = certs.clone();
        move || RabbitNode::start_tls("tls", &certs)
    })
    .await?;
    let amqps = node.amqps_url().context("no TLS listener")?;
    let backends = Backends {
        postgres: None,
        rabbitmq: Some(vec![node.amqp_url()]),
    };
    let mut env = TestEnv::with(backends, &[]).await?;
    env.create_provider(&env.provider()).await?;
    env.route(None, Some(amqps));
    let ca = certs.ca_file().to_string_lossy().into_owned();
    let other = certs.other_ca_file().to_string_lossy().into_owned();
    let trusted = env.worker(&[("HERALD_TLS_CA_FILE", &ca)])?;
    let distrustful = env.worker(&[("HERALD_TLS_CA_FILE", &other)])?;
    wait_ready(&env, &trusted, 200, Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, body) = env.readiness(&distrustful).await?;
    ensure!(
        status == 503,
        "a broker signed by another CA was trusted: {body}"
    );
    let why = body["checks"]["broker"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    ensure!(
        why.contains("certificate") || why.contains("issuer"),
        "{body}"
    );
    Ok(())
}
