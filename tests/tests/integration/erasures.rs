//! Erasures: a tenant asks Herald to forget an address (a person's request to be
//! forgotten), and every copy of it in that tenant's data goes, while states, counts and
//! opt-outs stay, and nothing in flight is sent again.

use herald_tests::{Result, TestEnv, refused_fields, wait_until};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

const ERASED: &str = "+15550000001";
const KEPT: &str = "+15550000002";

#[derive(Debug, sqlx::FromRow)]
struct Row {
    address: String,
    variables: Value,
    state: String,
    last_error: Option<String>,
}

async fn recipient(env: &TestEnv, id: i64) -> Result<Row> {
    Ok(
        sqlx::query_as(
            "SELECT address, variables, state, last_error FROM recipients WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&env.pool)
        .await?,
    )
}

/// Recipient `id` once `done` holds of it (30 s at most).
async fn wait_for(env: &TestEnv, id: i64, what: &str, done: impl Fn(&Row) -> bool) -> Result<Row> {
    let done = &done;
    wait_until(Duration::from_secs(30), || async move {
        recipient(env, id).await.is_ok_and(|r| done(&r))
    })
    .await
    .map_err(|()| anyhow::anyhow!("gave up waiting for {what}"))?;
    recipient(env, id).await
}

/// A campaign's recipient of `address`, by the campaign's address list.
async fn recipient_of(env: &TestEnv, campaign: Uuid, address: &str) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT recipient_id FROM campaign_addresses WHERE campaign_id = $1 AND address = $2",
    )
    .bind(campaign)
    .bind(address)
    .fetch_one(&env.pool)
    .await?)
}

async fn count(env: &TestEnv, sql: &'static str, tenant: Uuid) -> Result<i64> {
    Ok(sqlx::query_scalar(sql)
        .bind(tenant)
        .bind(ERASED)
        .fetch_one(&env.pool)
        .await?)
}

/// A recipient's last word to `tenant` on `channel`, as the receiver records a STOP
/// (`opted_out`) or a START.
async fn word(
    env: &TestEnv,
    tenant: Uuid,
    channel: &str,
    address: &str,
    opted_out: bool,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO consents (tenant_id, channel, address, said_at, opted_out)
         VALUES ($1, $2, $3, now(), $4)",
    )
    .bind(tenant)
    .bind(channel)
    .bind(address)
    .bind(opted_out)
    .execute(&env.pool)
    .await?;
    Ok(())
}

/// Messages the simulator sent for recipient `id` of `campaign`, all attempts together.
async fn sends(env: &TestEnv, campaign: Uuid, id: i64) -> Result<u64> {
    let key = format!("herald-{}-{id}", campaign.simple());
    Ok(env
        .simulator_accepted()
        .await?
        .get(&key)
        .copied()
        .unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_address_leaves_every_copy_and_nothing_in_flight_is_sent_again() -> Result<()> {
    let env = TestEnv::new(&["--latency", "fixed:0"]).await?;
    let admin = env.admin().await?;
    let op = admin.operator_key.clone();
    let (tenant, key) = admin.tenant_with_key("acme").await?;
    let tenant: Uuid = tenant.parse()?;
    let (other, _) = admin.tenant_with_key("globex").await?;
    let other: Uuid = other.parse()?;
    let provider = env.create_provider(&env.provider()).await?;
    // Its answers are lost (below): the outcome waits 8 s (time enough to erase it under
    // load) for a receipt that never comes, then the recipient would be sent again.
    let mut lossy = env.provider();
    lossy.name = "lossy".into();
    lossy.unknown_window_ms = 8_000;
    lossy.retry_base_ms = 100;
    lossy.retry_max_ms = 200;
    let lossy = env.create_provider(&lossy).await?;
    let _scheduler = env.scheduler(200, &[])?;
    let _worker = env.worker(&[])?;

    for (owner, address) in [(tenant, ERASED), (tenant, KEPT), (other, ERASED)] {
        sqlx::query(
            "INSERT INTO contacts (tenant_id, address, attributes) VALUES ($1, $2, '{\"name\": \"Ann\"}')",
        )
        .bind(owner)
        .bind(address)
        .execute(&env.pool)
        .await?;
        word(&env, owner, "sms", address, false).await?;
    }
    // A STOP on WhatsApp: its opt-out, and the word that keeps an older START arriving
    // late from taking it off, stay.
    admin
        .ok(
            &key,
            Method::POST,
            "/suppressions",
            Some(json!({"channel": "whatsapp", "addresses": [ERASED]})),
        )
        .await?;
    word(&env, tenant, "whatsapp", ERASED, true).await?;

    // Sent: a campaign of both addresses, another tenant's to the same one, and a
    // transactional message.
    let both = [ERASED.to_owned(), KEPT.to_owned()];
    let sent = env.campaign(tenant, provider, "sent", &both, 10).await?;
    let others = env.campaign(other, provider, "others", &both, 10).await?;
    env.start(sent).await?;
    env.start(others).await?;
    let message = admin
        .ok(
            &key,
            Method::POST,
            "/messages",
            Some(
                json!({"to": ERASED, "channel": "sms", "provider_id": provider,
                        "text": "Your code is 4821"}),
            ),
        )
        .await?;
    let message_id = message["id"].as_str().unwrap_or_default().to_owned();
    env.wait_completed(&[sent, others], Duration::from_secs(30))
        .await?;
    let message_row: i64 = sqlx::query_scalar("SELECT recipient_id FROM messages WHERE id = $1")
        .bind(message_id.parse::<Uuid>()?)
        .fetch_one(&env.pool)
        .await?;
    wait_for(&env, message_row, "the message sent", |r| r.state == "sent").await?;
    // Listed by the number it went to, written as people write it.
    let to = |key: &str| {
        let key = key.to_owned();
        let admin = &admin;
        async move {
            let page = admin
                .ok(
                    &key,
                    Method::GET,
                    "/messages?to=%2B1%20555%20000%200001",
                    None,
                )
                .await?;
            anyhow::Ok(page["items"].as_array().map_or(0, Vec::len))
        }
    };
    assert_eq!(to(&key).await?, 1);
    assert_eq!(to(&op).await?, 1);
    // Waiting: a draft of both.
    let draft = env.campaign(tenant, provider, "draft", &both, 10).await?;
    // In flight: its answer lost, the outcome unknown until a receipt or its window.
    env.simulator_config(json!({"lose_rate": 1.0})).await?;
    let unsure = env
        .campaign(tenant, lossy, "unsure", &[ERASED.to_owned()], 10)
        .await?;
    let unsure_row = recipient_of(&env, unsure, ERASED).await?;
    env.start(unsure).await?;
    wait_for(&env, unsure_row, "the lossy send unknown", |r| {
        r.state == "unknown"
    })
    .await?;

    let sent_row = recipient_of(&env, sent, ERASED).await?;
    let draft_row = recipient_of(&env, draft, ERASED).await?;
    let erased = admin
        .ok(
            &key,
            Method::POST,
            "/erasures",
            Some(json!({"address": "+1 555 000 0001"})),
        )
        .await?;
    assert_eq!(
        erased,
        json!({"address": ERASED, "contacts": 1, "messages": 4, "cancelled": 1,
               "in_flight": 1, "suppressions_kept": 1}),
    );

    // What had ended keeps its state, without the address or variables.
    let row = recipient(&env, sent_row).await?;
    assert_eq!(
        (row.address.as_str(), &row.variables, row.state.as_str()),
        ("erased", &json!({}), "sent")
    );
    let row = recipient(&env, message_row).await?;
    assert_eq!(
        (row.address.as_str(), &row.variables, row.state.as_str()),
        ("erased", &json!({}), "sent")
    );
    let hash: Vec<u8> = sqlx::query_scalar("SELECT request_hash FROM messages WHERE id = $1")
        .bind(message_id.parse::<Uuid>()?)
        .fetch_one(&env.pool)
        .await?;
    assert!(hash.is_empty(), "the request's hash covered the number");
    let shown = admin
        .ok(&key, Method::GET, &format!("/messages/{message_id}"), None)
        .await?;
    assert_eq!(
        (&shown["to"], &shown["text"]),
        (&json!("erased"), &Value::Null)
    );
    assert_eq!(
        to(&key).await?,
        0,
        "an erased message is not found by its number"
    );
    // What waited is cancelled, unsent.
    let row = recipient(&env, draft_row).await?;
    assert_eq!(
        (row.address.as_str(), row.state.as_str()),
        ("erased", "cancelled")
    );
    assert!(
        row.last_error
            .as_deref()
            .is_some_and(|e| e.contains("erased")),
        "{row:?}"
    );
    let states = env.states(draft).await?;
    assert_eq!(
        (states.get("cancelled"), states.get("pending")),
        (Some(&1), Some(&1)),
        "{states:?}"
    );
    // No copy of the address is left with the tenant but its opt-out and what is in flight.
    for (sql, left) in [
        (
            "SELECT count(*) FROM contacts WHERE tenant_id = $1 AND address = $2",
            0,
        ),
        (
            "SELECT count(*) FROM consents WHERE tenant_id = $1 AND address = $2 AND NOT opted_out",
            0,
        ),
        (
            "SELECT count(*) FROM consents WHERE tenant_id = $1 AND address = $2 AND opted_out",
            1,
        ),
        (
            "SELECT count(*) FROM suppressions WHERE tenant_id = $1 AND address = $2",
            1,
        ),
        (
            "SELECT count(*) FROM messages WHERE tenant_id = $1 AND address = $2",
            0,
        ),
        (
            "SELECT count(*) FROM campaign_addresses ca JOIN campaigns c ON c.id = ca.campaign_id
             WHERE c.tenant_id = $1 AND ca.address = $2",
            1,
        ),
        (
            "SELECT count(*) FROM recipients r JOIN campaigns c ON c.id = r.campaign_id
             WHERE c.tenant_id = $1 AND r.address = $2",
            1,
        ),
    ] {
        assert_eq!(count(&env, sql, tenant).await?, left, "{sql}");
    }
    // The tenant's other address, and the other tenant's copies, are untouched.
    let kept = recipient(&env, recipient_of(&env, sent, KEPT).await?).await?;
    assert_eq!(
        (kept.address.as_str(), &kept.variables),
        (KEPT, &json!({"first_name": "R1"}))
    );
    assert_eq!(
        recipient(&env, recipient_of(&env, draft, KEPT).await?)
            .await?
            .state,
        "pending"
    );
    for sql in [
        "SELECT count(*) FROM contacts WHERE tenant_id = $1 AND address = $2",
        "SELECT count(*) FROM consents WHERE tenant_id = $1 AND address = $2",
        "SELECT count(*) FROM campaign_addresses ca JOIN campaigns c ON c.id = ca.campaign_id
         WHERE c.tenant_id = $1 AND ca.address = $2",
    ] {
        assert_eq!(count(&env, sql, other).await?, 1, "{sql}");
    }
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM contacts WHERE tenant_id = $1 AND address <> $2",
            tenant
        )
        .await?,
        1
    );

    // The send in flight is never made again: its retry ends `expired`, and the scheduler
    // erases it then.
    let row = wait_for(&env, unsure_row, "the message in flight erased", |r| {
        r.address == "erased"
    })
    .await?;
    assert_eq!(row.state, "expired", "{row:?}");
    assert_eq!(sends(&env, unsure, unsure_row).await?, 1);
    let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM erasures")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(waiting, 0);

    // Asked again (here through the CLI): nothing of it is left.
    let output = env.run_binary(
        "herald",
        &[
            "--url", &admin.url, "--key", &key, "--json", "contact", "erase", ERASED,
        ],
        &[],
    )?;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let again: Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(
        (&again["messages"], &again["contacts"]),
        (&json!(0), &json!(0)),
        "{again}"
    );

    // Mistakes are named; an operator names the tenant.
    for (body, field) in [
        (json!({"address": "hello"}), "address"),
        (json!({"address": ERASED, "channel": "sms"}), "channel"),
        (json!({}), "address"),
    ] {
        let (status, answer) = admin
            .call(&key, Method::POST, "/erasures", Some(body.clone()))
            .await?;
        assert_eq!(
            (status, refused_fields(&answer)),
            (422, vec![field]),
            "{body}"
        );
    }
    let (status, answer) = admin
        .call(
            &op,
            Method::POST,
            "/erasures",
            Some(json!({"address": ERASED})),
        )
        .await?;
    assert_eq!((status, refused_fields(&answer)), (422, vec!["tenant_id"]));
    let erased = admin
        .ok(
            &op,
            Method::POST,
            "/erasures",
            Some(json!({"tenant_id": other, "address": ERASED})),
        )
        .await?;
    assert_eq!(
        (&erased["contacts"], &erased["messages"]),
        (&json!(1), &json!(1))
    );
    Ok(())
}

/// A worker holding a recipient while it looks an earlier attempt up (its answer was lost)
/// finds, once the lookup rules that attempt out, that it may not send again if the address
/// was erased meanwhile; nor does the lease statement's retry (its answer lost) lease it
/// again. A recipient of another address in the same state may.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_erased_while_its_worker_holds_it_is_not_sent_again() -> Result<()> {
    use herald_store::recipients::{lease, reconcile};
    let env = TestEnv::new(&[]).await?;
    let tenant = env.tenant("acme", 1).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let both = [ERASED.to_owned(), KEPT.to_owned()];
    let campaign = env.campaign(tenant, provider, "c", &both, 10).await?;
    let erased = recipient_of(&env, campaign, ERASED).await?;
    let kept = recipient_of(&env, campaign, KEPT).await?;
    let token = Uuid::new_v4();
    // As a worker leaves them after its lease: `sending` under its token, the earlier
    // attempt's outcome unknown.
    sqlx::query(
        "UPDATE recipients SET state = 'sending', dispatch_seq = 1, attempts = 2,
             lease_token = $2, lease_until = now() + interval '1 minute', sent_via = $3,
             outcome_unknown_at = now() - interval '1 minute', unknown_via = $3
         WHERE campaign_id = $1",
    )
    .bind(campaign)
    .bind(token)
    .bind(provider)
    .execute(&env.pool)
    .await?;
    let done = herald_store::erasures::erase(&env.pool, tenant, ERASED).await?;
    assert_eq!((done.messages, done.in_flight), (1, 1), "{done:?}");

    let dispatch = |recipient_id| lease::Dispatch {
        recipient_id,
        seq: 1,
        provider,
        token,
    };
    let leased = lease::begin(
        &env.pool,
        &[dispatch(erased), dispatch(kept)],
        Duration::from_secs(5),
    )
    .await?;
    assert_eq!(
        (leased[0].is_some(), leased[1].is_some()),
        (false, true),
        "{leased:?}"
    );
    assert!(!reconcile::rule_out_earlier_attempt(&env.pool, erased, 1).await?);
    assert!(reconcile::rule_out_earlier_attempt(&env.pool, kept, 1).await?);
    Ok(())
}
