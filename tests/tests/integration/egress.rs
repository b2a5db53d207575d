//! Where provider requests may go, checked by the workers on every request (not only by the
//! admin when the endpoint was given): a tenant's provider whose name resolves inside the
//! network is never connected to, and no provider's redirect is followed. Either pauses the
//! campaign with the reason; nothing is sent elsewhere, and a request the provider may have
//! taken before its redirect is not sent again blindly.

use anyhow::Result;
use herald_tests::{TestEnv, numbers, wait_until};
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

/// A provider at `endpoint` straight in the database (as if its DNS record had changed
/// since the admin checked it), owned by `tenant` or shared (`None`).
async fn provider_at(env: &TestEnv, tenant: Option<Uuid>, endpoint: &str) -> Result<Uuid> {
    Ok(sqlx::query_scalar(
        "INSERT INTO providers (tenant_id, name, kind, endpoint, timeout_ms, max_in_flight)
         VALUES ($1, $2, 'http', $3, 2000, 100) RETURNING id",
    )
    .bind(tenant)
    .bind(format!("p-{}", Uuid::new_v4().simple()))
    .bind(endpoint)
    .fetch_one(&env.pool)
    .await?)
}

async fn pause_reason(env: &TestEnv, campaign: Uuid) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar(
            "SELECT pause_reason FROM campaigns WHERE id = $1 AND status = 'paused'",
        )
        .bind(campaign)
        .fetch_optional(&env.pool)
        .await?
        .flatten(),
    )
}

async fn wait_paused(env: &TestEnv, campaign: Uuid) -> Result<String> {
    wait_until(Duration::from_secs(20), || async {
        pause_reason(env, campaign).await.is_ok_and(|r| r.is_some())
    })
    .await
    .map_err(|_| anyhow::anyhow!("the campaign was not paused"))?;
    Ok(pause_reason(env, campaign).await?.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_provider_resolving_inside_the_network_is_never_reached() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let tenant = env.tenant("acme", 1).await?;
    // `localhost` is loopback: a tenant's provider may not go there once the operator
    // allows no network (the harness allows loopback for every other test).
    let port = env.simulator_url.rsplit(':').next().unwrap_or_default();
    let inside = format!("http://localhost:{port}/v1/messages");
    let tenants = provider_at(&env, Some(tenant), &inside).await?;
    let shared = provider_at(&env, None, &inside).await?;
    let _scheduler = env.scheduler(200, &[])?;
    let _worker = env.worker(&[("HERALD_PROVIDER_ALLOWED_NETWORKS", "")])?;

    let refused = env
        .campaign(tenant, tenants, "inside", &numbers("+1555810", 20), 100)
        .await?;
    env.start(refused).await?;
    let reason = wait_paused(&env, refused).await?;
    assert!(reason.contains("not a public address"), "{reason}");
    let states = env.states(refused).await?;
    assert_eq!(states.get("failed"), None, "{states:?}");
    assert_eq!(states.get("sent"), None, "{states:?}");
    assert_eq!(
        env.simulator_stats().await?["requests"],
        json!(0),
        "a request reached the provider"
    );

    // The operator's shared provider at the same address is trusted.
    let trusted = env
        .campaign(tenant, shared, "shared", &numbers("+1555820", 20), 100)
        .await?;
    env.start(trusted).await?;
    env.wait_completed(&[trusted], Duration::from_secs(30))
        .await?;
    assert_eq!(env.states(trusted).await?.get("sent"), Some(&20));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_providers_redirect_is_not_followed() -> Result<()> {
    let mut env = TestEnv::new(&[]).await?;
    let elsewhere = env.extra_simulator(&[]).await?;
    env.simulator_config(json!({"redirect_to": elsewhere}))
        .await?;
    let tenant = env.tenant("acme", 1).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let campaign = env
        .campaign(tenant, provider, "moved", &numbers("+1555830", 20), 100)
        .await?;
    let _scheduler = env.scheduler(200, &[])?;
    let _worker = env.worker(&[])?;
    env.start(campaign).await?;
    let reason = wait_paused(&env, campaign).await?;
    assert!(
        reason.contains("redirect") && reason.contains("307"),
        "{reason}"
    );
    let states = env.states(campaign).await?;
    assert_eq!(states.get("failed"), None, "{states:?}");
    assert_eq!(
        env.simulator_stats_at(&elsewhere).await?["requests"],
        json!(0),
        "the redirect was followed"
    );
    Ok(())
}

/// A provider that takes each request and answers 303 See Other (a POST processed, pointing
/// at its result): paused as at any redirect, but each request so answered may have made a
/// message. Once the provider answers plainly again and the campaign is resumed, each is
/// looked up before it is sent again: no recipient gets two. (Recorded as a refusal, due
/// again with nothing unknown, each was sent a second time.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_answered_by_a_redirect_are_looked_up_before_they_are_sent_again() -> Result<()> {
    let env = TestEnv::new(&["--latency", "fixed:20"]).await?;
    let admin = env.admin().await?;
    env.simulator_config(json!({"see_other": true})).await?;
    let tenant = env.tenant("acme", 1).await?;
    let provider = env.twilio_provider("twilio_sms").await?;
    let campaign = env
        .campaign(tenant, provider, "see-other", &numbers("+1555840", 50), 100)
        .await?;
    let _scheduler = env.scheduler(200, &[])?;
    let _worker = env.worker(&[])?;
    env.start(campaign).await?;
    let reason = wait_paused(&env, campaign).await?;
    assert!(
        reason.contains("redirect") && reason.contains("303"),
        "{reason}"
    );
    wait_until(Duration::from_secs(20), || async {
        env.states(campaign)
            .await
            .is_ok_and(|s| !s.contains_key("queued") && !s.contains_key("sending"))
    })
    .await
    .map_err(|_| anyhow::anyhow!("messages still in flight 20 s after the pause"))?;
    let taken = env.simulator_stats().await?["accepted"]
        .as_u64()
        .unwrap_or(0);
    assert!(taken > 0, "no request was taken before the pause");

    env.simulator_config(json!({"see_other": false})).await?;
    admin
        .ok(
            &admin.operator_key,
            reqwest::Method::POST,
            &format!("/campaigns/{campaign}/resume"),
            None,
        )
        .await?;
    env.wait_completed(&[campaign], Duration::from_secs(60))
        .await?;
    assert_eq!(env.states(campaign).await?.get("sent"), Some(&50));
    let stats = env.simulator_stats().await?;
    assert_eq!(stats["duplicates"], 0, "{stats}");
    assert_eq!(stats["accepted"], 50, "{stats}");
    Ok(())
}
