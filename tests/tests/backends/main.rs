//! Tests on RabbitMQ nodes and PostgreSQL clusters of their own (TLS listeners, a broker
//! stopped and started): a binary of its own, because booting those services takes seconds
//! of CPU that would disturb the timing-sensitive integration tests (cargo runs test
//! binaries one after another).

use anyhow::{Context, Result, ensure};
use herald_tests::services::{PrivatePostgres, RabbitNode};
use herald_tests::tls::Certificates;
use herald_tests::{Backends, Service, TestEnv};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A receipt (`delivered`) of message `id` that the generic `provider` signed, posted to the
/// receiver's webhook at `receiver_url`.
async fn post_generic_receipt(
    env: &TestEnv,
    receiver_url: &str,
    provider: uuid::Uuid,
    id: &str,
) -> reqwest::Result<reqwest::Response> {
    let body = serde_json::json!({"id": id, "status": "delivered"}).to_string();
    env.http
        .post(format!("{receiver_url}/webhooks/http/{provider}"))
        .header("content-type", "application/json")
        .header(
            "x-herald-signature",
            herald_shared::signature::hub(herald_tests::SIMULATOR_WEBHOOK_SECRET, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await?
}

/// Each of `services` answers not ready, naming the failing `check`, within 5 s of `stopped`.
async fn not_ready_within_5_s(
    env: &TestEnv,
    services: &[&Service],
    stopped: Instant,
    check: &str,
) -> Result<()> {
    for service in services {
        let (body, when) = env
            .wait_readiness(service, 503, Duration::from_secs(10))
            .await?;
        let after = when - stopped;
        ensure!(
            after <= Duration::from_secs(5),
            "{} still ready {after:?} after the {check} stopped",
            service.name
        );
        ensure!(body["checks"][check].is_string(), "{body}");
    }
    Ok(())
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
    let (body, _) = env
        .wait_readiness(&scheduler, 200, Duration::from_secs(30))
        .await?;
    ensure!(body["status"] == "ready", "the leader says {body}");
    env.wait_readiness(&worker, 200, Duration::from_secs(30))
        .await?;
    let standby = env.scheduler(500, &[])?;
    let (body, _) = env
        .wait_readiness(&standby, 200, Duration::from_secs(30))
        .await?;
    ensure!(
        body["status"] == "standby",
        "the second scheduler says {body}"
    );

    let stopped = Instant::now();
    tokio::task::block_in_place(|| node.stop())?;
    not_ready_within_5_s(&env, &[&scheduler, &worker, &standby], stopped, "broker").await?;
    tokio::task::block_in_place(|| node.start_again())?;
    for service in [&scheduler, &worker, &standby] {
        env.wait_readiness(service, 200, Duration::from_secs(30))
            .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_database_and_receipts_wait_for_it() -> Result<()> {
    let pg = blocking(PrivatePostgres::start).await?;
    let backends = Backends {
        postgres: Some(pg.url("postgres")),
        rabbitmq: None,
    };
    let mut env = TestEnv::with(backends, &[]).await?;
    let receiver_url = env.receiver().await?;
    let provider = env.create_provider(&env.provider()).await?;
    let scheduler = env.scheduler(500, &[])?;
    let worker = env.worker(&[])?;
    let receiver = env.receiver_service().context("the receiver")?;
    for service in [&scheduler, &worker, receiver] {
        env.wait_readiness(service, 200, Duration::from_secs(30))
            .await?;
    }
    // A receipt the provider signed, as the receiver's generic webhook takes it.
    let post_receipt = |id: &'static str| post_generic_receipt(&env, &receiver_url, provider, id);
    ensure!(post_receipt("before").await?.status() == 200);
    let admin = env.admin().await?;
    let list_tenants = || admin.send(&admin.operator_key, reqwest::Method::GET, "/tenants", None);
    ensure!(list_tenants().await?.status() == 200);

    let stopped = Instant::now();
    tokio::task::block_in_place(|| pg.stop("fast"))?;
    not_ready_within_5_s(&env, &[&scheduler, &worker, receiver], stopped, "database").await?;
    // The provider is told to send it again (and the receiver keeps it, below).
    let answer = post_receipt("during").await?;
    ensure!(
        answer.status() == 503,
        "a receipt while PostgreSQL is away: {}",
        answer.status()
    );
    let retry_after = answer.headers().get(reqwest::header::RETRY_AFTER);
    ensure!(
        retry_after.is_some_and(|v| v.to_str().is_ok_and(|s| s.parse::<u32>().is_ok())),
        "a receipt while PostgreSQL is away: Retry-After {retry_after:?}"
    );
    // The admin's API says it is unavailable, not that it failed, within the pool's wait.
    let asked = Instant::now();
    let answer = list_tenants().await?;
    let took = asked.elapsed();
    ensure!(
        answer.status() == 503
            && answer.headers().contains_key(reqwest::header::RETRY_AFTER)
            && took < Duration::from_secs(8),
        "the admin with PostgreSQL stopped: {} after {took:?}; log:\n{}",
        answer.status(),
        admin.log_text()
    );

    tokio::task::block_in_place(|| pg.start_again())?;
    for service in [&scheduler, &worker, receiver] {
        env.wait_readiness(service, 200, Duration::from_secs(30))
            .await?;
    }
    // Kept while the database was away, it is stored once it is back, unasked: a provider
    // that sends a webhook once (Twilio) loses nothing to an outage the receiver outlives.
    let count = |duplicate: bool| {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM receipts WHERE duplicate = $1")
            .bind(duplicate)
            .fetch_one(&env.pool)
    };
    let kept = herald_tests::wait_until(Duration::from_secs(20), || async {
        count(false).await.is_ok_and(|n| n == 2)
    })
    .await;
    ensure!(kept.is_ok(), "{:?} receipts stored", count(false).await);
    // Sent again, as the provider was told: a duplicate, recognised as one.
    ensure!(post_receipt("during").await?.status() == 200);
    ensure!(list_tenants().await?.status() == 200, "the admin after");
    ensure!((count(false).await?, count(true).await?) == (2, 1));
    Ok(())
}

/// A receipt kept while the database was away (a Twilio callback, which is never sent
/// again, answered 503) is stored at a stop, once the database is back within the stop's
/// grace: the receiver used to close its pool and drop it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_kept_while_the_database_is_away_is_stored_at_a_stop() -> Result<()> {
    let pg = blocking(PrivatePostgres::start).await?;
    let backends = Backends {
        postgres: Some(pg.url("postgres")),
        rabbitmq: None,
    };
    let mut env = TestEnv::with(backends, &[]).await?;
    let receiver_url = env.receiver().await?;
    let provider = env.create_provider(&env.provider()).await?;
    let receiver = env.receiver_service().context("the receiver")?;
    env.wait_readiness(receiver, 200, Duration::from_secs(30))
        .await?;
    let post_receipt = |id: &'static str| post_generic_receipt(&env, &receiver_url, provider, id);
    // One before, so that the receiver knows the provider (it cannot read it while the
    // database is away).
    ensure!(post_receipt("before").await?.status() == 200);

    let stopped = Instant::now();
    tokio::task::block_in_place(|| pg.stop("fast"))?;
    not_ready_within_5_s(&env, &[receiver], stopped, "database").await?;
    // The first receipt after the database went away is kept, and tried again.
    let answer = post_receipt("kept").await?;
    ensure!(answer.status() == 503, "{}", answer.status());
    receiver.terminate();
    // Still there seven seconds later (past the 5 s its last write of refusals waits for a
    // connection): waiting for the database, to store what it kept.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let receiver = env.receiver_service_mut().context("the receiver")?;
    ensure!(
        receiver.wait(Duration::ZERO).await.is_none(),
        "the receiver stopped with a receipt unstored"
    );
    tokio::task::block_in_place(|| pg.start_again())?;
    let exited = receiver.wait(Duration::from_secs(30)).await;
    ensure!(
        exited.is_some_and(|status| status.success()),
        "the receiver's stop: {exited:?}"
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts WHERE message_id = 'kept'")
        .fetch_one(&env.pool)
        .await?;
    ensure!(
        stored == 1,
        "the receipt kept was lost at the stop; the receiver's log:\n{}",
        env.receiver_service()
            .map(Service::log_text)
            .unwrap_or_default()
    );
    Ok(())
}

/// Recipients' STOP and START to a tenant's own Twilio number while PostgreSQL is away are
/// kept, answered 503 (Twilio does not send an inbound message again), and recorded in the
/// order they came once it is back: a STOP lost to an outage left the recipient messaged
/// through every other provider, a START lost left it refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_and_starts_while_the_database_is_away_are_recorded_in_order_once_back() -> Result<()>
{
    let pg = blocking(PrivatePostgres::start).await?;
    let backends = Backends {
        postgres: Some(pg.url("postgres")),
        rabbitmq: None,
    };
    let mut env = TestEnv::with(backends, &[]).await?;
    env.receiver().await?;
    let tenant = env.tenant("acme", 1).await?;
    let own = env.tenants_twilio_number(tenant).await?;
    let receiver = env.receiver_service().context("the receiver")?;
    env.wait_readiness(receiver, 200, Duration::from_secs(30))
        .await?;
    let inbound = async |from: &str, body: &str| {
        let params = herald_tests::twilio_inbound(from, body);
        env.post_twilio_form(own, None, herald_tests::TWILIO_TOKEN, &params)
            .await
    };
    // One before, so that the receiver knows the provider (it cannot read it while the
    // database is away).
    ensure!(inbound("+15550000001", "START").await? == 200);

    let stopped = Instant::now();
    tokio::task::block_in_place(|| pg.stop("fast"))?;
    not_ready_within_5_s(&env, &[receiver], stopped, "database").await?;
    // A STOP; a STOP then a START; a START then a STOP: applied in another order, or lost,
    // the list would say otherwise.
    for (from, body) in [
        ("+15550000002", "STOP"),
        ("+15550000003", "STOP"),
        ("+15550000003", "START"),
        ("+15550000004", "START"),
        ("+15550000004", "STOP"),
    ] {
        let status = inbound(from, body).await?;
        ensure!(status == 503, "{body} from {from} while away: {status}");
    }
    tokio::task::block_in_place(|| pg.start_again())?;
    env.wait_readiness(receiver, 200, Duration::from_secs(30))
        .await?;
    let listed = || {
        sqlx::query_scalar::<_, String>(
            "SELECT address FROM suppressions WHERE tenant_id = $1 ORDER BY address",
        )
        .bind(tenant)
        .fetch_all(&env.pool)
    };
    // Kept in more than one batch (the first came alone, before the database was known
    // away): waited for until all are recorded.
    let recorded = herald_tests::wait_until(Duration::from_secs(20), || async {
        listed()
            .await
            .is_ok_and(|list| list == ["+15550000002", "+15550000004"])
    })
    .await;
    ensure!(
        recorded.is_ok(),
        "listed: {:?}; the receiver's log:\n{}",
        listed().await,
        receiver.log_text()
    );
    let said = async || {
        let metrics = env.scrape(receiver).await.unwrap_or_default();
        let said =
            |word| herald_tests::metric_sum(&metrics, "herald_consents_total", &[("said", word)]);
        (said("stop"), said("start"))
    };
    let counted = herald_tests::wait_until(Duration::from_secs(5), || async {
        said().await == (Some(3.0), Some(3.0))
    })
    .await;
    ensure!(counted.is_ok(), "counted {:?}", said().await);
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
    env.wait_readiness(&trusted, 200, Duration::from_secs(30))
        .await?;
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
