//! A provider that refuses the account (Twilio 20003 after its auth token was rotated at the
//! provider) pauses the campaign with the reason instead of failing its audience; after the
//! credentials are rotated in Herald (CLI) and the campaign resumed, everyone is sent once.

use anyhow::Result;
use herald_tests::{TWILIO_SID, TWILIO_TOKEN, TestEnv, numbers, wait_until};
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

const RECIPIENTS: usize = 3_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_account_pauses_the_campaign_and_loses_no_recipient() -> Result<()> {
    let env = TestEnv::new(&["--latency", "fixed:20"]).await?;
    let admin = env.admin().await?;
    let op = admin.operator_key.clone();
    let provider = env.twilio_provider("twilio_sms").await?;
    // A request of this 20 ms provider that times out is rightly charged an attempt (it may
    // have been taken): with the helper's 2 s timeout, a loaded machine (parallel tests)
    // charged 68 recipients so, and this test is about refusals, which must cost none.
    // Five requests in flight at most (250 msg/s): the rotation below must come while most
    // recipients still wait, however loaded the machine (unbounded, the 3,000 were once all
    // sent before it took effect).
    sqlx::query("UPDATE providers SET timeout_ms = 30000, max_in_flight = 5 WHERE id = $1")
        .bind(provider)
        .execute(&env.pool)
        .await?;
    let tenant = env.tenant("acme", 1).await?;
    let campaign = env
        .campaign(
            tenant,
            provider,
            "rotated",
            &numbers("+1555600", RECIPIENTS),
            200,
        )
        .await?;
    let _scheduler = env.scheduler(250, &[])?;
    let _worker = env.worker(&[])?;
    env.start(campaign).await?;

    // Mid-run, the account's auth token is rotated at the provider: Herald's is now refused.
    wait_until(Duration::from_secs(30), || async {
        env.states(campaign)
            .await
            .is_ok_and(|s| s.get("sent").copied().unwrap_or(0) >= 300)
    })
    .await
    .map_err(|_| anyhow::anyhow!("the campaign did not get going"))?;
    env.simulator_config(json!({"revoked_credential": TWILIO_TOKEN}))
        .await?;

    wait_until(Duration::from_secs(15), || async {
        env.campaign_status(campaign)
            .await
            .is_ok_and(|s| s == "paused")
    })
    .await
    .map_err(|_| anyhow::anyhow!("a refused account did not pause the campaign"))?;
    let shown = admin
        .ok(&op, Method::GET, &format!("/campaigns/{campaign}"), None)
        .await?;
    let reason = shown["progress"]["pause_reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("20003") && reason.contains("401"),
        "pause reason: {shown}"
    );
    // Everything in flight at the pause settles, and nobody is failed for the account's fault.
    wait_until(Duration::from_secs(20), || async {
        env.states(campaign)
            .await
            .is_ok_and(|s| !s.contains_key("queued") && !s.contains_key("sending"))
    })
    .await
    .map_err(|_| anyhow::anyhow!("messages still in flight 20 s after the pause"))?;
    let paused = env.states(campaign).await?;
    assert_eq!(paused.get("failed"), None, "{paused:?}");
    let sent_before = paused.get("sent").copied().unwrap_or(0);
    assert!(
        sent_before < RECIPIENTS as i64,
        "the campaign finished before the rotation: {paused:?}"
    );
    // Paused means paused: no more requests reach the provider.
    let requests = env.simulator_stats().await?["requests"]
        .as_u64()
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = env.simulator_stats().await?["requests"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(later, requests, "requests went on while paused");

    // The CLI says why.
    let cli = |args: &[&str]| {
        let mut all = vec!["--url", admin.url.as_str(), "--key", op.as_str()];
        all.extend_from_slice(args);
        env.run_binary("herald", &all, &[])
    };
    let id = campaign.to_string();
    let progress = cli(&["campaign", "progress", &id])?;
    let text = String::from_utf8_lossy(&progress.stdout);
    assert!(progress.status.success(), "{progress:?}");
    assert!(
        text.contains("paused because:") && text.contains("20003"),
        "{text}"
    );

    // The operator rotates Herald's copy of the credentials (the provider accepts the new
    // token: only the old one is revoked) and resumes.
    let creds = std::env::temp_dir().join(format!("herald-creds-{campaign}.json"));
    std::fs::write(
        &creds,
        json!({"account_sid": TWILIO_SID, "auth_token": "rotated-t0ken"}).to_string(),
    )?;
    let rotated = cli(&[
        "provider",
        "rotate-credentials",
        &provider.to_string(),
        "--credentials",
        &format!("@{}", creds.display()),
    ])?;
    let _ = std::fs::remove_file(&creds);
    assert!(rotated.status.success(), "{rotated:?}");
    let resumed = cli(&["campaign", "resume", &id])?;
    assert!(resumed.status.success(), "{resumed:?}");
    let shown = admin
        .ok(&op, Method::GET, &format!("/campaigns/{campaign}"), None)
        .await?;
    assert_eq!(shown["progress"]["pause_reason"], json!(null), "{shown}");

    env.wait_completed(&[campaign], Duration::from_secs(90))
        .await?;
    let states = env.states(campaign).await?;
    assert_eq!(states.get("sent"), Some(&(RECIPIENTS as i64)), "{states:?}");
    // Each recipient taken exactly once by the provider.
    let accepted = env.simulator_accepted().await?;
    assert_eq!(accepted.len(), RECIPIENTS);
    let twice = accepted.values().filter(|&&n| n != 1).count();
    assert_eq!(twice, 0, "recipients sent more than once");
    // The refusals spent no attempt: each recipient's counted attempts are its one send.
    let charged: (i32, i32) = sqlx::query_as(
        "SELECT min(attempts - throttles), max(attempts - throttles) FROM recipients",
    )
    .fetch_one(&env.pool)
    .await?;
    if charged != (1, 1) {
        // Which ones, and why: the last error of a recipient charged twice says what its
        // other attempt met.
        let odd: Vec<(i64, i32, i32, Option<String>)> = sqlx::query_as(
            "SELECT id, attempts, throttles, last_error FROM recipients
             WHERE attempts - throttles <> 1 ORDER BY id LIMIT 10",
        )
        .fetch_all(&env.pool)
        .await?;
        panic!("attempts charged (min, max) {charged:?}; recipients: {odd:?}");
    }
    let refused: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM recipients WHERE last_error LIKE '%20003%' OR throttles > 0",
    )
    .fetch_one(&env.pool)
    .await?;
    assert!(
        refused > 0,
        "no request was refused: the test proved nothing"
    );
    Ok(())
}

/// Rotated credentials are used from the first request after the rotation, not a cache
/// period later, and only an operator may rotate a shared provider's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_credentials_rotate_through_the_api() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let admin = env.admin().await?;
    let op = admin.operator_key.clone();
    let (_, tenant_key, own) = admin
        .tenant_with_provider("acme", &env.simulator_url)
        .await?;
    let shared = env.twilio_provider("twilio_sms").await?;
    let path = |id: &str| format!("/providers/{id}/credentials");

    // A tenant cannot rotate a shared provider's credentials, nor see another's.
    let (status, body) = admin
        .call(
            &tenant_key,
            Method::PUT,
            &path(&shared.to_string()),
            Some(json!({"credentials": {"account_sid": TWILIO_SID, "auth_token": "x"}})),
        )
        .await?;
    assert_eq!(status, 403, "{body}");
    // Credentials are checked as at creation, naming the field.
    let (status, body) = admin
        .call(
            &op,
            Method::PUT,
            &path(&shared.to_string()),
            Some(json!({"credentials": {"account_sid": TWILIO_SID}})),
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["error"]["fields"][0]["field"], "credentials.auth_token",
        "{body}"
    );
    // A tenant rotates its own provider's; the answer never shows them.
    let rotated = admin
        .ok(
            &tenant_key,
            Method::PUT,
            &path(&own),
            Some(json!({"credentials": {"webhook_secret": "n3w-s3cr3t"}})),
        )
        .await?;
    assert_eq!(rotated["has_credentials"], true);
    assert!(!rotated.to_string().contains("n3w-s3cr3t"), "{rotated}");
    let revision: i32 = sqlx::query_scalar("SELECT revision FROM providers WHERE id = $1::uuid")
        .bind(&own)
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(revision, 1);

    // A worker that has the provider cached uses new credentials at once.
    let tenant = env.tenant("ops", 1).await?;
    let first = env
        .campaign(tenant, shared, "before", &numbers("+1555610", 5), 100)
        .await?;
    let _scheduler = env.scheduler(200, &[])?;
    let _worker = env.worker(&[])?;
    env.start(first).await?;
    env.wait_completed(&[first], Duration::from_secs(30))
        .await?;
    env.simulator_config(json!({"revoked_credential": TWILIO_TOKEN}))
        .await?;
    admin
        .ok(
            &op,
            Method::PUT,
            &path(&shared.to_string()),
            Some(json!({"credentials": {"account_sid": TWILIO_SID, "auth_token": "fresh"}})),
        )
        .await?;
    let second = env
        .campaign(tenant, shared, "after", &numbers("+1555620", 5), 100)
        .await?;
    env.start(second).await?;
    env.wait_completed(&[second], Duration::from_secs(30))
        .await?;
    assert_eq!(env.campaign_status(second).await?, "completed");
    let states = env.states(second).await?;
    assert_eq!(states.get("sent"), Some(&5), "{states:?}");
    Ok(())
}
