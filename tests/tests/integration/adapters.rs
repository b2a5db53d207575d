//! Provider adapters end to end: a scheduler and a worker send through each API kind to the
//! simulator, which reports exactly what it received (method, path, content type, auth,
//! fields, idempotency key); provider error codes land as the right recipient outcome.

use herald_tests::{Result, TestEnv};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "twilio-auth-t0ken";
/// `Basic ` + base64 of `{SID}:{TOKEN}`, written out so the check is byte for byte.
const TWILIO_AUTH: &str =
    "Basic QUMwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZjp0d2lsaW8tYXV0aC10MGtlbg==";
const WA_TOKEN: &str = "EAAGwhatsapp-t0ken";

/// A provider of `kind`, fast retries, straight into the database.
async fn provider(
    env: &TestEnv,
    kind: &str,
    endpoint: &str,
    settings: Value,
    credentials: Value,
) -> Result<Uuid> {
    Ok(sqlx::query_scalar(
        "INSERT INTO providers (name, kind, endpoint, settings, credentials, timeout_ms,
                                max_in_flight, max_attempts, retry_base_ms, retry_max_ms)
         VALUES ($1, $2, $3, $4, $5, 5000, 100, 5, 100, 2000) RETURNING id",
    )
    .bind(kind)
    .bind(kind)
    .bind(endpoint)
    .bind(settings)
    .bind(credentials)
    .fetch_one(&env.pool)
    .await?)
}

struct Recipient {
    key: String,
    state: String,
    attempts: i32,
    last_error: Option<String>,
    provider_message_id: Option<String>,
}

/// Runs `addresses` through `provider` to completion; the recipients by address.
async fn run(
    env: &TestEnv,
    provider: Uuid,
    addresses: &[&str],
) -> Result<BTreeMap<String, Recipient>> {
    let tenant = env.tenant("acme", 1).await?;
    let addresses: Vec<String> = addresses.iter().map(|a| (*a).to_owned()).collect();
    let campaign = env
        .campaign(tenant, provider, "adapters", &addresses, 100)
        .await?;
    let _scheduler = env.scheduler(250, &[])?;
    let _worker = env.worker(&[])?;
    env.start(campaign).await?;
    env.wait_completed(&[campaign], Duration::from_secs(60))
        .await?;
    #[derive(sqlx::FromRow)]
    struct Row {
        id: i64,
        address: String,
        state: String,
        attempts: i32,
        last_error: Option<String>,
        provider_message_id: Option<String>,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, address, state, attempts, last_error, provider_message_id
         FROM recipients WHERE campaign_id = $1",
    )
    .bind(campaign)
    .fetch_all(&env.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let recipient = Recipient {
                key: format!("herald-{}-{}", campaign.simple(), row.id),
                state: row.state,
                attempts: row.attempts,
                last_error: row.last_error,
                provider_message_id: row.provider_message_id,
            };
            (row.address, recipient)
        })
        .collect())
}

/// The simulator's record of every request with `key`.
async fn requests(env: &TestEnv, key: &str) -> Result<Vec<Value>> {
    Ok(env
        .simulator_requests(key)
        .await?
        .as_array()
        .cloned()
        .unwrap_or_default())
}

fn statuses(requests: &[Value]) -> Vec<i64> {
    requests
        .iter()
        .filter_map(|r| r["status"].as_i64())
        .collect()
}

fn no_secret_in(recipients: &BTreeMap<String, Recipient>, secret: &str) {
    for r in recipients.values() {
        assert!(
            !r.last_error.as_deref().unwrap_or_default().contains(secret),
            "a secret leaked into last_error: {:?}",
            r.last_error
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_messages_are_form_encoded_with_basic_auth_and_bad_numbers_fail_with_the_code()
-> Result<()> {
    let env = TestEnv::new(&["--reject-prefix", "+1999"]).await?;
    let provider = provider(
        &env,
        "twilio_sms",
        &env.simulator_url,
        json!({"from": "+15005550006", "status_callback": "https://hooks.example/twilio"}),
        json!({"account_sid": SID, "auth_token": TOKEN}),
    )
    .await?;
    let recipients = run(
        &env,
        provider,
        &["+15556000001", "+0123456", "+19990000001"],
    )
    .await?;
    no_secret_in(&recipients, TOKEN);

    let ok = &recipients["+15556000001"];
    assert_eq!((ok.state.as_str(), ok.attempts), ("sent", 1));
    assert!(
        ok.provider_message_id
            .as_deref()
            .is_some_and(|id| id.starts_with("SM") && id.len() == 34),
        "{:?}",
        ok.provider_message_id
    );
    let seen = requests(&env, &ok.key).await?;
    assert_eq!(statuses(&seen), [201]);
    let request = &seen[0];
    assert_eq!(request["api"], "twilio_messages");
    assert_eq!(request["method"], "POST");
    assert_eq!(
        request["path"],
        format!("/2010-04-01/Accounts/{SID}/Messages.json")
    );
    assert_eq!(request["content_type"], "application/x-www-form-urlencoded");
    assert_eq!(request["headers"]["authorization"], TWILIO_AUTH);
    assert_eq!(request["headers"]["accept"], "application/json");
    assert_eq!(request["headers"]["i-twilio-idempotency-token"], ok.key);
    // A campaign's first attempt is claimed by range: its dispatch is still the first, 0.
    assert_eq!(
        request["fields"],
        json!({"To": "+15556000001", "From": "+15005550006", "Body": "Hello R0",
               "StatusCallback": format!("https://hooks.example/twilio?ref={}&seq=0", ok.key)})
    );

    // 21211 (not E.164) and 21614 (the simulator's unreachable prefix): permanent at once,
    // Twilio's code and message kept.
    let invalid = &recipients["+0123456"];
    assert_eq!((invalid.state.as_str(), invalid.attempts), ("failed", 1));
    assert_eq!(
        invalid.last_error.as_deref(),
        Some("twilio 21211 (HTTP 400): The 'To' number +0123456 is not a valid phone number.")
    );
    assert_eq!(statuses(&requests(&env, &invalid.key).await?), [400]);
    let landline = &recipients["+19990000001"];
    assert_eq!((landline.state.as_str(), landline.attempts), ("failed", 1));
    assert!(
        landline
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("twilio 21614 (HTTP 400)")),
        "{:?}",
        landline.last_error
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_calls_speak_inline_twiml_and_a_20429_is_retried_then_sent() -> Result<()> {
    let env = TestEnv::new(&["--fail-first", "1", "--fail-status", "429"]).await?;
    let provider = provider(
        &env,
        "twilio_voice",
        &format!("{}/", env.simulator_url),
        json!({"from": "+15005550006"}),
        json!({"account_sid": SID, "auth_token": TOKEN}),
    )
    .await?;
    let recipients = run(&env, provider, &["+15556000002"]).await?;
    let call = &recipients["+15556000002"];
    assert_eq!((call.state.as_str(), call.attempts), ("sent", 2));
    assert!(
        call.provider_message_id
            .as_deref()
            .is_some_and(|id| id.starts_with("CA")),
        "{:?}",
        call.provider_message_id
    );
    let seen = requests(&env, &call.key).await?;
    assert_eq!(statuses(&seen), [429, 201]);
    // Twilio's 429 carried `Retry-After: 1`: the retry waited for it, not just the 100 ms
    // backoff.
    let gap =
        seen[1]["arrived_ms"].as_i64().unwrap_or(0) - seen[0]["arrived_ms"].as_i64().unwrap_or(0);
    assert!(gap >= 1_000, "retried after {gap} ms");
    for request in &seen {
        assert_eq!(
            request["path"],
            format!("/2010-04-01/Accounts/{SID}/Calls.json")
        );
        assert_eq!(request["content_type"], "application/x-www-form-urlencoded");
        assert_eq!(request["headers"]["authorization"], TWILIO_AUTH);
        assert_eq!(request["headers"]["i-twilio-idempotency-token"], call.key);
        assert_eq!(
            request["fields"],
            json!({"To": "+15556000002", "From": "+15005550006",
                   "Twiml": "<Response><Say>Hello R0</Say></Response>"})
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatsapp_messages_are_json_with_a_bearer_token_and_130429_is_retried() -> Result<()> {
    let env = TestEnv::new(&[
        "--fail-first",
        "1",
        "--fail-status",
        "429",
        "--reject-prefix",
        "+1999",
    ])
    .await?;
    let provider = provider(
        &env,
        "whatsapp",
        &env.simulator_url,
        // No api_version: the default, a Graph API version Meta still serves.
        json!({"phone_number_id": "106540352242922"}),
        json!({"access_token": WA_TOKEN}),
    )
    .await?;
    let recipients = run(&env, provider, &["+15556000003", "+19990000003"]).await?;
    no_secret_in(&recipients, WA_TOKEN);

    let ok = &recipients["+15556000003"];
    assert_eq!((ok.state.as_str(), ok.attempts), ("sent", 2));
    assert!(
        ok.provider_message_id
            .as_deref()
            .is_some_and(|id| id.starts_with("wamid.")),
        "{:?}",
        ok.provider_message_id
    );
    let seen = requests(&env, &ok.key).await?;
    assert_eq!(statuses(&seen), [429, 200]);
    for request in &seen {
        assert_eq!(request["api"], "whatsapp");
        assert_eq!(request["method"], "POST");
        assert_eq!(request["path"], "/v24.0/106540352242922/messages");
        assert_eq!(request["content_type"], "application/json");
        assert_eq!(
            request["headers"]["authorization"],
            format!("Bearer {WA_TOKEN}")
        );
        assert_eq!(
            request["fields"],
            json!({"messaging_product": "whatsapp", "recipient_type": "individual",
                   "to": "15556000003", "type": "text",
                   "text": {"preview_url": false, "body": "Hello R0"},
                   "biz_opaque_callback_data": ok.key})
        );
    }

    // The simulator's unreachable prefix: 131026, permanent at once.
    let undeliverable = &recipients["+19990000003"];
    assert_eq!(
        (undeliverable.state.as_str(), undeliverable.attempts),
        ("failed", 1)
    );
    assert!(
        undeliverable
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("whatsapp 131026 (HTTP 400)")),
        "{:?}",
        undeliverable.last_error
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_providers_render_their_body_template_and_extra_headers() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let provider = provider(
        &env,
        "http",
        &format!("{}/v1/messages", env.simulator_url),
        json!({
            "body_template": {"to": "{{to}}", "body": "{{body}} \"quoted\"",
                              "ref": "{{idempotency_key}}", "recipient": "{{recipient_id}}"},
            "headers": {"X-Tenant": "acme"},
        }),
        json!({"bearer_token": "generic-t0ken", "headers": {"X-Api-Key": "generic-k3y"}}),
    )
    .await?;
    let recipients = run(&env, provider, &["+15556000004"]).await?;
    let ok = &recipients["+15556000004"];
    assert_eq!((ok.state.as_str(), ok.attempts), ("sent", 1));
    let seen = requests(&env, &ok.key).await?;
    assert_eq!(statuses(&seen), [200]);
    let request = &seen[0];
    assert_eq!(request["api"], "generic");
    assert_eq!(request["path"], "/v1/messages");
    assert_eq!(request["content_type"], "application/json");
    assert_eq!(request["headers"]["idempotency-key"], ok.key);
    assert_eq!(request["headers"]["authorization"], "Bearer generic-t0ken");
    assert_eq!(request["headers"]["x-tenant"], "acme");
    assert_eq!(request["headers"]["x-api-key"], "generic-k3y");
    let recipient_id = ok.key.rsplit('-').next().unwrap_or_default();
    assert_eq!(
        request["fields"],
        json!({"to": "+15556000004", "body": "Hello R0 \"quoted\"", "ref": ok.key,
               "recipient": recipient_id})
    );
    Ok(())
}

/// Meta answers code 2 ("service temporarily unavailable") on a 503, when nothing was sent,
/// but also on a 500 raised after the message was taken (the simulator's
/// `--fail-after-send-rate`): there the message exists, and only its webhook can say so.
/// Each recipient waits for it (`unknown`), asked once; read as "nothing sent", each was
/// sent again at once, and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whatsapp_5xx_after_the_message_was_taken_is_not_sent_again() -> Result<()> {
    let env = TestEnv::new(&["--fail-after-send-rate", "1"]).await?;
    let provider = provider(
        &env,
        "whatsapp",
        &env.simulator_url,
        json!({"phone_number_id": "106540352242922"}),
        json!({"access_token": WA_TOKEN}),
    )
    .await?;
    let tenant = env.tenant("acme", 1).await?;
    let addresses: Vec<String> = (1..=3).map(|i| format!("+1555600001{i}")).collect();
    let campaign = env
        .campaign(tenant, provider, "taken", &addresses, 100)
        .await?;
    let _scheduler = env.scheduler(250, &[])?;
    let _worker = env.worker(&[])?;
    env.start(campaign).await?;
    herald_tests::wait_until(Duration::from_secs(20), || async {
        env.states(campaign)
            .await
            .is_ok_and(|s| s.get("unknown") == Some(&3))
    })
    .await
    .map_err(|_| anyhow::anyhow!("the recipients are not all waiting for a webhook"))?;
    // Well past the retry delays (100 ms and up): still waiting, asked once each.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.states(campaign).await?.get("unknown"), Some(&3));
    let stats = env.simulator_stats().await?;
    assert_eq!(stats["requests"], 3, "{stats}");
    assert_eq!(stats["duplicates"], 0, "{stats}");
    Ok(())
}
