//! Status webhooks: a tenant's endpoint hears each change of its transactional messages,
//! signed with its secret, posted again after a failure, and only its own.

use herald_shared::signature;
use herald_shared::status_event::StatusEvent;
use herald_tests::status_sink::StatusSink;
use herald_tests::{Admin, Result, TestEnv, refused_fields, wait_until};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Sends one message from the tenant of `key` (with `extra` fields); its id.
async fn send(
    admin: &Admin,
    key: &str,
    provider: uuid::Uuid,
    to: &str,
    extra: Value,
) -> Result<String> {
    let mut body = json!({"to": to, "channel": "sms", "provider_id": provider,
                          "text": "Your code is 4821"});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let message = admin.ok(key, Method::POST, "/messages", Some(body)).await?;
    Ok(message["id"].as_str().unwrap_or_default().to_owned())
}

/// When an event happened, and which it is: the order events are kept in.
type EventKey = (chrono::DateTime<chrono::Utc>, uuid::Uuid);

/// The events `sink` took (answered 200) of message `id`, each once, in the order they
/// happened (test events, which name no message, left out).
fn taken(sink: &StatusSink, id: &str) -> Result<BTreeMap<EventKey, StatusEvent>> {
    let mut events = BTreeMap::new();
    for post in sink.posts().iter().filter(|p| p.answered == 200) {
        let kind = serde_json::from_slice::<Value>(&post.body)?["type"].clone();
        if kind == "webhook.test" {
            continue;
        }
        let event = post.event()?;
        if event.message.id.to_string() == id {
            events.insert((event.occurred_at, event.id), event);
        }
    }
    Ok(events)
}

/// Waits until `sink` took an event of message `id` saying `state` and `delivery`.
async fn wait_for(
    sink: &StatusSink,
    id: &str,
    state: &str,
    delivery: Option<&str>,
) -> Result<BTreeMap<EventKey, StatusEvent>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = taken(sink, id)?;
        if events
            .values()
            .any(|e| e.message.state == state && e.message.delivery_status.as_deref() == delivery)
        {
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

/// Waits until every event of the tenant's webhook is delivered.
async fn all_posted(admin: &Admin, key: &str, webhook: &str) -> Result<()> {
    let done = wait_until(Duration::from_secs(15), || async {
        admin
            .ok(key, Method::GET, webhook, None)
            .await
            .is_ok_and(|shown| shown["waiting"] == 0)
    })
    .await;
    anyhow::ensure!(done.is_ok(), "events of {webhook} still waiting");
    Ok(())
}

/// Quiet hours around now (UTC): a message that keeps them waits.
fn quiet_now() -> Value {
    let now = chrono::Utc::now();
    let at = |t: chrono::DateTime<chrono::Utc>| t.format("%H:%M").to_string();
    json!({"quiet_hours": {"start": at(now - chrono::TimeDelta::hours(1)),
                           "end": at(now + chrono::TimeDelta::hours(2)), "time_zone": "UTC"}})
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
    let webhook = format!("/tenants/{acme}/webhook");
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
            .call(&key, Method::PUT, &webhook, Some(json!({ "url": url })))
            .await?;
        assert_eq!(
            (status, refused_fields(&body)),
            (422, vec!["url"]),
            "{url}: {body}"
        );
    }
    // A grace for a secret replaced, where none is.
    let (status, body) = admin
        .call(
            &key,
            Method::PUT,
            &webhook,
            Some(json!({ "url": sink.url, "grace_seconds": 60 })),
        )
        .await?;
    assert_eq!(
        (status, refused_fields(&body)),
        (422, vec!["grace_seconds"]),
        "{body}"
    );
    // Another tenant's webhook is out of sight, and a key that may only send cannot set it.
    for method in [Method::PUT, Method::GET, Method::DELETE] {
        let (status, _) = admin
            .call(
                &other_key,
                method.clone(),
                &webhook,
                Some(json!({ "url": other_sink.url })),
            )
            .await?;
        assert_eq!(status, 404, "{method}");
    }
    let send_key = admin
        .ok(
            &key,
            Method::POST,
            &format!("/tenants/{acme}/keys"),
            Some(json!({"name": "otp", "access": "send"})),
        )
        .await?;
    let (status, _) = admin
        .call(
            send_key["key"].as_str().unwrap_or_default(),
            Method::PUT,
            &webhook,
            Some(json!({ "url": sink.url })),
        )
        .await?;
    assert_eq!(status, 403);

    let set = admin
        .ok(
            &key,
            Method::PUT,
            &webhook,
            Some(json!({ "url": sink.url })),
        )
        .await?;
    let secret = set["secret"].as_str().unwrap_or_default().to_owned();
    assert!(secret.starts_with("whsec_") && secret.len() > 40, "{set}");
    let shown = admin.ok(&key, Method::GET, &webhook, None).await?;
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
    // The other tenant's endpoint is its own (set by the operator); its messages go there only.
    admin
        .ok(
            &admin.operator_key,
            Method::PUT,
            &format!("/tenants/{globex}/webhook"),
            Some(json!({ "url": other_sink.url })),
        )
        .await?;

    let _scheduler = env.scheduler(250, &[])?;
    let worker = env.worker(&sealing)?;
    let id = send(&admin, &key, provider, "+15551230001", json!({})).await?;
    let other_id = send(&admin, &other_key, provider, "+15551230002", json!({})).await?;
    // A message held by its quiet hours, withdrawn: its only change is `cancelled`.
    let held = send(&admin, &key, provider, "+15551230004", quiet_now()).await?;
    admin
        .ok(
            &key,
            Method::POST,
            &format!("/messages/{held}/cancel"),
            None,
        )
        .await?;

    // Sent, then delivered (the provider's receipts): each change once, the delivery status
    // only ever further, each signed with the secret at a current time.
    let events = wait_for(&sink, &id, "sent", Some("delivered")).await?;
    let changes: Vec<(String, Option<String>)> = events
        .values()
        .map(|e| (e.message.state.clone(), e.message.delivery_status.clone()))
        .collect();
    let rank = |d: &Option<String>| match d.as_deref() {
        None => 0,
        Some("sent") => 1,
        _ => 2,
    };
    assert!(
        changes
            .windows(2)
            .all(|w| w[0] != w[1] && rank(&w[0].1) <= rank(&w[1].1)),
        "{changes:?}"
    );
    assert!(
        changes.iter().all(|(state, _)| state == "sent"),
        "{changes:?}"
    );
    let first = events.values().next().map(|e| e.message.clone());
    assert!(
        first.is_some_and(|m| m.provider_message_id.is_some()
            && m.tenant_id.to_string() == acme
            && m.last_error.is_none()),
        "{events:?}"
    );
    let cancelled = wait_for(&sink, &held, "cancelled", None).await?;
    assert_eq!(cancelled.len(), 1, "{cancelled:?}");
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
    let refused = sink.posts()[0].clone();
    assert_eq!(refused.answered, 500);
    let refused = refused.event()?;
    let posted_again = wait_until(Duration::from_secs(15), || async {
        sink.posts()
            .iter()
            .any(|p| p.answered == 200 && p.event().is_ok_and(|e| e == refused))
    })
    .await;
    assert!(posted_again.is_ok(), "{:?}", sink.posts());
    // Only its own messages: the other tenant's went to the other endpoint.
    let own = [id.as_str(), held.as_str()];
    assert!(
        sink.posts().iter().all(|p| p
            .event()
            .is_ok_and(|e| own.contains(&e.message.id.to_string().as_str()))),
        "{:?}",
        sink.posts()
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
    assert!(posted("delivered").is_some_and(|n| n >= 3.0), "{metrics}");
    // Everything posted (events of later receipts may still be on their way a moment).
    all_posted(&admin, &key, &webhook).await?;
    let shown = admin.ok(&key, Method::GET, &webhook, None).await?;
    // The endpoint answered again: not failing, nothing held back, nothing given up.
    assert_eq!(
        (&shown["abandoned"], &shown["failing_since"]),
        (&json!(0), &Value::Null),
        "{shown}"
    );
    // The refused post's answer is on record, made printable (the endpoint's NUL and escape
    // would have left the outcome unwritable), and the second post delivered it.
    let (failure, attempts, delivered): (Option<String>, i32, bool) = sqlx::query_as(
        "SELECT last_failure, attempts, delivered_at IS NOT NULL FROM message_events
         WHERE public_id = $1",
    )
    .bind(refused.id)
    .fetch_one(&env.pool)
    .await?;
    let failure = failure.unwrap_or_default();
    assert!(
        failure.starts_with("answered 500")
            && failure.contains("for maintenance")
            && !failure.contains(['\0', '\x1b']),
        "{failure:?}"
    );
    assert_eq!((attempts, delivered), (2, true));

    // A new secret: the one replaced signs beside it for its grace, so an endpoint that has
    // either takes the next event.
    let rotated = admin
        .ok(
            &key,
            Method::PUT,
            &webhook,
            Some(json!({ "url": sink.url, "rotate_secret": true, "grace_seconds": 600 })),
        )
        .await?;
    let new_secret = rotated["secret"].as_str().unwrap_or_default().to_owned();
    assert!(
        new_secret.starts_with("whsec_") && new_secret != secret,
        "{rotated}"
    );
    assert!(rotated["previous_secret_until"].is_string(), "{rotated}");
    let next = send(&admin, &key, provider, "+15551230005", json!({})).await?;
    let events = wait_for(&sink, &next, "sent", Some("delivered")).await?;
    let now = chrono::Utc::now().timestamp();
    for post in sink.posts().iter().filter(|p| {
        p.event().is_ok_and(|e| {
            events.values().any(|x| x.id == e.id) && e.message.id.to_string() == next
        })
    }) {
        let header = post.signature.clone().unwrap_or_default();
        for secret in [&secret, &new_secret] {
            assert!(signature::verify_event(
                secret, &post.body, &header, now, 300
            ));
        }
    }
    // The URL alone changed: the secret is kept, none shown.
    let moved = admin
        .ok(
            &key,
            Method::PUT,
            &webhook,
            Some(json!({ "url": sink.url })),
        )
        .await?;
    assert!(moved.get("secret").is_none(), "{moved}");

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
    all_posted(&admin, &key, &webhook).await?;
    let shown = cli(&[])?;
    let text = String::from_utf8_lossy(&shown.stdout);
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{key}:")))
            .map(|l| l[key.len() + 1..].trim().to_owned())
    };
    assert!(shown.status.success(), "{shown:?}");
    assert_eq!(line("url").as_deref(), Some(sink.url.as_str()), "{text}");
    assert_eq!(line("waiting").as_deref(), Some("0 events"), "{text}");
    assert!(
        line("old secret signs until").is_some_and(|l| l != "-"),
        "{text}"
    );
    let refused = cli(&["--set", "http://169.254.169.254/"])?;
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("url"),
        "{refused:?}"
    );

    // Removed: the next message is sent and nobody is told.
    let (status, _) = admin.call(&key, Method::DELETE, &webhook, None).await?;
    assert_eq!(status, 204);
    let none = admin.ok(&key, Method::GET, &webhook, None).await?;
    assert_eq!(
        (&none["url"], &none["waiting"]),
        (&json!(null), &json!(0)),
        "{none}"
    );
    let before = sink.posts().len();
    let later = send(&admin, &key, provider, "+15551230003", json!({})).await?;
    let delivered = wait_until(Duration::from_secs(30), || async {
        admin
            .call(&key, Method::GET, &format!("/messages/{later}"), None)
            .await
            .is_ok_and(|(_, message)| message["delivery_status"] == "delivered")
    })
    .await;
    assert!(delivered.is_ok(), "message {later} never delivered");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink.posts().len(), before, "{:?}", sink.posts());
    let made: i64 =
        sqlx::query_scalar("SELECT count(*) FROM message_events WHERE message_id = $1::uuid")
            .bind(&later)
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(made, 0);

    // An event of a message whose transaction committed after the removal's cleanup (the
    // trigger read the webhook before): never posted, to the old URL or a new one, and
    // dropped by the housekeeping.
    let raced: i64 = sqlx::query_scalar(
        "INSERT INTO message_events (tenant_id, message_id, state, occurred_at)
         VALUES ($1::uuid, $2::uuid, 'sent', now() - interval '1 second') RETURNING id",
    )
    .bind(&acme)
    .bind(&later)
    .fetch_one(&env.pool)
    .await?;
    let posted_before = other_sink.posts().len();

    // Set again through the CLI: the new secret alone on stdout.
    let set = cli(&["--set", &other_sink.url])?;
    let printed = String::from_utf8_lossy(&set.stdout);
    assert!(
        set.status.success() && printed.trim().starts_with("whsec_"),
        "{set:?}"
    );
    let shown = admin.ok(&key, Method::GET, &webhook, None).await?;
    assert_eq!(shown["url"], json!(other_sink.url));
    // The scheduler keeps house every 30 ticks (7.5 s here).
    let dropped = wait_until(Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM message_events WHERE id = $1")
            .bind(raced)
            .fetch_one(&env.pool)
            .await
            .is_ok_and(|left| left == 0)
    })
    .await;
    assert!(dropped.is_ok(), "the raced event was never dropped");
    assert_eq!(
        other_sink.posts().len(),
        posted_before,
        "{:?}",
        other_sink.posts()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_is_probed_not_flooded_and_its_events_go_at_once_when_mended()
-> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let admin = env.admin().await?;
    let (acme, key) = admin.tenant_with_key("acme").await?;
    let (globex, other_key) = admin.tenant_with_key("globex").await?;
    let webhook = format!("/tenants/{acme}/webhook");
    // Down for as long as the test runs: every post answered 500.
    let down = StatusSink::start(usize::MAX).await?;
    let other_sink = StatusSink::start(0).await?;
    admin
        .ok(
            &key,
            Method::PUT,
            &webhook,
            Some(json!({ "url": down.url })),
        )
        .await?;
    admin
        .ok(
            &other_key,
            Method::PUT,
            &format!("/tenants/{globex}/webhook"),
            Some(json!({ "url": other_sink.url })),
        )
        .await?;
    let _scheduler = env.scheduler(250, &[])?;
    let worker = env.worker(&[])?;

    let batch = |to: &str, n: usize| {
        let messages: Vec<Value> = (0..n)
            .map(|i| {
                json!({"to": format!("{to}{i:02}"), "channel": "sms",
                            "provider_id": provider, "text": "Your code is 4821"})
            })
            .collect();
        json!({ "messages": messages })
    };
    admin
        .ok(
            &key,
            Method::POST,
            "/messages/batch",
            Some(batch("+155512300", 30)),
        )
        .await?;
    // Every message sent, each with its event waiting, and the endpoint known to be failing.
    let failing = wait_until(Duration::from_secs(30), || async {
        admin
            .ok(&key, Method::GET, &webhook, None)
            .await
            .is_ok_and(|shown| shown["waiting"] == 30 && shown["failing_since"].is_string())
    })
    .await;
    let shown = admin.ok(&key, Method::GET, &webhook, None).await?;
    assert!(failing.is_ok(), "{shown}");
    assert!(
        shown["resume_at"].is_string()
            && shown["last_failure"]
                .as_str()
                .is_some_and(|f| f.starts_with("answered 500")),
        "{shown}"
    );
    // Another tenant's events go meanwhile, each once.
    admin
        .ok(
            &other_key,
            Method::POST,
            "/messages/batch",
            Some(batch("+155512310", 5)),
        )
        .await?;
    let heard = wait_until(Duration::from_secs(15), || async {
        other_sink.posts().len() >= 5
    })
    .await;
    assert!(heard.is_ok(), "{:?}", other_sink.posts());
    let ids = other_sink.event_ids();
    assert_eq!(ids.len(), 5, "{:?}", other_sink.posts());

    // Probed, not flooded: a first round of at most 8 posts, then one at each `resume_at`
    // (after 1 s, 2 s, 4 s… of failing), where each of the 30 events would have been posted
    // again within 1–2 s of its own failure.
    let shown = admin.ok(&key, Method::GET, &webhook, None).await?;
    let resume_at = shown["resume_at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc));
    let Some(resume_at) = resume_at else {
        anyhow::bail!("no resume_at: {shown}");
    };
    let before = down.posts().len();
    // Its probe by then (and the worker's next look, within a second).
    let wait = (resume_at - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    let probed = wait_until(wait + Duration::from_secs(3), || async {
        down.posts().len() > before
    })
    .await;
    assert!(probed.is_ok(), "no probe by {resume_at}: {shown}");
    assert!(
        down.posts().len() <= 8 + 8,
        "{} posts to a failing endpoint",
        down.posts().len()
    );

    // Events a day old still waiting are given up, posted or not (the worker looks every
    // 10 s). Made older, with the webhook (events older than it are a removed one's).
    for statement in [
        "UPDATE tenant_webhooks SET created_at = now() - interval '4 days'
         WHERE tenant_id = $1::uuid",
        "UPDATE message_events SET occurred_at = now() - interval '25 hours'
         WHERE id IN (SELECT id FROM message_events WHERE tenant_id = $1::uuid
                      ORDER BY id LIMIT 10)",
    ] {
        sqlx::query(statement)
            .bind(&acme)
            .execute(&env.pool)
            .await?;
    }
    let given_up = wait_until(Duration::from_secs(30), || async {
        admin
            .ok(&key, Method::GET, &webhook, None)
            .await
            .is_ok_and(|shown| shown["abandoned"] == 10 && shown["waiting"] == 20)
    })
    .await;
    assert!(
        given_up.is_ok(),
        "{}",
        admin.ok(&key, Method::GET, &webhook, None).await?
    );
    let metrics = env.scrape(&worker).await?;
    assert_eq!(
        herald_tests::metric_sum(
            &metrics,
            "herald_webhook_posts_total",
            &[("outcome", "abandoned")]
        ),
        Some(10.0),
        "{metrics}"
    );

    // The events given up recovered (through the CLI) while the endpoint still fails: those
    // since the time given only (two made older stay given up), waiting again and, aged from
    // their recovery, not given up again by the worker's next looks.
    sqlx::query(
        "UPDATE message_events SET occurred_at = now() - interval '3 days'
         WHERE id IN (SELECT id FROM message_events WHERE tenant_id = $1::uuid
                        AND abandoned_at IS NOT NULL ORDER BY id LIMIT 2)",
    )
    .bind(&acme)
    .execute(&env.pool)
    .await?;
    let since = (chrono::Utc::now() - chrono::TimeDelta::days(2)).to_rfc3339();
    let recovered = env.run_binary(
        "herald",
        &[
            "--url",
            admin.url.as_str(),
            "--key",
            key.as_str(),
            "tenant",
            "webhook",
            acme.as_str(),
            "--recover-since",
            since.as_str(),
        ],
        &[],
    )?;
    let said = String::from_utf8_lossy(&recovered.stdout);
    assert!(
        recovered.status.success() && said.starts_with("8 events given up are posted again"),
        "{recovered:?}"
    );
    tokio::time::sleep(Duration::from_secs(12)).await;
    let shown = admin.ok(&key, Method::GET, &webhook, None).await?;
    assert_eq!(
        (&shown["waiting"], &shown["abandoned"]),
        (&json!(28), &json!(2)),
        "{shown}"
    );
    // Refused: a time to come (naming the field), another tenant's, a tenant without one.
    let recover = format!("{webhook}/recover");
    let (status, body) = admin
        .call(
            &key,
            Method::POST,
            &recover,
            Some(json!({"since": chrono::Utc::now() + chrono::TimeDelta::hours(1)})),
        )
        .await?;
    assert_eq!(
        (status, refused_fields(&body)),
        (422, vec!["since"]),
        "{body}"
    );
    let (status, _) = admin
        .call(
            &other_key,
            Method::POST,
            &recover,
            Some(json!({ "since": since })),
        )
        .await?;
    assert_eq!(status, 404);
    let (initech, initech_key) = admin.tenant_with_key("initech").await?;
    let (status, _) = admin
        .call(
            &initech_key,
            Method::POST,
            &format!("/tenants/{initech}/webhook/recover"),
            Some(json!({ "since": since })),
        )
        .await?;
    assert_eq!(status, 409);

    // Mended (a new URL): no longer failing, and the 28 events waiting go at once, not when
    // the failing endpoint's next probe would have been.
    let mended = StatusSink::start(0).await?;
    let moved = admin
        .ok(
            &key,
            Method::PUT,
            &webhook,
            Some(json!({ "url": mended.url })),
        )
        .await?;
    assert_eq!(
        (&moved["failing_since"], &moved["resume_at"]),
        (&Value::Null, &Value::Null),
        "{moved}"
    );
    all_posted(&admin, &key, &webhook).await?;
    let delivered = mended.event_ids();
    assert_eq!(delivered.len(), 28, "{:?}", mended.posts());
    let shown = admin.ok(&key, Method::GET, &webhook, None).await?;
    assert_eq!(
        (&shown["failing_since"], &shown["abandoned"]),
        (&Value::Null, &json!(2)),
        "{shown}"
    );
    // Nothing more to recover since then; the older two still can be, and then go too.
    let again = admin
        .ok(
            &key,
            Method::POST,
            &recover,
            Some(json!({ "since": since })),
        )
        .await?;
    assert_eq!(
        (&again["recovered"], &again["more"]),
        (&json!(0), &json!(false)),
        "{again}"
    );
    let older = (chrono::Utc::now() - chrono::TimeDelta::days(4)).to_rfc3339();
    let again = admin
        .ok(
            &key,
            Method::POST,
            &recover,
            Some(json!({ "since": older })),
        )
        .await?;
    assert_eq!(again["recovered"], 2, "{again}");
    let all = wait_until(Duration::from_secs(15), || async {
        mended.event_ids().len() == 30
    })
    .await;
    assert!(all.is_ok(), "{:?}", mended.posts());
    Ok(())
}

/// A tenant checks its endpoint before any message of its changes: `POST …/webhook/test`
/// queues a `webhook.test` event, posted and signed as status events are (retried after a
/// failure, as they are); a tenant without a webhook is told to set one, and another
/// tenant's webhook is out of sight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_event_is_posted_signed_as_status_events_are() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let admin = env.admin().await?;
    let (acme, key) = admin.tenant_with_key("acme").await?;
    let (_, other_key) = admin.tenant_with_key("globex").await?;
    let test = format!("/tenants/{acme}/webhook/test");
    let (status, body) = admin.call(&key, Method::POST, &test, None).await?;
    assert_eq!(status, 409, "no webhook yet: {body}");
    // The first post is answered 500: posted again.
    let sink = StatusSink::start(1).await?;
    let set = admin
        .ok(
            &key,
            Method::PUT,
            &format!("/tenants/{acme}/webhook"),
            Some(json!({ "url": sink.url })),
        )
        .await?;
    let secret = set["secret"].as_str().unwrap_or_default().to_owned();
    let (status, _) = admin.call(&other_key, Method::POST, &test, None).await?;
    assert_eq!(status, 404, "another tenant's webhook");

    let _worker = env.worker(&[])?;
    let (status, queued) = admin.call(&key, Method::POST, &test, None).await?;
    assert_eq!(status, 202, "{queued}");
    assert_eq!(queued["type"], "webhook.test");
    let delivered = wait_until(Duration::from_secs(20), || async {
        sink.posts().iter().any(|p| p.answered == 200)
    })
    .await;
    let posts = sink.posts();
    assert!(delivered.is_ok(), "{posts:?}");
    assert!(posts.len() >= 2 && posts[0].answered == 500, "{posts:?}");
    let now = chrono::Utc::now().timestamp();
    for post in &posts {
        let event: Value = serde_json::from_slice(&post.body)?;
        assert_eq!(
            (&event["id"], &event["type"], &event["tenant_id"]),
            (&queued["id"], &json!("webhook.test"), &json!(acme)),
            "{event}"
        );
        assert!(event.get("message").is_none(), "{event}");
        let header = post.signature.clone().unwrap_or_default();
        assert!(
            signature::verify_event(&secret, &post.body, &header, now, 300),
            "{post:?}"
        );
    }
    all_posted(&admin, &key, &format!("/tenants/{acme}/webhook")).await?;

    // One each 10 s: asked again at once, 429 with the seconds left, nothing queued.
    let again = admin.send(&key, Method::POST, &test, None).await?;
    let retry_after = again
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.parse::<u32>().ok());
    assert_eq!(again.status(), 429);
    assert!(
        retry_after.is_some_and(|s| (1..=10).contains(&s)),
        "{retry_after:?}"
    );
    // Through the CLI, once the interval is over (made so).
    sqlx::query("UPDATE tenant_webhooks SET tested_at = now() - interval '1 minute'")
        .execute(&env.pool)
        .await?;
    let queued = env.run_binary(
        "herald",
        &[
            "--url",
            &admin.url,
            "--key",
            key.as_str(),
            "tenant",
            "webhook",
            acme.as_str(),
            "--test",
        ],
        &[],
    )?;
    let said = String::from_utf8_lossy(&queued.stdout);
    assert!(
        queued.status.success() && said.starts_with("test event "),
        "{queued:?}"
    );
    let tests: i64 =
        sqlx::query_scalar("SELECT count(*) FROM message_events WHERE kind = 'webhook.test'")
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(tests, 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_webhook_events_are_listed_newest_first_with_how_their_posts_went() -> Result<()>
{
    let env = TestEnv::new(&[]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let admin = env.admin().await?;
    let (acme, key) = admin.tenant_with_key("acme").await?;
    let (globex, other_key) = admin.tenant_with_key("globex").await?;
    let webhook = format!("/tenants/{acme}/webhook");
    let events = format!("{webhook}/events");
    let list = async |key: &str, query: &str| -> Result<Vec<Value>> {
        let page = admin
            .ok(key, Method::GET, &format!("{events}{query}"), None)
            .await?;
        Ok(page["items"].as_array().cloned().unwrap_or_default())
    };
    let ids = |items: &[Value]| -> Vec<String> {
        items
            .iter()
            .map(|e| e["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let (status, body) = admin.call(&key, Method::GET, &events, None).await?;
    assert_eq!((status, body["items"].clone()), (200, json!([])), "{body}");

    // The first post is answered 500, so the first event (a test event) is posted twice.
    let sink = StatusSink::start(1).await?;
    let other_sink = StatusSink::start(0).await?;
    for (tenant, key, sink) in [(&acme, &key, &sink), (&globex, &other_key, &other_sink)] {
        admin
            .ok(
                key,
                Method::PUT,
                &format!("/tenants/{tenant}/webhook"),
                Some(json!({ "url": sink.url })),
            )
            .await?;
    }
    let _scheduler = env.scheduler(250, &[])?;
    let worker = env.worker(&[])?;
    let test = format!("{webhook}/test");
    let first_test = admin.ok(&key, Method::POST, &test, None).await?;
    all_posted(&admin, &key, &webhook).await?;
    let message = send(&admin, &key, provider, "+15551230001", json!({})).await?;
    send(&admin, &other_key, provider, "+15551230002", json!({})).await?;
    wait_for(&sink, &message, "sent", None).await?;
    all_posted(&admin, &key, &webhook).await?;
    // One left waiting: no worker to post it.
    drop(worker);
    sqlx::query("UPDATE tenant_webhooks SET tested_at = NULL")
        .execute(&env.pool)
        .await?;
    let last_test = admin.ok(&key, Method::POST, &test, None).await?;

    let all = list(&key, "").await?;
    assert_eq!(all.len(), 3, "{all:#?}");
    let (waiting, sent, tested) = (&all[0], &all[1], &all[2]);
    assert_eq!(
        (&waiting["id"], &waiting["type"], &waiting["delivery"]),
        (&last_test["id"], &json!("webhook.test"), &json!("waiting")),
        "newest first: {all:#?}"
    );
    assert!(
        waiting["attempts"] == 0
            && waiting["message"].is_null()
            && waiting["next_attempt_at"].is_string()
            && waiting["delivered_at"].is_null(),
        "{waiting}"
    );
    assert_eq!(
        (&sent["type"], &sent["delivery"], &sent["attempts"]),
        (&json!("message.status"), &json!("delivered"), &json!(1)),
        "{sent}"
    );
    assert_eq!(
        (&sent["message"]["id"], &sent["message"]["state"]),
        (&json!(message), &json!("sent")),
        "{sent}"
    );
    assert!(
        sent["delivered_at"].is_string() && sent["next_attempt_at"].is_null(),
        "{sent}"
    );
    // The id the list shows is the one the posts carried.
    let posted: Vec<String> = sink
        .posts()
        .iter()
        .filter_map(|p| Some(p.event().ok()?.id.to_string()))
        .collect();
    assert!(
        posted.contains(&sent["id"].as_str().unwrap_or_default().to_owned()),
        "{posted:?}"
    );
    assert_eq!(
        (&tested["id"], &tested["delivery"], &tested["attempts"]),
        (&first_test["id"], &json!("delivered"), &json!(2)),
        "{tested}"
    );
    assert!(
        tested["last_failure"]
            .as_str()
            .is_some_and(|f| f.contains("500")),
        "the failure before it went: {tested}"
    );

    // Filtered, each filter alone and together.
    assert_eq!(ids(&list(&key, "?delivery=waiting").await?), ids(&all[..1]));
    assert_eq!(
        ids(&list(&key, "?delivery=delivered").await?),
        ids(&all[1..])
    );
    assert_eq!(
        ids(&list(&key, "?type=webhook.test").await?),
        vec![ids(&all)[0].clone(), ids(&all)[2].clone()]
    );
    assert_eq!(
        ids(&list(&key, "?type=webhook.test&delivery=delivered").await?),
        ids(&all[2..])
    );
    // Given up (as the housekeeping does a day on): listed as such.
    sqlx::query("UPDATE message_events SET abandoned_at = now() WHERE public_id = $1")
        .bind(uuid::Uuid::parse_str(
            last_test["id"].as_str().unwrap_or_default(),
        )?)
        .execute(&env.pool)
        .await?;
    let abandoned = list(&key, "?delivery=abandoned").await?;
    assert_eq!(ids(&abandoned), ids(&all[..1]));
    assert!(
        abandoned[0]["abandoned_at"].is_string() && abandoned[0]["next_attempt_at"].is_null(),
        "{abandoned:#?}"
    );
    assert!(list(&key, "?delivery=waiting").await?.is_empty());
    // The message's event given up too, then recovered: waiting again, its posts and
    // failures counted from the recovery; while the endpoint fails, not posted before its
    // next probe.
    sqlx::query(
        "UPDATE message_events SET delivered_at = NULL, abandoned_at = now(),
                last_failure = 'answered 500', failed_at = now()
         WHERE public_id = $1",
    )
    .bind(uuid::Uuid::parse_str(
        sent["id"].as_str().unwrap_or_default(),
    )?)
    .execute(&env.pool)
    .await?;
    admin
        .ok(
            &key,
            Method::POST,
            &format!("{webhook}/recover"),
            Some(json!({"since": "2000-01-01T00:00:00Z"})),
        )
        .await?;
    let probe_at = chrono::Utc::now() + chrono::TimeDelta::hours(1);
    sqlx::query(
        "UPDATE tenant_webhooks SET failing_since = now(), resume_at = $2 WHERE tenant_id = $1",
    )
    .bind(uuid::Uuid::parse_str(&acme)?)
    .bind(probe_at)
    .execute(&env.pool)
    .await?;
    let recovered = list(&key, "?delivery=waiting").await?;
    assert_eq!(ids(&recovered), ids(&all[1..2]), "{recovered:#?}");
    let next: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(recovered[0]["next_attempt_at"].clone())?;
    assert!(
        recovered[0]["attempts"] == 0
            && recovered[0]["last_failure"].is_null()
            && recovered[0]["recovered_at"].is_string()
            && (next - probe_at).num_milliseconds().abs() < 1,
        "{recovered:#?}"
    );

    // A page at a time: each event once, in the same order; also when they happened at the
    // same time (then by id, descending).
    let walk = async || -> Result<Vec<String>> {
        let mut walked = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let query = match &cursor {
                Some(c) => format!("?limit=1&cursor={c}"),
                None => "?limit=1".to_owned(),
            };
            let page = admin
                .ok(&key, Method::GET, &format!("{events}{query}"), None)
                .await?;
            walked.extend(ids(page["items"].as_array().map_or(&[][..], |v| v)));
            cursor = page["next_cursor"].as_str().map(str::to_owned);
            if cursor.is_none() || walked.len() > 3 {
                return Ok(walked);
            }
        }
    };
    assert_eq!(walk().await?, ids(&all));
    sqlx::query("UPDATE message_events SET occurred_at = now() WHERE tenant_id = $1")
        .bind(uuid::Uuid::parse_str(&acme)?)
        .execute(&env.pool)
        .await?;
    let mut by_id = ids(&all);
    by_id.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(ids(&list(&key, "").await?), by_id);
    assert_eq!(walk().await?, by_id);

    // Only its own: the other tenant's key sees none of it, the operator's all of it; the
    // other tenant's list holds only its own message's event.
    let (status, _) = admin.call(&other_key, Method::GET, &events, None).await?;
    assert_eq!(status, 404);
    assert_eq!(ids(&list(&admin.operator_key, "").await?), by_id);
    let theirs = admin
        .ok(
            &other_key,
            Method::GET,
            &format!("/tenants/{globex}/webhook/events"),
            None,
        )
        .await?;
    let theirs = theirs["items"].as_array().cloned().unwrap_or_default();
    assert!(
        theirs.len() == 1 && theirs[0]["message"]["id"] != json!(message),
        "{theirs:#?}"
    );
    // Bad filters and cursors name themselves.
    for (query, field) in [
        ("?delivery=lost", "delivery"),
        ("?type=message.sent", "type"),
        ("?cursor=bm90LWEta2V5", "cursor"),
        // A key of a time no event can have (the year 0).
        (
            "?cursor=WyIwMDAwLTAxLTAxVDAwOjAwOjAwWiIsIjAwMDAwMDAwLTAwMDAtMDAwMC0wMDAwLTAwMDAwMDAwMDAwMCJd",
            "cursor",
        ),
        ("?limit=0", "limit"),
        ("?status=sent", "status"),
    ] {
        let (status, body) = admin
            .call(&key, Method::GET, &format!("{events}{query}"), None)
            .await?;
        assert_eq!(
            (status, refused_fields(&body)),
            (422, vec![field]),
            "{query}: {body}"
        );
    }

    // Through the CLI.
    let out = env.run_binary(
        "herald",
        &[
            "--url",
            &admin.url,
            "--key",
            key.as_str(),
            "tenant",
            "webhook-events",
            acme.as_str(),
            "--type",
            "webhook.test",
            "--delivery",
            "abandoned",
        ],
        &[],
    )?;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let rows: Vec<&str> = said.lines().skip(1).collect();
    assert!(
        rows.len() == 1
            && rows[0].contains(last_test["id"].as_str().unwrap_or("?"))
            && rows[0].contains("abandoned"),
        "{said}"
    );
    Ok(())
}

/// An endpoint that answers `410 Gone` has gone for good: its webhook is disabled, nothing
/// more is posted to it nor written for it, a test event is refused, and setting it again
/// (the same URL) enables it: the event that was waiting then goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_answers_gone_disables_its_webhook_until_it_is_set_again() -> Result<()> {
    let env = TestEnv::new(&["--latency", "fixed:0"]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let admin = env.admin().await?;
    let (acme, key) = admin.tenant_with_key("acme").await?;
    let acme: uuid::Uuid = acme.parse()?;
    let webhook = format!("/tenants/{acme}/webhook");
    // Its first post is answered 410, the others 200.
    let sink = StatusSink::start_answering(1, reqwest::StatusCode::GONE).await?;
    let url = json!({ "url": sink.url });
    admin
        .ok(&key, Method::PUT, &webhook, Some(url.clone()))
        .await?;
    let _scheduler = env.scheduler(200, &[])?;
    let _worker = env.worker(&[])?;

    let first = send(&admin, &key, provider, "+15551230001", json!({})).await?;
    let disabled = wait_until(Duration::from_secs(20), || async {
        admin
            .ok(&key, Method::GET, &webhook, None)
            .await
            .is_ok_and(|w| w["disabled_at"].is_string())
    })
    .await;
    anyhow::ensure!(disabled.is_ok(), "the webhook was never disabled");
    let shown = admin.ok(&key, Method::GET, &webhook, None).await?;
    assert!(
        shown["disabled_reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("answered 410 Gone")),
        "{shown}"
    );
    assert_eq!(shown["waiting"], 1, "the gone post's event waits: {shown}");
    // Gone is no failing: no next post is promised.
    assert_eq!(
        (&shown["failing_since"], &shown["resume_at"]),
        (&Value::Null, &Value::Null),
        "{shown}"
    );
    let events = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM message_events WHERE tenant_id = $1")
            .bind(acme)
            .fetch_one(&env.pool)
            .await
    };
    let written = events().await?;

    // Another message's changes are not written for it, nor posted; a test is refused.
    let second = send(&admin, &key, provider, "+15551230002", json!({})).await?;
    let sent = wait_until(Duration::from_secs(20), || async {
        admin
            .ok(&key, Method::GET, &format!("/messages/{second}"), None)
            .await
            .is_ok_and(|m| m["state"] == "sent")
    })
    .await;
    anyhow::ensure!(sent.is_ok(), "the second message was never sent");
    assert_eq!(events().await?, written);
    let (status, _) = admin
        .call(&key, Method::POST, &format!("{webhook}/test"), None)
        .await?;
    assert_eq!(status, 409);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sink.posts().iter().map(|p| p.answered).collect::<Vec<_>>(),
        [410],
        "nothing more is posted to it"
    );

    // Set again, at the same URL: enabled, and the event that waited goes.
    let set = admin.ok(&key, Method::PUT, &webhook, Some(url)).await?;
    assert_eq!(
        (&set["disabled_at"], &set["disabled_reason"]),
        (&Value::Null, &Value::Null)
    );
    wait_for(&sink, &first, "sent", None).await?;
    assert!(taken(&sink, &second)?.is_empty());
    // And the next message's changes are written and posted again.
    let third = send(&admin, &key, provider, "+15551230003", json!({})).await?;
    wait_for(&sink, &third, "sent", None).await?;
    Ok(())
}
