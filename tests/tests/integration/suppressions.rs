//! Suppression lists: an address that opted out (a provider's refusal, or the tenant's
//! word) gets nothing more on that channel, through any provider, until it is taken off.

use herald_tests::{Admin, Result, TestEnv, refused_fields};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

const OPTED_OUT: &str = "+19980000001";
const SUBSCRIBED: &str = "+15550000001";

#[derive(Debug, sqlx::FromRow)]
struct Row {
    id: i64,
    address: String,
    state: String,
    attempts: i32,
    last_error: Option<String>,
    sent_via: Option<Uuid>,
}

/// A campaign's recipients by address.
async fn recipients(env: &TestEnv, campaign: Uuid) -> Result<BTreeMap<String, Row>> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, address, state, attempts, last_error, sent_via FROM recipients
         WHERE campaign_id = $1",
    )
    .bind(campaign)
    .fetch_all(&env.pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.address.clone(), r)).collect())
}

/// Runs a campaign of both numbers through `provider` to the end; its recipients.
async fn run(
    env: &TestEnv,
    tenant: Uuid,
    provider: Uuid,
    name: &str,
) -> Result<BTreeMap<String, Row>> {
    let addresses = [OPTED_OUT.to_owned(), SUBSCRIBED.to_owned()];
    let campaign = env.campaign(tenant, provider, name, &addresses, 10).await?;
    env.start(campaign).await?;
    env.wait_completed(&[campaign], Duration::from_secs(30))
        .await?;
    recipients(env, campaign).await
}

/// The tenant's suppression list, as the admin lists it.
async fn listed(admin: &Admin, tenant: Uuid) -> Result<Vec<Value>> {
    let page = admin
        .ok(
            &admin.operator_key,
            Method::GET,
            &format!("/suppressions?tenant_id={tenant}"),
            None,
        )
        .await?;
    Ok(page["items"].as_array().cloned().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_at_one_provider_holds_at_every_other_until_taken_off() -> Result<()> {
    // The simulator's Twilio answers 21610 to numbers that replied STOP; its generic API, a
    // vendor that never heard the STOP, would send to them.
    let env = TestEnv::new(&["--opted-out-prefix", "+1998"]).await?;
    let twilio = env.twilio_provider("twilio_sms").await?;
    let generic = env.create_provider(&env.provider()).await?;
    let tenant = env.tenant("acme", 1).await?;
    let other_tenant = env.tenant("globex", 1).await?;
    let admin = env.admin().await?;
    let _scheduler = env.scheduler(200, &[])?;
    let worker = env.worker(&[])?;

    // Twilio refuses the number that replied STOP: it fails at once, and its address goes
    // on the tenant's list for SMS.
    let first = run(&env, tenant, twilio, "first").await?;
    let refused = &first[OPTED_OUT];
    assert_eq!((refused.state.as_str(), refused.attempts), ("failed", 1));
    assert!(
        refused
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("twilio 21610 (HTTP 400)")),
        "{refused:?}"
    );
    assert_eq!(first[SUBSCRIBED].state, "sent");
    let list = listed(&admin, tenant).await?;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(
        (&list[0]["channel"], &list[0]["address"], &list[0]["source"]),
        (&json!("sms"), &json!(OPTED_OUT), &json!("provider"))
    );
    assert!(listed(&admin, other_tenant).await?.is_empty());

    // The next campaign goes through the generic provider: the opted-out number is not
    // sent to (no attempt, no request), the other is.
    let second = run(&env, tenant, generic, "second").await?;
    let skipped = &second[OPTED_OUT];
    assert_eq!(
        (skipped.state.as_str(), skipped.attempts, skipped.sent_via),
        ("failed", 0, None),
        "{skipped:?}"
    );
    assert_eq!(
        skipped.last_error.as_deref(),
        Some(herald_store::recipients::lease::SUPPRESSED)
    );
    assert_eq!(second[SUBSCRIBED].state, "sent");
    let accepted = env.simulator_accepted().await?;
    let second_campaign_keys: Vec<&String> = accepted
        .keys()
        .filter(|k| k.ends_with(&format!("-{}", skipped.id)))
        .collect();
    assert!(second_campaign_keys.is_empty(), "{accepted:?}");
    let metrics = env.scrape(&worker).await?;
    assert_eq!(
        herald_tests::metric_sum(
            &metrics,
            "herald_messages_total",
            &[("outcome", "suppressed")]
        ),
        Some(1.0),
        "{metrics}"
    );

    // Another tenant's campaign to the same number is its own: sent.
    let others = run(&env, other_tenant, generic, "others").await?;
    assert_eq!(others[OPTED_OUT].state, "sent");

    // Taken off (the recipient texted START): sent again.
    let id = list[0]["id"].as_i64().unwrap_or_default();
    let (status, _) = admin
        .call(
            &admin.operator_key,
            Method::DELETE,
            &format!("/suppressions/{id}"),
            None,
        )
        .await?;
    assert_eq!(status, 204);
    let third = run(&env, tenant, generic, "third").await?;
    assert_eq!(third[OPTED_OUT].state, "sent");
    Ok(())
}

/// Waits until message `id` is in a final state; returns it.
async fn settled(admin: &Admin, key: &str, id: &str) -> Result<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let message = admin
            .ok(key, Method::GET, &format!("/messages/{id}"), None)
            .await?;
        if matches!(message["state"].as_str(), Some("sent" | "failed")) {
            return Ok(message);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "not settled: {message}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_keeps_its_own_list_and_a_message_to_a_listed_address_is_not_sent() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let admin = env.admin().await?;
    let (tenant, key, provider) = admin
        .tenant_with_provider("acme", &env.simulator_url)
        .await?;
    let (_, other_key) = admin.tenant_with_key("globex").await?;
    let _scheduler = env.scheduler(200, &[])?;
    let _worker = env.worker(&[])?;

    // Checked field by field, nothing added on a mistake.
    let (status, refused) = admin
        .call(
            &key,
            Method::POST,
            "/suppressions",
            Some(json!({"channel": "fax", "addresses": ["+15550000002", "12"], "reason": "x".repeat(501)})),
        )
        .await?;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(
        refused_fields(&refused),
        ["channel", "addresses[1]", "reason"]
    );
    let (status, refused) = admin
        .call(
            &key,
            Method::POST,
            "/suppressions",
            Some(json!({"channel": "sms", "addresses": []})),
        )
        .await?;
    assert_eq!((status, refused_fields(&refused)), (422, vec!["addresses"]));
    let (status, refused) = admin
        .call(
            &admin.operator_key,
            Method::POST,
            "/suppressions",
            Some(json!({"channel": "sms", "addresses": ["+15550000002"]})),
        )
        .await?;
    assert_eq!((status, refused_fields(&refused)), (422, vec!["tenant_id"]));
    let (status, refused) = admin
        .call(&key, Method::GET, "/suppressions?channel=fax", None)
        .await?;
    assert_eq!((status, refused_fields(&refused)), (422, vec!["channel"]));
    let (_, nothing) = admin.call(&key, Method::GET, "/suppressions", None).await?;
    assert_eq!(nothing["items"], json!([]), "{nothing}");

    // Added as people write numbers, stored as recipients are; a repeat is kept once.
    let added = admin
        .ok(
            &key,
            Method::POST,
            "/suppressions",
            Some(
                json!({"channel": "sms", "addresses": ["+1 555 000 0002", "+15550000002"],
                        "reason": "asked by email"}),
            ),
        )
        .await?;
    assert_eq!(
        (added["received"].as_i64(), added["added"].as_i64()),
        (Some(1), Some(1))
    );
    let again = admin
        .ok(
            &key,
            Method::POST,
            "/suppressions",
            Some(json!({"channel": "sms", "addresses": ["+15550000002"]})),
        )
        .await?;
    assert_eq!(again["added"], 0, "{again}");
    let list = admin
        .ok(
            &key,
            Method::GET,
            "/suppressions?address=%2B1%20555%20000%200002",
            None,
        )
        .await?;
    let entry = &list["items"][0];
    assert_eq!(
        (
            &entry["address"],
            &entry["source"],
            &entry["reason"],
            &entry["tenant_id"]
        ),
        (
            &json!("+15550000002"),
            &json!("tenant"),
            &json!("asked by email"),
            &json!(tenant)
        )
    );
    let id = entry["id"].as_i64().unwrap_or_default();

    // Another tenant neither sees nor removes it.
    let (_, theirs) = admin
        .call(&other_key, Method::GET, "/suppressions", None)
        .await?;
    assert_eq!(theirs["items"], json!([]), "{theirs}");
    let (status, _) = admin
        .call(
            &other_key,
            Method::DELETE,
            &format!("/suppressions/{id}"),
            None,
        )
        .await?;
    assert_eq!(status, 404);

    // A transactional message to it is accepted and ends failed, never sent; on another
    // channel the address is not listed, and the message goes.
    let message = |channel: &str| json!({"to": "+15550000002", "channel": channel, "provider_id": provider, "text": "Your code is 4821"});
    let held = admin
        .ok(&key, Method::POST, "/messages", Some(message("sms")))
        .await?;
    let held = settled(&admin, &key, held["id"].as_str().unwrap_or_default()).await?;
    assert_eq!(
        (&held["state"], &held["attempts"]),
        (&json!("failed"), &json!(0)),
        "{held}"
    );
    assert_eq!(
        held["last_error"],
        herald_store::recipients::lease::SUPPRESSED
    );
    let whatsapp = admin
        .ok(&key, Method::POST, "/messages", Some(message("whatsapp")))
        .await?;
    let whatsapp = settled(&admin, &key, whatsapp["id"].as_str().unwrap_or_default()).await?;
    assert_eq!(whatsapp["state"], "sent", "{whatsapp}");

    // Taken off: the next message is sent; taken off twice is not found.
    let (status, _) = admin
        .call(&key, Method::DELETE, &format!("/suppressions/{id}"), None)
        .await?;
    assert_eq!(status, 204);
    let (status, _) = admin
        .call(&key, Method::DELETE, &format!("/suppressions/{id}"), None)
        .await?;
    assert_eq!(status, 404);
    let sent = admin
        .ok(&key, Method::POST, "/messages", Some(message("sms")))
        .await?;
    let sent = settled(&admin, &key, sent["id"].as_str().unwrap_or_default()).await?;
    assert_eq!(sent["state"], "sent", "{sent}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipients_stop_and_start_to_a_tenants_twilio_number_change_its_list() -> Result<()> {
    let mut env = TestEnv::new(&[]).await?;
    env.receiver().await?;
    let admin = env.admin().await?;
    let tenant = env.tenant("acme", 1).await?;
    let own = env.tenants_twilio_number(tenant).await?;
    let shared = env.twilio_provider("twilio_sms").await?;
    let token = herald_tests::TWILIO_TOKEN;
    let inbound = herald_tests::twilio_inbound;

    // A STOP to the tenant's own number: on its list for SMS, the recipient's own word.
    let status = env
        .post_twilio_form(own, None, token, &inbound("+15550000003", "Stop"))
        .await?;
    assert_eq!(status, 200);
    let list = listed(&admin, tenant).await?;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(
        (
            &list[0]["channel"],
            &list[0]["address"],
            &list[0]["source"],
            &list[0]["reason"]
        ),
        (
            &json!("sms"),
            &json!("+15550000003"),
            &json!("recipient"),
            &json!("the recipient replied STOP")
        )
    );
    // Unsigned, it changes nothing.
    let forged = env
        .post_twilio_form(own, None, "not-the-token", &inbound("+15550000004", "STOP"))
        .await?;
    assert_eq!(forged, 403);
    // A shared number's STOP names no tenant: left to Twilio's own refusal.
    let status = env
        .post_twilio_form(shared, None, token, &inbound("+15550000005", "STOP"))
        .await?;
    assert_eq!(status, 200);
    let everywhere: i64 = sqlx::query_scalar("SELECT count(*) FROM suppressions")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(everywhere, 1);

    // START takes the recipient's own entry off, not one the tenant holds: added by it, or
    // listed by a STOP first and added by the tenant after (it holds it from then on).
    let status = env
        .post_twilio_form(own, None, token, &inbound("+15550000007", "STOP"))
        .await?;
    assert_eq!(status, 200);
    let added = admin
        .ok(
            &admin.operator_key,
            Method::POST,
            "/suppressions",
            Some(json!({"tenant_id": tenant, "channel": "sms",
                        "addresses": ["+15550000006", "+15550000007"]})),
        )
        .await?;
    assert_eq!(added["added"], 2, "{added}");
    for from in ["+15550000003", "+15550000006", "+15550000007"] {
        let status = env
            .post_twilio_form(own, None, token, &inbound(from, "START"))
            .await?;
        assert_eq!(status, 200);
    }
    let left: Vec<Value> = listed(&admin, tenant).await?;
    let mut kept: Vec<(&Value, &Value)> =
        left.iter().map(|s| (&s["address"], &s["source"])).collect();
    kept.sort_by_key(|(address, _)| address.as_str());
    assert_eq!(
        kept,
        [
            (&json!("+15550000006"), &json!("tenant")),
            (&json!("+15550000007"), &json!("tenant"))
        ],
        "{left:?}"
    );
    Ok(())
}

/// Recipients' words arrive out of order (kept through an outage by two receivers, or a
/// statement committed after a later one) or twice: the latest said holds, whatever came
/// last, and a word older than the one recorded changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipients_latest_word_holds_whatever_order_its_words_arrive_in() -> Result<()> {
    use herald_shared::domain::Channel;
    use herald_store::suppressions::{Consent, record_consents};
    let env = TestEnv::new(&[]).await?;
    let tenant = env.tenant("acme", 1).await?;
    let at = |seconds: i64| chrono::Utc::now() - chrono::Duration::seconds(100 - seconds);
    let word = |address: &str, stop: bool, seconds: i64| Consent {
        tenant_id: tenant,
        channel: Channel::Sms,
        address: address.to_owned(),
        opted_out: stop.then(|| "the recipient replied STOP".to_owned()),
        said_at: at(seconds),
    };
    let listed = async || -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT address FROM suppressions WHERE tenant_id = $1 ORDER BY address",
        )
        .bind(tenant)
        .fetch_all(&env.pool)
        .await?)
    };
    let (a, b, c) = ("+15550000001", "+15550000002", "+15550000003");

    // A's START (at 20 s) arrives before its earlier STOP (at 10 s): not listed. B's STOP
    // then START come in one batch the other way round: the START (later) holds.
    let recorded = record_consents(&env.pool, &[word(a, false, 20), word(b, false, 30)]).await?;
    assert_eq!((recorded.listed, recorded.taken_off), (0, 0));
    let recorded = record_consents(&env.pool, &[word(a, true, 10)]).await?;
    assert_eq!(recorded.listed, 0, "an older STOP listed the address");
    let recorded = record_consents(&env.pool, &[word(b, false, 30), word(b, true, 25)]).await?;
    assert_eq!(recorded.listed, 0);
    assert!(listed().await?.is_empty());

    // A later STOP holds, and again is nothing new; C's STOP, START and STOP in one batch,
    // out of order: the last said (a STOP) holds.
    let recorded = record_consents(
        &env.pool,
        &[
            word(a, true, 40),
            word(c, true, 60),
            word(c, true, 40),
            word(c, false, 50),
        ],
    )
    .await?;
    assert_eq!(recorded.listed, 2);
    let recorded = record_consents(&env.pool, &[word(a, true, 40)]).await?;
    assert_eq!(recorded.listed, 0);
    assert_eq!(listed().await?, [a, c]);
    // A's START later takes it off; its STOP sent again from before changes nothing.
    let recorded = record_consents(&env.pool, &[word(a, false, 70)]).await?;
    assert_eq!(recorded.taken_off, 1);
    record_consents(&env.pool, &[word(a, true, 40)]).await?;
    assert_eq!(listed().await?, [c]);

    // A START older than a word is remembered is not applied (the later word it would undo
    // may be forgotten); a STOP that old still is.
    let weeks_ago = chrono::Utc::now() - chrono::Duration::days(8);
    let late = |stop: bool| Consent {
        said_at: weeks_ago,
        ..word(c, stop, 0)
    };
    let recorded = record_consents(&env.pool, &[late(false)]).await?;
    assert_eq!(
        recorded.taken_off, 0,
        "a START a week late took the address off"
    );
    let d = "+15550000004";
    let recorded = record_consents(
        &env.pool,
        &[Consent {
            address: d.into(),
            ..late(true)
        }],
    )
    .await?;
    assert_eq!(recorded.listed, 1);
    assert_eq!(listed().await?, [c, d]);

    // A week on, a word is forgotten; the list keeps what it decided.
    sqlx::query("UPDATE consents SET said_at = now() - interval '8 days' WHERE address = $1")
        .bind(c)
        .execute(&env.pool)
        .await?;
    assert_eq!(
        herald_store::suppressions::forget_consents(&env.pool, 100).await?,
        2
    );
    assert_eq!(listed().await?, [c, d]);
    Ok(())
}
