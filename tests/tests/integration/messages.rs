//! Transactional messages (`/api/v1/messages`): accepted durably, sent through the same
//! pipeline as campaigns, once per idempotency key, all or nothing in a batch, and held back
//! by the tenant's quota with a `Retry-After`.

use herald_tests::{Admin, Result, TestEnv, refused_fields};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

/// A tenant (through the API, with `max_queued_messages`) and its key.
async fn tenant(admin: &Admin, name: &str, quota: u32) -> Result<(String, String)> {
    let op = admin.operator_key.clone();
    let tenant = admin
        .ok(
            &op,
            Method::POST,
            "/tenants",
            Some(json!({"name": name, "max_queued_messages": quota})),
        )
        .await?;
    let id = tenant["id"].as_str().unwrap_or_default().to_owned();
    let key = admin
        .ok(
            &op,
            Method::POST,
            &format!("/tenants/{id}/keys"),
            Some(json!({"name": "tests"})),
        )
        .await?;
    Ok((id, key["key"].as_str().unwrap_or_default().to_owned()))
}

/// `POST /messages` with an optional `Idempotency-Key`: status, `Retry-After`, body.
async fn post(
    admin: &Admin,
    key: &str,
    idempotency: Option<&str>,
    body: Value,
) -> Result<(u16, Option<String>, Value)> {
    let mut request = admin
        .http
        .post(format!("{}/api/v1/messages", admin.url))
        .bearer_auth(key)
        .json(&body);
    if let Some(idempotency) = idempotency {
        request = request.header("Idempotency-Key", idempotency);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((status, retry_after, response.json().await?))
}

/// Waits until message `id` is in `state` (and, if given, has `delivery`); returns it.
async fn wait_message(
    admin: &Admin,
    key: &str,
    id: &str,
    state: &str,
    delivery: Option<&str>,
) -> Result<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, message) = admin
            .call(key, Method::GET, &format!("/messages/{id}"), None)
            .await?;
        if status == 200
            && message["state"] == state
            && delivery.is_none_or(|d| message["delivery_status"] == d)
        {
            return Ok(message);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "message {id} did not reach {state}/{delivery:?}: {status} {message}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_sent_and_delivered_once_per_idempotency_key() -> Result<()> {
    let mut env = TestEnv::new(&["--latency", "uniform:5-20"]).await?;
    env.receiver().await?;
    let provider = env.create_provider(&env.provider()).await?;
    let admin = env.admin().await?;
    let (_, key) = tenant(&admin, "acme", 100).await?;
    let (_, other_key) = tenant(&admin, "globex", 100).await?;
    let _scheduler = env.scheduler(250, &[])?;
    let _worker = env.worker(&[])?;

    let body = json!({"to": "+15551230001", "channel": "sms", "provider_id": provider,
                      "text": "Your code is 4821"});
    let (status, _, first) = post(&admin, &key, Some("otp-4821"), body.clone()).await?;
    assert_eq!(status, 202, "{first}");
    let id = first["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(first["to"], "+15551230001");
    assert_eq!(first["text"], "Your code is 4821");

    // The same key and request: the first message, nothing new.
    let (status, _, again) = post(&admin, &key, Some("otp-4821"), body.clone()).await?;
    assert_eq!((status, again["id"].as_str()), (202, Some(id.as_str())));
    // The same key with another request is refused, naming the key.
    let mut changed = body.clone();
    changed["text"] = json!("Your code is 9999");
    let (status, _, refused) = post(&admin, &key, Some("otp-4821"), changed).await?;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["fields"][0]["field"], "idempotency_key");
    // A header the API cannot take is named as the header.
    let long = "k".repeat(300);
    let (status, _, refused) = post(&admin, &key, Some(&long), body.clone()).await?;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["fields"][0]["field"], "Idempotency-Key");

    let sent = wait_message(&admin, &key, &id, "sent", Some("delivered")).await?;
    assert_eq!(sent["attempts"], 1, "{sent}");
    assert!(sent["provider_message_id"].is_string(), "{sent}");
    let receipts = sent["receipts"].as_array().cloned().unwrap_or_default();
    assert!(
        receipts.iter().any(|r| r["status"] == "delivered"),
        "{sent}"
    );

    // Sent once, whatever was asked twice; a key seen after the send still replays.
    let (status, _, late) = post(&admin, &key, Some("otp-4821"), body.clone()).await?;
    assert_eq!((status, late["id"].as_str()), (202, Some(id.as_str())));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = env.simulator_stats().await?;
    assert_eq!(stats["accepted"], 1, "{stats}");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(rows, 1);

    // Listed for its tenant only; the stream behind it is no campaign of the tenant's.
    let list = admin.ok(&key, Method::GET, "/messages", None).await?;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
    let (status, _) = admin
        .call(&other_key, Method::GET, &format!("/messages/{id}"), None)
        .await?;
    assert_eq!(status, 404);
    let theirs = admin.ok(&other_key, Method::GET, "/messages", None).await?;
    assert_eq!(theirs["items"], json!([]));
    let campaigns = admin.ok(&key, Method::GET, "/campaigns", None).await?;
    assert_eq!(campaigns["items"], json!([]), "{campaigns}");

    // A day later the key is free: the same request is a new message.
    sqlx::query("UPDATE messages SET created_at = now() - interval '24 hours 1 minute'")
        .execute(&env.pool)
        .await?;
    let (status, _, next_day) = post(&admin, &key, Some("otp-4821"), body).await?;
    assert_eq!(status, 202, "{next_day}");
    assert_ne!(next_day["id"].as_str(), Some(id.as_str()), "{next_day}");
    wait_message(
        &admin,
        &key,
        next_day["id"].as_str().unwrap_or_default(),
        "sent",
        None,
    )
    .await?;
    Ok(())
}

/// A key is held 24 hours, and after that for as long as its message is not finished:
/// released while the message still waited (a day's backlog, a provider's refusal holding
/// it), a retry sent it a second time. Once finished and past the day, it is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_held_while_its_message_waits_however_old() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let admin = env.admin().await?;
    let (_, key) = tenant(&admin, "acme", 100).await?;
    // No scheduler: the message waits.
    let body = json!({"to": "+15551230077", "channel": "sms", "provider_id": provider,
                      "text": "Your order shipped"});
    let (status, _, first) = post(&admin, &key, Some("order-77"), body.clone()).await?;
    assert_eq!(status, 202, "{first}");
    let id = first["id"].as_str().unwrap_or_default().to_owned();
    let age = |hours: i32| {
        sqlx::query("UPDATE messages SET created_at = now() - make_interval(hours => $1) WHERE id = $2::uuid")
            .bind(hours)
            .bind(&id)
            .execute(&env.pool)
    };
    age(25).await?;
    let (status, _, again) = post(&admin, &key, Some("order-77"), body.clone()).await?;
    assert_eq!(
        (status, again["id"].as_str()),
        (202, Some(id.as_str())),
        "a day old and still waiting: the same message"
    );
    // Finished (cancelled here) and past its day: the key is free for a new message.
    let (status, cancelled) = admin
        .call(
            &key,
            Method::POST,
            &format!("/messages/{id}/cancel"),
            Some(json!({})),
        )
        .await?;
    assert_eq!(status, 200, "{cancelled}");
    let (status, _, fresh) = post(&admin, &key, Some("order-77"), body).await?;
    assert_eq!(status, 202, "{fresh}");
    assert_ne!(fresh["id"].as_str(), Some(id.as_str()));
    Ok(())
}

/// A message still waiting is withdrawn by its tenant: `pending` (not yet claimed) or
/// `queued` (its dispatch already published), it ends `cancelled` and the provider never
/// sees it. One sent is past cancelling (409 naming its state); another tenant's is not
/// found. There was no way to withdraw a message once accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_message_is_cancelled_and_never_sent() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let admin = env.admin().await?;
    let (_, key) = tenant(&admin, "acme", 100).await?;
    let (_, other_key) = tenant(&admin, "globex", 100).await?;
    let message =
        |to: &str| json!({"to": to, "channel": "sms", "provider_id": provider, "text": "hi"});
    let cancel = |key: &str, id: &str| {
        let path = format!("/messages/{id}/cancel");
        let key = key.to_owned();
        let admin = &admin;
        async move { admin.call(&key, Method::POST, &path, Some(json!({}))).await }
    };

    // Pending: no scheduler has claimed it.
    let (status, _, pending) = post(&admin, &key, None, message("+15551230001")).await?;
    assert_eq!(status, 202, "{pending}");
    let pending = pending["id"].as_str().unwrap_or_default().to_owned();
    let (status, _) = cancel(&other_key, &pending).await?;
    assert_eq!(status, 404, "another tenant's message is not found");
    let (status, cancelled) = cancel(&key, &pending).await?;
    assert_eq!(
        (status, cancelled["state"].as_str()),
        (200, Some("cancelled")),
        "{cancelled}"
    );

    // Waiting again after a request whose answer was lost: it may have been sent.
    let (status, _, lost) = post(&admin, &key, None, message("+15551230005")).await?;
    assert_eq!(status, 202, "{lost}");
    let lost = lost["id"].as_str().unwrap_or_default().to_owned();
    sqlx::query(
        "UPDATE recipients SET attempts = 1, outcome_unknown_at = now() - interval '1 minute'
         WHERE id = (SELECT recipient_id FROM messages WHERE id = $1::uuid)",
    )
    .bind(&lost)
    .execute(&env.pool)
    .await?;
    let (status, refused) = cancel(&key, &lost).await?;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused.to_string().contains("may have been sent"),
        "{refused}"
    );
    // (Out of the way of the counts below.)
    sqlx::query(
        "UPDATE recipients SET state = 'failed'
         WHERE id = (SELECT recipient_id FROM messages WHERE id = $1::uuid)",
    )
    .bind(&lost)
    .execute(&env.pool)
    .await?;

    // One sent: past cancelling.
    let _scheduler = env.scheduler(250, &[])?;
    let mut worker = env.worker(&[])?;
    let (status, _, sent) = post(&admin, &key, None, message("+15551230003")).await?;
    assert_eq!(status, 202, "{sent}");
    let sent = sent["id"].as_str().unwrap_or_default().to_owned();
    wait_message(&admin, &key, &sent, "sent", None).await?;
    let (status, refused) = cancel(&key, &sent).await?;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("`sent`"),
        "{refused}"
    );

    // Queued: claimed and published into the lane while no worker takes it.
    worker.kill();
    let (status, _, queued) = post(&admin, &key, None, message("+15551230002")).await?;
    assert_eq!(status, 202, "{queued}");
    let queued = queued["id"].as_str().unwrap_or_default().to_owned();
    wait_message(&admin, &key, &queued, "queued", None).await?;
    let (status, cancelled) = cancel(&key, &queued).await?;
    assert_eq!(
        (status, cancelled["state"].as_str()),
        (200, Some("cancelled")),
        "{cancelled}"
    );
    let (status, again) = cancel(&key, &queued).await?;
    assert_eq!(
        (status, again["state"].as_str()),
        (200, Some("cancelled")),
        "{again}"
    );
    // A worker takes the published dispatch and acks it unsent; the message after it in
    // the lane is sent.
    let _worker = env.worker(&[])?;
    let (status, _, after) = post(&admin, &key, None, message("+15551230004")).await?;
    assert_eq!(status, 202, "{after}");
    let after = after["id"].as_str().unwrap_or_default().to_owned();
    wait_message(&admin, &key, &after, "sent", None).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = env.simulator_stats().await?;
    assert_eq!(
        stats["requests"], 2,
        "only the messages not cancelled: {stats}"
    );
    for id in [&pending, &queued] {
        wait_message(&admin, &key, id, "cancelled", None).await?;
    }
    Ok(())
}

/// A stream with nothing left to send that has sent nothing for 10 minutes is ended, so it
/// costs no tick and counts no more toward its tenant's thousand; the next message on its
/// terms starts it again and is sent. One with a message still waiting, or whose tenant is
/// accepting a message at that moment, is left running. Streams never ended before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_ends_and_starts_again_for_the_next_message() -> Result<()> {
    use herald_store::messages::retire_idle_streams;
    let env = TestEnv::new(&[]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let admin = env.admin().await?;
    let (tenant, key) = tenant(&admin, "acme", 100).await?;
    let tenant: uuid::Uuid = tenant.parse()?;
    let message = |channel: &str| json!({"to": "+15551230001", "channel": channel, "provider_id": provider, "text": "hi"});
    let stream_of = |channel: &'static str| {
        let pool = env.pool.clone();
        async move {
            sqlx::query_as::<_, (uuid::Uuid, String)>(
                "SELECT id, status FROM campaigns WHERE kind = 'messages' AND channel = $1",
            )
            .bind(channel)
            .fetch_one(&pool)
            .await
        }
    };
    // Two streams started 11 minutes ago: the sms one's message sent (no sends in the
    // samples kept since), the chat one's still waiting (no scheduler yet).
    let (status, _, sent) = post(&admin, &key, None, message("sms")).await?;
    assert_eq!(status, 202, "{sent}");
    let (status, _, waiting) = post(&admin, &key, None, message("chat")).await?;
    assert_eq!(status, 202, "{waiting}");
    sqlx::query(
        "UPDATE recipients SET state = 'sent', sent_at = now() WHERE id =
             (SELECT recipient_id FROM messages WHERE id = $1)",
    )
    .bind(
        sent["id"]
            .as_str()
            .unwrap_or_default()
            .parse::<uuid::Uuid>()?,
    )
    .execute(&env.pool)
    .await?;
    sqlx::query("SELECT herald_fold_counts()")
        .execute(&env.pool)
        .await?;
    sqlx::query("DELETE FROM campaign_sends_per_second")
        .execute(&env.pool)
        .await?;
    sqlx::query("UPDATE campaigns SET started_at = now() - interval '11 minutes'")
        .execute(&env.pool)
        .await?;

    // The tenant accepting a message meanwhile: nothing is ended.
    let mut accepting = env.pool.begin().await?;
    herald_store::messages::lock_tenant(&mut accepting, tenant).await?;
    assert_eq!(retire_idle_streams(&env.pool).await?, 0);
    accepting.rollback().await?;
    // Then the idle one is; the one with a message waiting is not.
    assert_eq!(retire_idle_streams(&env.pool).await?, 1);
    let (sms, status) = stream_of("sms").await?;
    assert_eq!(status, "completed");
    assert_eq!(stream_of("chat").await?.1, "running");

    // The next message on the sms stream's terms starts it again, and is sent.
    let _scheduler = env.scheduler(250, &[])?;
    let _worker = env.worker(&[])?;
    let (status, _, next) = post(&admin, &key, None, message("sms")).await?;
    assert_eq!(status, 202, "{next}");
    let next = next["id"].as_str().unwrap_or_default().to_owned();
    wait_message(&admin, &key, &next, "sent", None).await?;
    assert_eq!(stream_of("sms").await?, (sms, "running".to_owned()));
    // Just started again: not idle.
    assert_eq!(retire_idle_streams(&env.pool).await?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_one_bad_message_accepts_none_and_names_it() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let admin = env.admin().await?;
    let (_, key) = tenant(&admin, "acme", 100).await?;
    let item = |to: &str, text: &str| json!({"to": to, "channel": "sms", "provider_id": provider, "text": text});

    // More than a batch's 1,000 is refused as a whole, naming the list.
    let many: Vec<Value> = (0..1_001)
        .map(|i| item(&format!("+1555124{i:04}"), "x"))
        .collect();
    let (status, refused) = admin
        .call(
            &key,
            Method::POST,
            "/messages/batch",
            Some(json!({"messages": many})),
        )
        .await?;
    assert!(
        (400..500).contains(&status) && refused.to_string().contains("messages"),
        "{status} {refused}"
    );

    let bad = json!({"messages": [item("+15551230001", "one"), item("not a number", "two"),
                                  item("+15551230003", "three")]});
    let (status, refused) = admin
        .call(&key, Method::POST, "/messages/batch", Some(bad))
        .await?;
    assert_eq!(status, 422, "{refused}");
    let fields = refused_fields(&refused);
    assert_eq!(fields, ["messages[1].to"], "{refused}");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM recipients")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(stored, 0, "nothing of a refused batch is stored");

    // Problems are named by their place in the request, valid items' included.
    let mut keyed = item("+15551230002", "two");
    keyed["idempotency_key"] = json!("same");
    let mixed = json!({"messages": [item("bad", "one"), keyed.clone(), keyed]});
    let (status, refused) = admin
        .call(&key, Method::POST, "/messages/batch", Some(mixed))
        .await?;
    assert_eq!(status, 422, "{refused}");
    let fields = refused_fields(&refused);
    assert_eq!(
        fields,
        ["messages[0].to", "messages[2].idempotency_key"],
        "{refused}"
    );

    // A good message and `second`, refused: the answer, whose first field error must be
    // `second`'s `field`.
    let refused_second = async |second: &Value, field: &str| -> Result<Value> {
        let (status, refused) = admin
            .call(
                &key,
                Method::POST,
                "/messages/batch",
                Some(json!({"messages": [item("+15551230001", "one"), second]})),
            )
            .await?;
        assert_eq!(status, 422, "{refused}");
        assert_eq!(
            refused["error"]["fields"][0]["field"],
            format!("messages[1].{field}")
        );
        Ok(refused)
    };
    // A template with a variable it lacks is named too.
    let mut templated = item("+15551230002", "x");
    templated["text"] = Value::Null;
    templated["template"] = json!("Hi {{name}}");
    refused_second(&templated, "template").await?;
    // Variables are bounded as an upload's values are (each stored and carried in every
    // dispatch): one of 5,000 bytes is named.
    templated["variables"] = json!({"name": "Ada", "notes": "n".repeat(5_000)});
    let refused = refused_second(&templated, "variables").await?;
    assert!(refused.to_string().contains("`notes`"), "{refused}");

    // A blank value would send "Hi ": refused as an upload's row is.
    templated["variables"] = json!({"name": "  "});
    let refused = refused_second(&templated, "variables").await?;
    assert!(refused.to_string().contains("`name` is blank"), "{refused}");

    templated["variables"] = json!({"name": "Ada"});
    let good = json!({"messages": [item("+15551230001", "one"), templated,
                                   item("+1 555 123 0003", "three")]});
    let accepted = admin
        .ok(&key, Method::POST, "/messages/batch", Some(good))
        .await?;
    let texts: Vec<&str> = accepted["messages"]
        .as_array()
        .map(|m| m.iter().filter_map(|x| x["text"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(texts, ["one", "Hi Ada", "three"], "in the request's order");
    assert_eq!(accepted["messages"][2]["to"], "+15551230003");
    // Two messages to one address are two messages.
    admin
        .ok(
            &key,
            Method::POST,
            "/messages",
            Some(item("+15551230001", "one again")),
        )
        .await?;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM recipients WHERE transactional")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(stored, 4);

    // A daily cap: two messages today, then 429 until the tenant's midnight; a replay of an
    // accepted message is no new message.
    let capped = admin
        .ok(
            &admin.operator_key,
            Method::POST,
            "/tenants",
            Some(json!({"name": "capped", "time_zone": "Asia/Kolkata", "max_messages_per_day": 2})),
        )
        .await?;
    let capped_key = admin
        .ok(
            &admin.operator_key,
            Method::POST,
            &format!(
                "/tenants/{}/keys",
                capped["id"].as_str().unwrap_or_default()
            ),
            Some(json!({"name": "tests"})),
        )
        .await?["key"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for n in 0..2 {
        let (status, _, body) = post(
            &admin,
            &capped_key,
            Some(&format!("k{n}")),
            item("+15551230001", "hi"),
        )
        .await?;
        assert_eq!(status, 202, "{body}");
    }
    let (status, retry_after, refused) =
        post(&admin, &capped_key, Some("k2"), item("+15551230001", "hi")).await?;
    assert_eq!(status, 429, "{refused}");
    let seconds: u32 = retry_after.as_deref().unwrap_or("").parse()?;
    assert!((1..=86_400).contains(&seconds), "Retry-After: {seconds}");
    let (status, _, replay) =
        post(&admin, &capped_key, Some("k0"), item("+15551230001", "hi")).await?;
    assert_eq!(status, 202, "a replay is not a new message: {replay}");
    // A batch larger than the cap fits no day: 422, not a 429 to come back at midnight.
    let (status, refused) = admin
        .call(
            &capped_key,
            Method::POST,
            "/messages/batch",
            Some(
                json!({"messages": [item("+15551230001", "a"), item("+15551230002", "b"),
                                     item("+15551230003", "c")]}),
            ),
        )
        .await?;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused.to_string().contains("max_messages_per_day"),
        "{refused}"
    );
    // The day's count is a row per tenant and day, not a count of the day's messages at
    // every accept: today's moved back to yesterday, a message is taken again, and a day
    // older than yesterday is pruned.
    let capped_id: uuid::Uuid = capped["id"].as_str().unwrap_or_default().parse()?;
    sqlx::query("UPDATE tenant_message_days SET day = day - 1 WHERE tenant_id = $1")
        .bind(capped_id)
        .execute(&env.pool)
        .await?;
    sqlx::query("INSERT INTO tenant_message_days VALUES ($1, current_date - 10, 7)")
        .bind(capped_id)
        .execute(&env.pool)
        .await?;
    let (status, _, body) =
        post(&admin, &capped_key, Some("k3"), item("+15551230001", "hi")).await?;
    assert_eq!(status, 202, "{body}");
    // The tenant's counted days, as days from today in `zone`.
    let days = |zone: &'static str| {
        sqlx::query_as::<_, (i32, i64)>(
            "SELECT day - (now() AT TIME ZONE $2)::date, accepted
             FROM tenant_message_days WHERE tenant_id = $1 ORDER BY day",
        )
        .bind(capped_id)
        .bind(zone)
        .fetch_all(&env.pool)
    };
    assert_eq!(days("Asia/Kolkata").await?, [(-1, 2), (0, 1)]);

    // The operator changes the cap: the next message meets the new one.
    let tenant_path = format!("/tenants/{capped_id}");
    let change = |cap: Value| {
        admin.call(
            &admin.operator_key,
            Method::PATCH,
            &tenant_path,
            Some(json!({"max_messages_per_day": cap})),
        )
    };
    let (status, changed) = change(json!(1)).await?;
    assert_eq!(
        (
            status,
            &changed["max_messages_per_day"],
            &changed["time_zone"]
        ),
        (200, &json!(1), &json!("Asia/Kolkata")),
        "only what is given changes: {changed}"
    );
    let (status, _, refused) =
        post(&admin, &capped_key, Some("k4"), item("+15551230001", "hi")).await?;
    assert_eq!(status, 429, "{refused}");
    let (status, changed) = change(Value::Null).await?;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["max_messages_per_day"], Value::Null, "{changed}");
    let (status, _, body) =
        post(&admin, &capped_key, Some("k4"), item("+15551230001", "hi")).await?;
    assert_eq!(status, 202, "no cap any more: {body}");
    // A new time zone carries the day's count over to its own day, and drops the others
    // (a count of an old day must not come back as the new zone's today).
    let today: i64 = sqlx::query_scalar(
        "SELECT accepted FROM tenant_message_days
         WHERE tenant_id = $1 AND day = (now() AT TIME ZONE 'Asia/Kolkata')::date",
    )
    .bind(capped_id)
    .fetch_one(&env.pool)
    .await?;
    let (status, changed) = admin
        .call(
            &admin.operator_key,
            Method::PATCH,
            &tenant_path,
            Some(json!({"time_zone": "Pacific/Kiritimati", "max_messages_per_day": today})),
        )
        .await?;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(days("Pacific/Kiritimati").await?, [(0, today)]);
    let (status, _, refused) =
        post(&admin, &capped_key, Some("k5"), item("+15551230001", "hi")).await?;
    assert_eq!(status, 429, "the day's count carried over: {refused}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quota_answers_429_until_the_backlog_drains_and_expired_messages_are_not_sent()
-> Result<()> {
    let env = TestEnv::new(&["--latency", "uniform:5-20"]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let admin = env.admin().await?;
    let (_, key) = tenant(&admin, "acme", 5).await?;
    let message = |n: u32| {
        json!({"to": format!("+1555123{n:04}"), "channel": "sms", "provider_id": provider,
               "text": format!("message {n}")})
    };

    // Nothing sends yet: the first five wait, the sixth is refused with a time to come back.
    let mut short = message(0);
    // Far enough ahead to be accepted on a loaded machine.
    let expiry = chrono::Utc::now() + chrono::Duration::seconds(4);
    short["expires_at"] = json!(expiry.to_rfc3339());
    let (status, _, expiring) = post(&admin, &key, Some("short"), short.clone()).await?;
    assert_eq!(status, 202, "{expiring}");
    for n in 1..5 {
        let (status, _, body) = post(&admin, &key, None, message(n)).await?;
        assert_eq!(status, 202, "{body}");
    }
    let (status, retry_after, refused) = post(&admin, &key, None, message(5)).await?;
    assert_eq!(status, 429, "{refused}");
    let seconds: u32 = retry_after.as_deref().unwrap_or("").parse()?;
    assert!((1..=60).contains(&seconds), "Retry-After: {seconds}");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(stored, 5, "the refused message was not stored");

    // Past its expiry, the first is never sent; the others go, and room opens again.
    let left = (expiry - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(500)).await;
    let _scheduler = env.scheduler(250, &[])?;
    let _worker = env.worker(&[])?;
    let id = expiring["id"].as_str().unwrap_or_default();
    wait_message(&admin, &key, id, "expired", None).await?;
    // A client retrying after its expiry gets the first answer, not a refusal of the time.
    let (status, _, replay) = post(&admin, &key, Some("short"), short).await?;
    assert_eq!((status, replay["id"].as_str()), (202, Some(id)), "{replay}");
    let drained = herald_tests::wait_until(Duration::from_secs(30), || async {
        let sent: i64 = sqlx::query_scalar("SELECT count(*) FROM recipients WHERE state = 'sent'")
            .fetch_one(&env.pool)
            .await
            .unwrap_or(0);
        sent == 4
    })
    .await;
    assert!(drained.is_ok(), "the four others were sent");
    let (status, _, body) = post(&admin, &key, None, message(5)).await?;
    assert_eq!(status, 202, "{body}");
    let stats = env.simulator_stats().await?;
    assert!(stats["accepted"].as_u64().unwrap_or(0) <= 5, "{stats}");
    let expired_sends: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM recipients WHERE state = 'expired' AND attempts > 0",
    )
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(expired_sends, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_message_does_not_wait_for_the_next_tick() -> Result<()> {
    messages_go_out_between_ticks(&[]).await
}

/// The scheduler listens for wake-ups on a connection of its own: taken from its pool, the
/// listener held a pool of one for ever, and neither a tick nor a wake could run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_with_a_pool_of_one_still_serves_wake_ups() -> Result<()> {
    messages_go_out_between_ticks(&[("HERALD_DB_POOL_SIZE", "1")]).await
}

/// Three messages, each sent within 5 s of its acceptance, with ticks 20 s apart.
async fn messages_go_out_between_ticks(scheduler_env: &[(&str, &str)]) -> Result<()> {
    let env = TestEnv::new(&["--latency", "fixed:0"]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let admin = env.admin().await?;
    let (_, key) = tenant(&admin, "acme", 100).await?;
    // Ticks 20 s apart: the first comes at once, the next long after this test is done.
    let scheduler = env.scheduler(20_000, scheduler_env)?;
    let _worker = env.worker(&[])?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    for n in 0..3 {
        let started = std::time::Instant::now();
        let (status, _, message) = post(
            &admin,
            &key,
            None,
            json!({"to": format!("+155512300{n:02}"), "channel": "sms", "provider_id": provider,
                   "text": "Your code is 4821"}),
        )
        .await?;
        assert_eq!(status, 202, "{message}");
        let id = message["id"].as_str().unwrap_or_default();
        wait_message(&admin, &key, id, "sent", None).await?;
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(5),
            "message {n} took {took:?}: it waited for a tick"
        );
    }
    let metrics = env.scrape(&scheduler).await?;
    let wakes = herald_tests::metric_sum(&metrics, "herald_scheduler_wakes_total", &[]);
    assert!(wakes.is_some_and(|n| n >= 1.0), "wakes: {wakes:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_without_a_provider_takes_the_tenants_default_and_keeps_its_quiet_hours()
-> Result<()> {
    let env = TestEnv::new(&["--latency", "fixed:0"]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let admin = env.admin().await?;
    let (tenant_id, key) = tenant(&admin, "acme", 100).await?;
    let (other_id, _) = tenant(&admin, "globex", 100).await?;
    let _scheduler = env.scheduler(250, &[])?;
    let _worker = env.worker(&[])?;
    let code = |n: u32| json!({"to": format!("+1555123{n:04}"), "channel": "sms", "text": "code"});

    // No default yet: refused, naming the field to give.
    let (status, _, refused) = post(&admin, &key, None, code(0)).await?;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused_fields(&refused), ["provider_id"], "{refused}");

    // The tenant sets its own default; another tenant's is out of its reach.
    let set = admin
        .ok(
            &key,
            Method::PUT,
            &format!("/tenants/{tenant_id}/default-providers/sms"),
            Some(json!({"provider_id": provider})),
        )
        .await?;
    assert_eq!(set["provider_id"], provider.to_string(), "{set}");
    let (status, _) = admin
        .call(
            &key,
            Method::PUT,
            &format!("/tenants/{other_id}/default-providers/sms"),
            Some(json!({"provider_id": provider})),
        )
        .await?;
    assert_eq!(status, 404);
    let (status, bad) = admin
        .call(
            &key,
            Method::PUT,
            &format!("/tenants/{tenant_id}/default-providers/fax"),
            Some(json!({"provider_id": provider})),
        )
        .await?;
    assert_eq!(
        (status, refused_fields(&bad)),
        (422, vec!["channel"]),
        "{bad}"
    );

    let (status, _, message) = post(&admin, &key, None, code(1)).await?;
    assert_eq!(status, 202, "{message}");
    assert_eq!(message["provider_id"], provider.to_string(), "{message}");
    let id = message["id"].as_str().unwrap_or_default().to_owned();
    // Another channel has no default.
    let mut whatsapp = code(2);
    whatsapp["channel"] = json!("whatsapp");
    let (status, _, refused) = post(&admin, &key, None, whatsapp).await?;
    assert_eq!(
        (status, refused_fields(&refused)),
        (422, vec!["provider_id"])
    );

    // A reminder inside its quiet hours (an hour either side of now, UTC) waits; a code
    // sent after it, with none, goes at once.
    let now = chrono::Utc::now();
    let hm = |t: chrono::DateTime<chrono::Utc>| t.format("%H:%M").to_string();
    let mut reminder = code(3);
    reminder["quiet_hours"] = json!({"start": hm(now - chrono::Duration::hours(1)),
                                      "end": hm(now + chrono::Duration::hours(1)),
                                      "time_zone": "UTC"});
    // Finer than PostgreSQL keeps: the answer says what is stored (microseconds).
    reminder["expires_at"] = json!("2099-01-01T00:00:00.1234567Z");
    let (status, _, held) = post(&admin, &key, None, reminder).await?;
    assert_eq!(status, 202, "{held}");
    assert_eq!(held["quiet_hours"]["time_zone"], "UTC", "{held}");
    let (status, _, after) = post(&admin, &key, None, code(4)).await?;
    assert_eq!(status, 202, "{after}");
    wait_message(&admin, &key, &id, "sent", None).await?;
    wait_message(
        &admin,
        &key,
        after["id"].as_str().unwrap_or_default(),
        "sent",
        None,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held_id = held["id"].as_str().unwrap_or_default();
    let still = admin
        .ok(&key, Method::GET, &format!("/messages/{held_id}"), None)
        .await?;
    assert_eq!(still["state"], "pending", "{still}");
    // The POST's answer (built as the message is stored, not read back) is what GET reads
    // of a message nothing has happened to yet, field for field.
    let mut read = still.clone();
    if let Some(fields) = read.as_object_mut() {
        fields.remove("receipts");
    }
    assert_eq!(read, held, "GET read {still}");
    let stats = env.simulator_stats().await?;
    assert_eq!(stats["accepted"], 2, "{stats}");
    // A shared provider's monthly volume is all tenants': not this tenant's to see.
    let shared = admin
        .ok(&key, Method::GET, &format!("/providers/{provider}"), None)
        .await?;
    assert_eq!(shared["sent_this_month"], Value::Null, "{shared}");
    let seen = admin
        .ok(
            &admin.operator_key,
            Method::GET,
            &format!("/providers/{provider}"),
            None,
        )
        .await?;
    assert_eq!(seen["sent_this_month"], 2, "{seen}");

    // Bad quiet hours name their field.
    let mut bad = code(5);
    bad["quiet_hours"] = json!({"start": "25:00", "end": "07:00", "time_zone": "Mars/Olympus"});
    let (status, _, refused) = post(&admin, &key, None, bad).await?;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(
        refused_fields(&refused),
        ["quiet_hours.start", "quiet_hours.time_zone"],
        "{refused}"
    );

    // A message keyed before the default is removed: its retry after answers the same
    // message (checked again today, it was refused for want of a provider, and a client
    // taking that 422 for final would send it some other way: twice).
    let (status, _, keyed) = post(&admin, &key, Some("code-7"), code(7)).await?;
    assert_eq!(status, 202, "{keyed}");

    // Removed: messages must name their provider again.
    let (status, _) = admin
        .call(
            &key,
            Method::DELETE,
            &format!("/tenants/{tenant_id}/default-providers/sms"),
            None,
        )
        .await?;
    assert_eq!(status, 204);
    let listed = admin
        .ok(
            &key,
            Method::GET,
            &format!("/tenants/{tenant_id}/default-providers"),
            None,
        )
        .await?;
    assert_eq!(listed, json!([]));
    let (status, _, refused) = post(&admin, &key, None, code(6)).await?;
    assert_eq!(
        (status, refused_fields(&refused)),
        (422, vec!["provider_id"])
    );
    let (status, _, replayed) = post(&admin, &key, Some("code-7"), code(7)).await?;
    assert_eq!(
        (status, replayed["id"].as_str()),
        (202, keyed["id"].as_str()),
        "{replayed}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflow_behind_its_commitment_goes_first_while_both_have_room() -> Result<()> {
    let env = TestEnv::new(&["--latency", "fixed:0"]).await?;
    let primary = env.create_provider(&env.provider()).await?;
    let mut second = env.provider();
    second.name = "committed".into();
    let overflow = env.create_provider(&second).await?;
    let admin = env.admin().await?;
    let op = admin.operator_key.clone();
    let committed = admin
        .ok(
            &op,
            Method::PUT,
            &format!("/providers/{overflow}/commitment"),
            Some(json!({"monthly_commitment": 1_000_000})),
        )
        .await?;
    assert_eq!(committed["monthly_commitment"], 1_000_000, "{committed}");
    let (status, refused) = admin
        .call(
            &op,
            Method::PUT,
            &format!("/providers/{overflow}/commitment"),
            Some(json!({"monthly_commitment": 0})),
        )
        .await?;
    assert_eq!(
        (status, refused_fields(&refused)),
        (422, vec!["monthly_commitment"])
    );
    let tenant = env.tenant("acme", 1).await?;
    let _scheduler = env.scheduler(250, &[])?;
    let _worker = env.worker(&[])?;

    // A campaign of 100 (under one lane budget) sent where `overflow` is behind its pace
    // (nothing sent this month) and the primary has no commitment: all of it goes there.
    let via = |campaign: uuid::Uuid| {
        let pool = env.pool.clone();
        async move {
            let rows: Vec<(uuid::Uuid, i64)> = sqlx::query_as(
                "SELECT sent_via, count(*) FROM recipients WHERE campaign_id = $1 GROUP BY 1",
            )
            .bind(campaign)
            .fetch_all(&pool)
            .await?;
            anyhow::Ok(rows)
        }
    };
    let run = |name: &'static str, prefix: &'static str| {
        let env = &env;
        async move {
            let campaign = herald_store::catalog::create_campaign(
                &env.pool,
                &herald_store::catalog::NewCampaign {
                    tenant_id: tenant,
                    provider_id: primary,
                    overflow_provider_id: Some(overflow),
                    name: name.into(),
                    channel: herald_shared::domain::Channel::Sms,
                    template: "Hello".into(),
                    batch_size: 1_000,
                },
                &herald_tests::numbers(prefix, 100)
                    .into_iter()
                    .map(|address| herald_store::catalog::NewRecipient {
                        address,
                        variables: Default::default(),
                    })
                    .collect::<Vec<_>>(),
            )
            .await?;
            env.start(campaign).await?;
            env.wait_completed(&[campaign], Duration::from_secs(60))
                .await?;
            anyhow::Ok(campaign)
        }
    };
    let first = run("behind", "+1555700").await?;
    assert_eq!(via(first).await?, [(overflow, 100)]);
    let shown = admin
        .ok(&op, Method::GET, &format!("/providers/{overflow}"), None)
        .await?;
    assert_eq!(shown["sent_this_month"], 100, "{shown}");
    assert!(shown["commitment_due_by_now"].is_i64(), "{shown}");

    // Without the commitment, the primary is first again.
    admin
        .ok(
            &op,
            Method::PUT,
            &format!("/providers/{overflow}/commitment"),
            Some(json!({"monthly_commitment": null})),
        )
        .await?;
    let second = run("even", "+1555701").await?;
    assert_eq!(via(second).await?, [(primary, 100)]);
    Ok(())
}

/// Each combination of provider, overflow, channel, quiet hours and zone that a tenant's
/// messages use is a stream the scheduler looks at every tick: one tenant's messages with
/// quiet hours a minute apart would slow every tenant's ticks. Past 1,000 streams a message
/// that would open another is refused (422, naming its quiet hours, nothing of its batch
/// stored); one that fits an existing stream is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_opens_at_most_a_thousand_streams() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let admin = env.admin().await?;
    let (_, key) = tenant(&admin, "acme", 10_000).await?;
    // Quiet from minute `i` of the day to the next.
    let quiet = |i: u32| {
        let hm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
        json!({"to": "+15551240001", "channel": "sms", "provider_id": provider, "text": "x",
               "quiet_hours": {"start": hm(i), "end": hm(i + 1), "time_zone": "UTC"}})
    };
    let (status, answer) = admin
        .call(
            &key,
            Method::POST,
            "/messages/batch",
            Some(json!({"messages": (0..1_000).map(quiet).collect::<Vec<_>>()})),
        )
        .await?;
    assert_eq!(status, 202, "{answer}");
    let streams = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM campaigns WHERE kind = 'messages'")
            .fetch_one(&env.pool)
            .await
    };
    assert_eq!(streams().await?, 1_000);

    let (status, _, refused) = post(&admin, &key, None, quiet(1_000)).await?;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused_fields(&refused), ["quiet_hours"], "{refused}");
    // In a batch, the message that would open it is named, and nothing is stored.
    let (status, refused) = admin
        .call(
            &key,
            Method::POST,
            "/messages/batch",
            Some(json!({"messages": [quiet(5), quiet(1_001)]})),
        )
        .await?;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(
        refused_fields(&refused),
        ["messages[1].quiet_hours"],
        "{refused}"
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM recipients")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(stored, 1_000, "nothing of the refused batch is stored");
    assert_eq!(streams().await?, 1_000);

    let (status, _, accepted) = post(&admin, &key, None, quiet(7)).await?;
    assert_eq!(status, 202, "an existing stream takes more: {accepted}");
    Ok(())
}

/// A stream its provider's refusal paused starts again only when the provider's credentials
/// change, and some refusals no new credentials mend (a redirect, an endpoint inside the
/// network): its messages waited for ever, counted against the tenant's quota. One held a
/// day (as long as its idempotency key is kept) now ends `expired`, saying why; one accepted
/// a minute ago, or a day-old one in a stream paused a minute ago, still waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_held_a_day_by_its_providers_refusal_expires() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let admin = env.admin().await?;
    let (_, key) = tenant(&admin, "acme", 100).await?;
    let message = |n: u32| {
        json!({"to": format!("+1555125{n:04}"), "channel": "sms", "provider_id": provider,
               "text": "your order shipped"})
    };
    let mut ids = Vec::new();
    for n in 0..3 {
        let mut body = message(n);
        if n == 2 {
            // Another stream (quiet hours of its own).
            body["quiet_hours"] = json!({"start": "03:00", "end": "04:00", "time_zone": "UTC"});
        }
        let (status, _, accepted) = post(&admin, &key, None, body).await?;
        assert_eq!(status, 202, "{accepted}");
        ids.push(accepted["id"].as_str().unwrap_or_default().to_owned());
    }
    // Their provider refused the account (as the worker records it): the first stream a
    // day and an hour ago, the second a minute ago. The first and third messages were
    // accepted a day and an hour ago.
    sqlx::query(
        "UPDATE campaigns SET status = 'paused', pause_reason = 'refused: HTTP 401',
                paused_at = now() - CASE WHEN quiet_start IS NULL THEN interval '25 hours'
                                         ELSE interval '1 minute' END
         WHERE kind = 'messages'",
    )
    .execute(&env.pool)
    .await?;
    for id in [&ids[0], &ids[2]] {
        sqlx::query("UPDATE messages SET created_at = now() - interval '25 hours' WHERE id = $1")
            .bind(uuid::Uuid::parse_str(id)?)
            .execute(&env.pool)
            .await?;
    }
    // A new leader keeps at once.
    let _scheduler = env.scheduler(250, &[])?;
    let expired = wait_message(&admin, &key, &ids[0], "expired", None).await?;
    assert!(
        expired["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("held for a day")),
        "{expired}"
    );
    // Accepted a minute ago; held a minute.
    for id in &ids[1..] {
        let (status, waiting) = admin
            .call(&key, Method::GET, &format!("/messages/{id}"), None)
            .await?;
        assert_eq!(
            (status, waiting["state"].as_str()),
            (200, Some("pending")),
            "{waiting}"
        );
    }
    Ok(())
}

/// A tenant's steady transactional messages wake the scheduler for their own lane only, and
/// do not stop it topping up the others between ticks: each wake-up restarted the poll for
/// drained lanes, so while messages came more often than it, a campaign whose lane its batch
/// size holds got one batch a tick (here 200 every 4 s: 80 s for its 4,000 recipients).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_messages_do_not_stop_other_lanes_being_topped_up() -> Result<()> {
    let env = TestEnv::new(&["--latency", "fixed:0"]).await?;
    let mut lane = env.provider();
    lane.name = "campaigns".into();
    let campaigns = env.create_provider(&lane).await?;
    let messages = env.create_provider(&env.provider()).await?;
    let admin = env.admin().await?;
    let (_, key) = tenant(&admin, "acme", 100_000).await?;
    let other = env.tenant("other", 1).await?;
    let campaign = env
        .campaign(
            other,
            campaigns,
            "big",
            &herald_tests::numbers("+1555770", 4_000),
            200,
        )
        .await?;
    let _scheduler = env.scheduler(4_000, &[])?;
    let _worker = env.worker(&[])?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trickle = {
        let (http, url) = (admin.http.clone(), format!("{}/api/v1/messages", admin.url));
        let (key, stop) = (key.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body = json!({"to": format!("+1555771{:04}", n % 10_000), "channel": "sms",
                                  "provider_id": messages, "text": "Your code is 4821"});
                let _ = http.post(&url).bearer_auth(&key).json(&body).send().await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = std::time::Instant::now();
    env.start(campaign).await?;
    let done = env
        .wait_completed(&[campaign], Duration::from_secs(40))
        .await;
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let posted = trickle.await?;
    done?;
    assert!(posted > 50, "only {posted} messages posted");
    assert!(
        took < Duration::from_secs(20),
        "4,000 recipients took {took:?} while messages kept waking the scheduler"
    );
    Ok(())
}
