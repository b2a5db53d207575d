//! A provider that is down (answering 503) costs no recipient an attempt, breaker open or
//! not; the breaker leaves it alone and probes it every few seconds, and its recipients are
//! all sent soon after it is back.

use anyhow::Result;
use herald_tests::{TestEnv, numbers, wait_until};
use serde_json::json;
use std::time::{Duration, Instant};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_down_for_20_s_costs_no_attempt() -> Result<()> {
    let env = TestEnv::new(&["--latency", "fixed:5"]).await?;
    let mut provider = env.provider();
    // Three attempts, close together: without a breaker, every recipient would fail within
    // a couple of seconds of the outage.
    provider.max_attempts = 3;
    provider.retry_base_ms = 200;
    provider.retry_max_ms = 1_000;
    let provider = env.create_provider(&provider).await?;
    let tenant = env.tenant("acme", 1).await?;
    let campaign = env
        .campaign(tenant, provider, "outage", &numbers("+1555400", 500), 1_000)
        .await?;
    env.simulator_config(serde_json::json!({"outage": true}))
        .await?;
    let _scheduler = env.scheduler(500, &[])?;
    let _worker = env.worker(&[])?;
    env.start(campaign).await?;

    tokio::time::sleep(Duration::from_secs(20)).await;
    let during = env.simulator_stats().await?["requests"]
        .as_u64()
        .unwrap_or(0);
    let states = env.states(campaign).await?;
    assert_eq!(
        states.get("failed"),
        None,
        "recipients failed during the outage: {states:?}"
    );
    assert_eq!(states.get("sent"), None);
    // The first few hundred in flight when it went down, then a probe per cool-down.
    assert!(
        during < 500,
        "the down provider got {during} requests in 20 s: the breaker did not hold them back"
    );
    let breaker_open: bool = sqlx::query_scalar(
        "SELECT open_until > now() - interval '1 minute' FROM provider_pacing WHERE provider_id = $1",
    )
    .bind(provider)
    .fetch_one(&env.pool)
    .await?;
    assert!(breaker_open, "the fleet was told the breaker opened");

    env.simulator_config(serde_json::json!({"outage": false}))
        .await?;
    let back = Instant::now();
    herald_tests::wait_until(Duration::from_secs(30), || async {
        env.states(campaign)
            .await
            .is_ok_and(|s| s.contains_key("sent"))
    })
    .await
    .map_err(|_| anyhow::anyhow!("nothing sent after the outage"))?;
    let recovery = back.elapsed();
    // A probe goes out every 5 s at most, and the scheduler releases at its next tick.
    assert!(
        recovery < Duration::from_secs(8),
        "first send {recovery:?} after the provider was back"
    );
    env.wait_completed(&[campaign], Duration::from_secs(120))
        .await?;
    let states = env.states(campaign).await?;
    assert_eq!(states.get("sent"), Some(&500), "{states:?}");
    assert_eq!(states.get("failed"), None, "{states:?}");
    let stats = env.simulator_stats().await?;
    assert_eq!(stats["accepted"], 500);
    assert_eq!(stats["duplicates"], 0);
    // Hundreds of 503s, and not one attempt charged for them: each recipient's counted
    // attempts are its one send.
    let charged: (i32, i32) = sqlx::query_as(
        "SELECT min(attempts - throttles), max(attempts - throttles) FROM recipients",
    )
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(charged, (1, 1), "attempts charged: {stats}");
    Ok(())
}

const WA_TOKEN: &str = "EAAGexpired-t0ken";

/// Whether a worker has opened `provider`'s breaker (told the fleet) within the last minute.
async fn breaker_opened(env: &TestEnv, provider: Uuid) -> bool {
    sqlx::query_scalar(
        "SELECT coalesce(bool_or(open_until > now() - interval '1 minute'), false)
         FROM provider_pacing WHERE provider_id = $1",
    )
    .bind(provider)
    .fetch_one(&env.pool)
    .await
    .unwrap_or(false)
}

/// Starts 30 campaigns of two recipients through `provider`, whose every answer is a refusal
/// of the account, and checks that the refusals alone open its breaker, that the campaigns
/// pause with the provider's answer (`reason` in it) and that nobody is failed.
async fn refusals_open_the_breaker(
    env: &TestEnv,
    provider: Uuid,
    channel: &str,
    reason: &str,
) -> Result<()> {
    let tenant = env.tenant("acme", 1).await?;
    let _scheduler = env.scheduler(250, &[])?;
    let worker = env.worker(&[])?;
    let addresses = numbers("+1555800", 60);
    let mut campaigns = Vec::new();
    for (i, pair) in addresses.chunks(2).enumerate() {
        campaigns.push(
            env.campaign(tenant, provider, &format!("c{i}"), pair, 100)
                .await?,
        );
    }
    // The test helper's campaigns are SMS ones: the channel the provider carries.
    sqlx::query("UPDATE campaigns SET channel = $2 WHERE id = ANY($1)")
        .bind(&campaigns)
        .bind(channel)
        .execute(&env.pool)
        .await?;
    for &campaign in &campaigns {
        env.start(campaign).await?;
    }

    let opened = wait_until(Duration::from_secs(15), || breaker_opened(env, provider)).await;
    let stats = env.simulator_stats().await?;
    assert!(
        opened.is_ok(),
        "refusals did not open the breaker: {stats}\nworker log:\n{}",
        worker.log_text()
    );
    // Refusals and nothing else reached the simulator: they alone opened it.
    let statuses: Vec<&str> = stats["by_status"]
        .as_object()
        .map(|by| by.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(statuses, ["401"], "{stats}");
    assert!(
        worker.log_text().contains("circuit breaker open"),
        "the worker logged the breaker opening"
    );

    // What the refusals did besides: their campaigns paused with the provider's answer, and
    // no recipient failed.
    let pattern = format!("%{reason}%");
    wait_until(Duration::from_secs(10), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM campaigns
             WHERE id = ANY($1) AND status = 'paused' AND pause_reason LIKE $2",
        )
        .bind(&campaigns)
        .bind(&pattern)
        .fetch_one(&env.pool)
        .await
        .is_ok_and(|n| n > 0)
    })
    .await
    .map_err(|_| anyhow::anyhow!("no campaign paused with a reason naming {reason:?}"))?;
    let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM recipients WHERE state = 'failed'")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(failed, 0, "a refused account failed recipients");
    Ok(())
}

/// An expired Meta access token (Graph error 190, HTTP 401) counts against the breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_whatsapp_token_190_counts_against_the_breaker() -> Result<()> {
    let env = TestEnv::new(&["--latency", "fixed:5"]).await?;
    let provider: Uuid = sqlx::query_scalar(
        "INSERT INTO providers (name, kind, endpoint, settings, credentials, timeout_ms,
                                max_in_flight)
         VALUES ('whatsapp', 'whatsapp', $1, $2, $3, 5000, 10000) RETURNING id",
    )
    .bind(&env.simulator_url)
    .bind(json!({"phone_number_id": "106540352242922"}))
    .bind(json!({"access_token": WA_TOKEN}))
    .fetch_one(&env.pool)
    .await?;
    // Meta no longer takes the token: every request is answered 401 with
    // {"error": {"code": 190, "type": "OAuthException", ...}} (simulator/src/apis.rs:761).
    env.simulator_config(json!({"revoked_credential": WA_TOKEN}))
        .await?;
    refusals_open_the_breaker(&env, provider, "whatsapp", "whatsapp 190").await
}

/// A generic provider's HTTP 401 counts against the breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generic_providers_401_counts_against_the_breaker() -> Result<()> {
    // Every request refused 401: the simulator's fail-first, far more times than any key is
    // tried (the generic API has no credential the simulator checks, so no revocation).
    let env = TestEnv::new(&[
        "--latency",
        "fixed:5",
        "--fail-first",
        "1000",
        "--fail-status",
        "401",
    ])
    .await?;
    let provider = env.create_provider(&env.provider()).await?;
    refusals_open_the_breaker(&env, provider, "sms", "HTTP 401").await
}

/// Looking lost answers up goes through the provider's breaker as sending does: lookups
/// alone, at a provider that is down, open it (and tell the fleet), rather than each
/// waiting out its own failure while the provider is asked again and again; once the
/// provider is back, each recipient is looked up once and sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_at_a_provider_that_is_down_open_its_breaker() -> Result<()> {
    // More than the breaker needs to judge (20 calls).
    const RECIPIENTS: usize = 30;
    let env = TestEnv::new(&[]).await?;
    let provider = env.twilio_provider("twilio_sms").await?;
    let tenant = env.tenant("acme", 1).await?;
    let campaign = env
        .campaign(tenant, provider, "c", &numbers("+1555810", RECIPIENTS), 100)
        .await?;
    // Each recipient's first request went out a minute ago and its answer was lost; no
    // receipt came within the window, so the next attempt looks it up first.
    sqlx::query(
        "UPDATE recipients SET attempts = 1, sent_via = $2, unknown_via = $2,
                attempted_at = now() - interval '1 minute',
                outcome_unknown_at = now() - interval '1 minute', next_attempt_at = now()
         WHERE campaign_id = $1",
    )
    .bind(campaign)
    .bind(provider)
    .execute(&env.pool)
    .await?;
    env.simulator_config(json!({"outage": true})).await?;
    let _scheduler = env.scheduler(250, &[])?;
    let worker = env.worker(&[])?;
    env.start(campaign).await?;

    let opened = wait_until(Duration::from_secs(15), || breaker_opened(&env, provider))
        .await
        .is_ok();
    let stats = env.simulator_stats().await?;
    assert!(
        opened,
        "lookups failing at a provider that is down did not open its breaker; simulator: \
         {stats}; worker log:\n{}",
        worker.log_text()
    );
    assert_eq!(
        stats["accepted"], 0,
        "nothing is sent while lookups fail: {stats}"
    );

    env.simulator_config(json!({"outage": false})).await?;
    // The failed lookups wait 30 s to be asked again: made due now.
    sqlx::query("UPDATE recipients SET next_attempt_at = now() WHERE campaign_id = $1")
        .bind(campaign)
        .execute(&env.pool)
        .await?;
    env.wait_completed(&[campaign], Duration::from_secs(60))
        .await?;
    let states = env.states(campaign).await?;
    assert_eq!(states.get("sent"), Some(&(RECIPIENTS as i64)), "{states:?}");
    let stats = env.simulator_stats().await?;
    assert_eq!(
        stats["lookups"]["answered"], RECIPIENTS,
        "one lookup each: {stats}"
    );
    assert_eq!(stats["accepted"], RECIPIENTS, "one message each: {stats}");
    Ok(())
}

/// A provider that never takes a recipient again (here: 503 to every request) does not keep
/// it waiting for ever, its campaign running: put off longer than the worker's deferral limit
/// with no attempt spent, it ends `failed` at its next deferral, and its campaign completes.
/// Time a campaign spends paused is not counted: a recipient put off before the pause counts
/// from the resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_put_off_past_the_deferral_limit_fails() -> Result<()> {
    use herald_store::campaigns::{Transition, transition};
    const LIMIT: Duration = Duration::from_secs(6);
    let env = TestEnv::new(&["--latency", "fixed:5"]).await?;
    let mut provider = env.provider();
    provider.retry_base_ms = 200;
    provider.retry_max_ms = 1_000;
    let provider = env.create_provider(&provider).await?;
    let tenant = env.tenant("acme", 1).await?;
    let down = env
        .campaign(tenant, provider, "down", &numbers("+1555410", 10), 1_000)
        .await?;
    let paused = env
        .campaign(tenant, provider, "paused", &numbers("+1555420", 10), 1_000)
        .await?;
    env.simulator_config(json!({"outage": true})).await?;
    let _scheduler = env.scheduler(500, &[])?;
    let limit = LIMIT.as_secs().to_string();
    let _worker = env.worker(&[("HERALD_WORKER_MAX_DEFERRAL_S", &limit)])?;
    env.start(down).await?;
    env.start(paused).await?;

    // Every recipient of `paused` put off once; paused then, as if it had waited an hour
    // before the pause, and resumed.
    wait_until(Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT bool_and(deferred_since IS NOT NULL) FROM recipients WHERE campaign_id = $1",
        )
        .bind(paused)
        .fetch_one(&env.pool)
        .await
        .unwrap_or(false)
    })
    .await
    .map_err(|_| anyhow::anyhow!("the recipients were never put off"))?;
    assert_eq!(
        transition(&env.pool, paused, Transition::Pause).await?,
        None
    );
    // What was in flight at the pause is recorded (or its lease runs out) before the clock
    // is set back: a paused campaign's recipients are leased no more.
    wait_until(Duration::from_secs(30), || async {
        env.states(paused)
            .await
            .is_ok_and(|s| !s.contains_key("sending"))
    })
    .await
    .map_err(|_| anyhow::anyhow!("the paused campaign's work never settled"))?;
    sqlx::query(
        "UPDATE recipients SET deferred_since = deferred_since - interval '1 hour'
         WHERE campaign_id = $1",
    )
    .bind(paused)
    .execute(&env.pool)
    .await?;
    assert_eq!(
        transition(&env.pool, paused, Transition::Resume).await?,
        None
    );

    env.wait_completed(&[down, paused], Duration::from_secs(90))
        .await?;
    for campaign in [down, paused] {
        let states = env.states(campaign).await?;
        assert_eq!(states.get("failed"), Some(&10), "{states:?}");
        // Failed for being put off, not for an attempt: none was spent.
        let (charged, reason): (i32, bool) = sqlx::query_as(
            "SELECT max(attempts - throttles), bool_and(last_error LIKE '%deferral limit%')
             FROM recipients WHERE campaign_id = $1",
        )
        .bind(campaign)
        .fetch_one(&env.pool)
        .await?;
        assert_eq!((charged, reason), (0, true));
    }
    // Those put off before the pause counted from the resume, not from an hour ago.
    let soonest: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM min(r.updated_at) - c.resumed_at)::float8
         FROM recipients r JOIN campaigns c ON c.id = r.campaign_id
         WHERE r.campaign_id = $1 GROUP BY c.resumed_at",
    )
    .bind(paused)
    .fetch_one(&env.pool)
    .await?;
    assert!(
        soonest >= LIMIT.as_secs_f64(),
        "a recipient failed {soonest:.1} s after the resume, within the limit"
    );
    assert_eq!(env.simulator_stats().await?["accepted"], 0);
    Ok(())
}
