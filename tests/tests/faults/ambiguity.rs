//! Ambiguous outcomes: a request the provider took whose answer never came back (a lost
//! answer, a worker killed mid-request) is settled by its receipt, never sent twice, against
//! a provider that, like Twilio, honours no idempotency key.

use herald_tests::{Result, TestEnv, numbers};
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

/// Counts at the end of an ambiguity run, printed for the record.
async fn report(env: &TestEnv, campaign: Uuid, what: &str) -> Result<Value> {
    let (states, deliveries) = (env.states(campaign).await?, env.deliveries(campaign).await?);
    let stats = env.simulator_stats().await?;
    let receipts: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts")
        .fetch_one(&env.pool)
        .await?;
    let reconciled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM recipients WHERE campaign_id = $1 AND attempts > 1",
    )
    .bind(campaign)
    .fetch_one(&env.pool)
    .await?;
    let summary = json!({
        "run": what, "states": states, "deliveries": deliveries, "receipts_stored": receipts,
        "recipients_with_more_than_one_attempt": reconciled,
        "simulator": {"requests": stats["requests"], "accepted": stats["accepted"],
                      "second_messages": stats["duplicates"], "answers_lost": stats["answers_lost"],
                      "receipts_posted": stats["receipts"]},
    });
    eprintln!("{summary}");
    Ok(summary)
}

/// 10,000 recipients through a Twilio-shaped provider that honours no idempotency key;
/// the simulator takes every request but drops 5% of the answers.
async fn ambiguity_run(kills: usize) -> Result<()> {
    let _alone = crate::suite::ALONE.lock().await;
    let total = 10_000;
    let mut env = TestEnv::new(&["--latency", "fixed:20", "--lose-rate", "0.05"]).await?;
    env.receiver().await?;
    let provider = env.twilio_provider("twilio_sms").await?;
    let tenant = env.tenant("acme", 1).await?;
    let campaign = env
        .campaign(tenant, provider, "c", &numbers("+1555800", total), 1_000)
        .await?;
    let _scheduler = env.scheduler(250, &[])?;
    let worker_env = [
        ("HERALD_WORKER_PREFETCH", "100"),
        ("HERALD_WORKER_LEASE_GRACE_MS", "1000"),
    ];
    let mut workers = [env.worker(&worker_env)?, env.worker(&worker_env)?];
    env.start(campaign).await?;
    for kill in 0..kills {
        let sent_at_least = (kill as i64 + 1) * 2_500;
        herald_tests::wait_until(Duration::from_secs(60), || async {
            env.states(campaign)
                .await
                .ok()
                .and_then(|s| s.get("sent").copied())
                .unwrap_or(0)
                >= sent_at_least
        })
        .await
        .map_err(|_| anyhow::anyhow!("no progress before kill {}", kill + 1))?;
        // SIGKILL mid-run, requests in flight; a replacement joins.
        workers[kill % 2].kill();
        workers[kill % 2] = env.worker(&worker_env)?;
    }
    env.wait_completed(&[campaign], Duration::from_secs(180))
        .await?;
    // The simulator posts a `sent` and a `delivered` receipt for every message it took,
    // including those whose answer it dropped: every recipient ends `delivered`.
    let all = i64::try_from(total)?;
    let delivered = herald_tests::wait_until(Duration::from_secs(60), || async {
        env.deliveries(campaign)
            .await
            .is_ok_and(|d| d.get("delivered") == Some(&all))
    })
    .await;
    let summary = report(
        &env,
        campaign,
        if kills == 0 {
            "lost answers"
        } else {
            "lost answers and killed workers"
        },
    )
    .await?;
    let states = &summary["states"];
    assert_eq!(states["sent"], total, "{summary}");
    assert!(delivered.is_ok(), "every recipient delivered: {summary}");
    assert_eq!(
        summary["simulator"]["second_messages"], 0,
        "no recipient got two messages: {summary}"
    );
    assert_eq!(summary["simulator"]["accepted"], total, "{summary}");
    assert!(
        summary["simulator"]["answers_lost"].as_i64().unwrap_or(0) > 100,
        "answers were lost: {summary}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_are_settled_by_receipts_never_resent() -> Result<()> {
    ambiguity_run(0).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_requests_are_settled_by_receipts_never_resent() -> Result<()> {
    ambiguity_run(2).await
}
