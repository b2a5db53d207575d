//! Status webhooks: a tenant's endpoint hears each change of its transactional messages,
//! signed with its secret, posted again after a failure, and only its own.

use herald_shared::signature;
use herald_shared::status_event::StatusEvent;
use herald_tests::status_sink::StatusSink;
use herald_tests::{Result, TestEnv, refused_fields};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

/// Sends one message from the tenant of `key`; its id.
async fn send(
    admin: &herald_tests::Admin,
    key: &str,
    provider: uuid::Uuid,
    to: &str,
) -> Result<String> {
    let message = admin
        .ok(
            key,
            Method::POST,
            "/messages",
            Some(json!({"to": to, "channel": "sms", "provider_id": provider, "text": "Your code is 4821"})),
        )
        .await?;
    Ok(message["id"].as_str().unwrap_or_default().to_owned())
}

/// Waits until `sink` was answered 200 for an event of message `id` saying `state` and
/// `delivery`; every event received so far.
async fn wait_for(
    sink: &StatusSink,
    id: &str,
    state: &str,
    delivery: Option<&str>,
) -> Result<Vec<StatusEvent>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events: Vec<StatusEvent> = sink
            .posts()
            .iter()
            .filter(|p| p.answered == 200)
            .map(|p| p.event())
            .collect::<Result<_>>()?;
        if events.iter().any(|e| {
            e.message.id.to_string() == id
                && e.message.state == state
                && e.message.delivery_status.as_deref() == delivery
        }) {
            return Ok(events);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no {state}/{delivery:?} event for {id}: {:?}",
            sink.posts()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_endpoint_hears_each_change_of_its_own_messages_signed_and_again_after_a_failure()
-> Result<()> {
    let mut env = TestEnv::new(&["--latency", "uniform:5-20"]).await?;
    env.receiver().await?;
    let provider = env.create_provider(&env.provider()).await?;
    // Secrets sealed at rest, opened by the worker that signs with them.
    let sealing = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32]);
    let sealing = [("HERALD_CREDENTIALS_KEY", sealing.as_str())];
    let admin = env.admin_with(&sealing).await?;
    let (acme, key) = admin.tenant_with_key("acme").await?;
    let (globex, other_key) = admin.tenant_with_key("globex").await?;
    // The first post is answered 500: posted again.
    let sink = StatusSink::start(1).await?;
    let other_sink = StatusSink::start(0).await?;

    // Refused, each naming the field: an address inside, not a URL, credentials in it.
    for url in [
        "http://169.254.169.254/latest",
        "not a url",
        "https://user:pw@8.8.8.8/hooks",
        "",
    ] {
        let (status, body) = admin
            .call(
                &key,
                Method::PUT,
                &format!("/tenants/{acme}/webhook"),
                Some(json!({ "url": url })),
            )
            .await?;
        assert_eq!(
            (status, refused_fields(&body)),
            (422, vec!["url"]),
            "{url}: {body}"
        );
    }
    // Another tenant's webhook is out of sight.
    let (status, _) = admin
        .call(
            &other_key,
            Method::PUT,
            &format!("/tenants/{acme}/webhook"),
            Some(json!({ "url": other_sink.url })),
        )
        .await?;
    assert_eq!(status, 404);

    let set = admin
        .ok(
            &key,
            Method::PUT,
            &format!("/tenants/{acme}/webhook"),
            Some(json!({ "url": sink.url })),
        )
        .await?;
    let secret = set["secret"].as_str().unwrap_or_default().to_owned();
    assert!(secret.starts_with("whsec_") && secret.len() > 40, "{set}");
    let shown = admin
        .ok(&key, Method::GET, &format!("/tenants/{acme}/webhook"), None)
        .await?;
    assert_eq!(
        (&shown["url"], &shown["waiting"]),
        (&json!(sink.url), &json!(0))
    );
    assert!(shown.get("secret").is_none(), "{shown}");
    // Stored sealed: the secret is nowhere in the table.
    let stored: String =
        sqlx::query_scalar("SELECT secret::text FROM tenant_webhooks WHERE tenant_id = $1::uuid")
            .bind(&acme)
            .fetch_one(&env.pool)
            .await?;
    assert!(!stored.contains(&secret[6..]), "{stored}");
    // The other tenant's endpoint is its own; its messages go there only.
    admin
        .ok(
            &other_key,
            Method::PUT,
            &format!("/tenants/{globex}/webhook"),
            Some(json!({ "url": other_sink.url })),
        )
        .await?;

    let _scheduler = env.scheduler(250, &[])?;
    let worker = env.worker(&sealing)?;
    let id = send(&admin, &key, provider, "+15551230001").await?;
    let other_id = send(&admin, &other_key, provider, "+15551230002").await?;

    // Sent, then delivered (the provider's receipt): both told, each signed with the secret
    // at a current time.
    let events = wait_for(&sink, &id, "sent", Some("delivered")).await?;
    let sent = events
        .iter()
        .find(|e| e.message.state == "sent")
        .ok_or_else(|| anyhow::anyhow!("no event of the send: {events:?}"))?;
    assert_eq!(sent.kind, "message.status");
    assert_eq!(sent.message.tenant_id.to_string(), acme);
    assert!(sent.message.provider_message_id.is_some(), "{sent:?}");
    let now = chrono::Utc::now().timestamp();
    for post in sink.posts() {
        let header = post.signature.clone().unwrap_or_default();
        assert!(
            signature::verify_event(&secret, &post.body, &header, now, 300),
            "{post:?}"
        );
        assert!(!signature::verify_event(
            "whsec_other",
            &post.body,
            &header,
            now,
            300
        ));
    }
    // The post answered 500 comes again (within its first backoff, 1-2 s), the same event.
    let first = sink.posts()[0].clone();
    assert_eq!(first.answered, 500);
    let first = first.event()?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !sink
        .posts()
        .iter()
        .any(|p| p.answered == 200 && p.event().is_ok_and(|e| e == first))
    {
        anyhow::ensure!(Instant::now() < deadline, "{:?}", sink.posts());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Only its own messages: the other tenant's went to the other endpoint.
    assert!(
        events.iter().all(|e| e.message.id.to_string() == id),
        "{events:?}"
    );
    wait_for(&other_sink, &other_id, "sent", Some("delivered")).await?;
    assert!(other_sink.posts().iter().all(|p| {
        p.event()
            .is_ok_and(|e| e.message.id.to_string() == other_id)
    }));
    let metrics = env.scrape(&worker).await?;
    let posted = |outcome| {
        herald_tests::metric_sum(
            &metrics,
            "herald_webhook_posts_total",
            &[("outcome", outcome)],
        )
    };
    assert_eq!(posted("failed"), Some(1.0), "{metrics}");
    assert!(posted("delivered").is_some_and(|n| n >= 2.0), "{metrics}");
    let shown = admin
        .ok(&key, Method::GET, &format!("/tenants/{acme}/webhook"), None)
        .await?;
    assert_eq!(shown["waiting"], 0, "{shown}");

    // The CLI shows it, and refuses a URL inside naming the field (exit 1).
    let cli = |args: &[&str]| {
        let mut all = vec![
            "--url",
            admin.url.as_str(),
            "--key",
            key.as_str(),
            "tenant",
            "webhook",
            acme.as_str(),
        ];
        all.extend_from_slice(args);
        env.run_binary("herald", &all, &[])
    };
    let shown = cli(&[])?;
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.status.success() && text.contains(&sink.url) && text.contains("0 events"),
        "{shown:?}"
    );
    let refused = cli(&["--set", "http://169.254.169.254/"])?;
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("url"),
        "{refused:?}"
    );

    // Removed: the next message is sent and nobody is told.
    let (status, _) = admin
        .call(
            &key,
            Method::DELETE,
            &format!("/tenants/{acme}/webhook"),
            None,
        )
        .await?;
    assert_eq!(status, 204);
    let none = admin
        .ok(&key, Method::GET, &format!("/tenants/{acme}/webhook"), None)
        .await?;
    assert_eq!(
        (&none["url"], &none["waiting"]),
        (&json!(null), &json!(0)),
        "{none}"
    );
    let before = sink.posts().len();
    let later = send(&admin, &key, provider, "+15551230003").await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, message) = admin
            .call(&key, Method::GET, &format!("/messages/{later}"), None)
            .await?;
        if message["delivery_status"] == "delivered" {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "{message}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink.posts().len(), before, "{:?}", sink.posts());
    let made: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM message_events e JOIN messages m ON m.id = e.message_id
         WHERE m.id = $1::uuid",
    )
    .bind(&later)
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(made, 0);

    // Set again through the CLI: the new secret alone on stdout.
    let set = cli(&["--set", &other_sink.url])?;
    let printed = String::from_utf8_lossy(&set.stdout);
    assert!(
        set.status.success() && printed.trim().starts_with("whsec_"),
        "{set:?}"
    );
    let shown = admin
        .ok(&key, Method::GET, &format!("/tenants/{acme}/webhook"), None)
        .await?;
    assert_eq!(shown["url"], json!(other_sink.url));
    Ok(())
}
