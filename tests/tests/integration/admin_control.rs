//! Campaign controls end to end: the admin API steering a running scheduler and worker.
//! Pause/resume, quiet hours, expiry and cancel, checked at the provider (the simulator).

use herald_tests::{Admin, Result, TestEnv, wait_until};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

const TICK_MS: u64 = 500;

struct Setup {
    env: TestEnv,
    admin: Admin,
    key: String,
    provider: String,
}

async fn setup(latency: &str) -> Result<Setup> {
    let env = TestEnv::new(&["--latency", latency]).await?;
    let admin = env.admin().await?;
    let (_, key, provider) = admin
        .tenant_with_provider("acme", &env.simulator_url)
        .await?;
    Ok(Setup {
        env,
        admin,
        key,
        provider,
    })
}

impl Setup {
    /// A campaign of `n` recipients (created and uploaded through the API); returns its id.
    async fn campaign(&self, n: usize, extra: Value) -> Result<String> {
        let mut body = json!({"name": "c", "provider_id": self.provider, "channel": "sms",
                              "template": "Hi {{first_name}}", "batch_size": 200});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let campaign = self
            .admin
            .ok(&self.key, Method::POST, "/campaigns", Some(body))
            .await?;
        let id = campaign["id"].as_str().unwrap_or_default().to_owned();
        let mut csv = String::from("address,first_name\n");
        for i in 0..n {
            csv.push_str(&format!("+1555{i:07},R{i}\n"));
        }
        let (status, answer) = self
            .admin
            .upload(
                &self.key,
                &format!("/campaigns/{id}/recipients"),
                "text/csv",
                csv,
            )
            .await?;
        anyhow::ensure!(status == 200, "upload: {answer}");
        Ok(id)
    }

    async fn action(&self, id: &str, action: &str) -> Result<Value> {
        self.admin
            .ok(
                &self.key,
                Method::POST,
                &format!("/campaigns/{id}/{action}"),
                None,
            )
            .await
    }

    async fn progress(&self, id: &str) -> Result<Value> {
        self.admin
            .ok(
                &self.key,
                Method::GET,
                &format!("/campaigns/{id}/progress"),
                None,
            )
            .await
    }

    async fn requests(&self, id: &str) -> Result<i64> {
        Ok(
            self.env.simulator_stats().await?["per_campaign"][id]["requests"]
                .as_i64()
                .unwrap_or(0),
        )
    }

    /// Polls progress until `done` holds for it; returns the last progress read.
    async fn wait_progress(
        &self,
        id: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let progress = self.progress(id).await?;
            if done(&progress) {
                return Ok(progress);
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "gave up waiting after {timeout:?}: {progress}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> Result<Value> {
        self.wait_progress(id, timeout, |p| p["status"] == status)
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_sends_within_a_tick_and_resume_finishes_exactly_once() -> Result<()> {
    // 20 in flight at 100 ms: about 200 msg/s, so 3,000 recipients take ~15 s.
    let s = setup("fixed:100").await?;
    let id = s.campaign(3_000, json!({})).await?;
    // No requeue window within the test: a first attempt parked while its campaign's row was
    // locked by another lease must be due again at the next sweep
    // (`dispatch::a_cursor_a_busy_campaign…`), not a window after its claim (once 66 s).
    let _scheduler = s
        .env
        .scheduler(TICK_MS, &[("HERALD_SCHEDULER_REQUEUE_AFTER_MS", "600000")])?;
    let _worker = s.env.worker(&[("HERALD_WORKER_PREFETCH", "20")])?;
    s.action(&id, "start").await?;
    wait_until(Duration::from_secs(20), || async {
        s.requests(&id).await.is_ok_and(|n| n > 300)
    })
    .await
    .map_err(|_| anyhow::anyhow!("the campaign did not get going"))?;

    let paused = s.action(&id, "pause").await?;
    assert_eq!(paused["status"], "paused");
    // A retried pause (its answer lost) is answered as the first was.
    let again = s.action(&id, "pause").await?;
    assert_eq!(again["status"], "paused", "{again}");
    // Within a tick the scheduler stops releasing, the worker hands back what is queued, and
    // what was in flight (100 ms requests) finishes: counted from a tick after the pause.
    tokio::time::sleep(Duration::from_millis(TICK_MS)).await;
    let at_pause = s.requests(&id).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = s.requests(&id).await?;
    assert_eq!(at_pause, later, "no sends while paused");
    let progress = s.progress(&id).await?;
    assert!(
        progress["pending"].as_i64().unwrap_or(0) > 1_000,
        "{progress}"
    );
    assert_eq!(progress["sending"], 0, "{progress}");
    assert!(
        progress["eta_seconds"].is_null(),
        "no ETA while paused: {progress}"
    );

    let resumed = s.action(&id, "resume").await?;
    assert_eq!(resumed["status"], "running");
    let again = s.action(&id, "resume").await?;
    assert_eq!(again["status"], "running", "{again}");
    // The whole test takes about 24 s.
    let done = s
        .wait_status(&id, "completed", Duration::from_secs(60))
        .await?;
    assert_eq!(done["sent"], 3_000, "{done}");
    let stats = s.env.simulator_stats().await?;
    assert_eq!(
        stats["per_campaign"][&id]["requests"], 3_000,
        "each recipient exactly once"
    );
    assert_eq!(stats["duplicates"], 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_hold_everything_until_the_window_closes() -> Result<()> {
    let s = setup("fixed:0").await?;
    let id = s
        .campaign(
            500,
            json!({"quiet_hours": {"start": "00:00", "end": "00:01", "time_zone": "UTC"}}),
        )
        .await?;
    // The API takes HH:MM; for a test that cannot wait for a clock minute, move the window
    // so that it closes 4 s from now (seconds are stored; the evaluation is the same).
    let closes_ms: i64 = sqlx::query_scalar(
        "UPDATE campaigns SET quiet_start = (now() AT TIME ZONE 'UTC')::time - interval '1 hour',
                              quiet_end = (now() AT TIME ZONE 'UTC')::time + interval '4 seconds'
         WHERE id = $1::uuid
         RETURNING (extract(epoch FROM now() + interval '4 seconds') * 1000)::int8",
    )
    .bind(&id)
    .fetch_one(&s.env.pool)
    .await?;
    let _scheduler = s.env.scheduler(TICK_MS, &[])?;
    let _worker = s.env.worker(&[])?;
    s.action(&id, "start").await?;
    tokio::time::sleep(Duration::from_millis(2 * TICK_MS)).await;
    assert_eq!(
        s.requests(&id).await?,
        0,
        "nothing is sent inside the window"
    );
    assert_eq!(s.progress(&id).await?["status"], "running");

    let done = s
        .wait_status(&id, "completed", Duration::from_secs(30))
        .await?;
    assert_eq!(done["sent"], 500, "{done}");
    let stats = s.env.simulator_stats().await?;
    let first = stats["per_campaign"][&id]["first_request_ms"]
        .as_i64()
        .unwrap_or(0);
    assert!(
        first >= closes_ms,
        "first send {first} ms before the window closed at {closes_ms}"
    );
    assert_eq!(stats["per_campaign"][&id]["requests"], 500);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_ends_unsent_recipients_and_nothing_is_sent_late() -> Result<()> {
    // ~100 msg/s: 5,000 recipients cannot all go out before the 6 s expiry. The services start
    // first so that a loaded CI machine's start-up does not eat the window before any send.
    let s = setup("fixed:100").await?;
    let _scheduler = s.env.scheduler(TICK_MS, &[])?;
    let _worker = s.env.worker(&[("HERALD_WORKER_PREFETCH", "10")])?;
    let expires = chrono::Utc::now() + chrono::Duration::seconds(6);
    let id = s
        .campaign(5_000, json!({"expires_at": expires.to_rfc3339()}))
        .await?;
    s.action(&id, "start").await?;

    let done = s
        .wait_status(&id, "completed", Duration::from_secs(30))
        .await?;
    let (sent, expired) = (
        done["sent"].as_i64().unwrap_or(0),
        done["expired"].as_i64().unwrap_or(0),
    );
    assert!(sent > 0 && expired > 0, "{done}");
    assert_eq!(
        sent + expired,
        5_000,
        "every recipient ended sent or expired: {done}"
    );
    let stats = s.env.simulator_stats().await?;
    let last = stats["per_campaign"][&id]["last_request_ms"]
        .as_i64()
        .unwrap_or(i64::MAX);
    // The worker checks expiry right before the call; the margin covers the hop from that
    // check to the provider's clock reading, not a late release.
    assert!(
        last <= expires.timestamp_millis() + 100,
        "a request arrived {} ms after expiry",
        last - expires.timestamp_millis()
    );
    assert_eq!(stats["per_campaign"][&id]["requests"].as_i64(), Some(sent));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_ends_every_waiting_recipient() -> Result<()> {
    let s = setup("fixed:100").await?;
    let id = s.campaign(2_000, json!({})).await?;
    let _scheduler = s.env.scheduler(TICK_MS, &[])?;
    let _worker = s.env.worker(&[("HERALD_WORKER_PREFETCH", "10")])?;
    s.action(&id, "start").await?;
    wait_until(Duration::from_secs(20), || async {
        s.requests(&id).await.is_ok_and(|n| n > 50)
    })
    .await
    .map_err(|_| anyhow::anyhow!("the campaign did not get going"))?;
    assert_eq!(s.action(&id, "cancel").await?["status"], "cancelled");
    let last = s
        .wait_progress(&id, Duration::from_secs(20), |p| {
            ["sent", "cancelled", "failed"]
                .iter()
                .map(|k| p[*k].as_i64().unwrap_or(0))
                .sum::<i64>()
                == 2_000
        })
        .await?;
    let sent = last["sent"].as_i64().unwrap_or(0);
    assert_eq!(
        s.requests(&id).await?,
        sent,
        "nothing sent after being cancelled"
    );
    // Nothing of it left to end: settled, so the tick's sweep no longer looks at it.
    wait_until(Duration::from_secs(10), || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT settled_at IS NOT NULL FROM campaigns WHERE id = $1::uuid",
        )
        .bind(&id)
        .fetch_one(&s.env.pool)
        .await
        .unwrap_or(false)
    })
    .await
    .map_err(|_| anyhow::anyhow!("the cancelled campaign was never settled"))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_or_resuming_a_campaign_does_not_wait_for_the_next_tick() -> Result<()> {
    // 20 in flight at 100 ms: about 200 msg/s.
    let s = setup("fixed:100").await?;
    let id = s.campaign(2_000, json!({})).await?;
    // Ticks 20 s apart: the first comes at once (nothing is running yet), the next long
    // after each step below must have happened.
    let scheduler = s.env.scheduler(20_000, &[])?;
    let _worker = s.env.worker(&[("HERALD_WORKER_PREFETCH", "20")])?;
    // Until a live worker says it may send to the lane, nothing is published to it.
    s.env.wait_live_worker(&s.provider).await?;
    let within = Duration::from_secs(5);

    let started = std::time::Instant::now();
    s.action(&id, "start").await?;
    wait_until(within, || async {
        s.requests(&id).await.is_ok_and(|n| n > 0)
    })
    .await
    .map_err(|_| anyhow::anyhow!("no send within {within:?} of the start: it waited for a tick"))?;
    eprintln!("first send {:?} after the start", started.elapsed());
    wait_until(Duration::from_secs(10), || async {
        s.requests(&id).await.is_ok_and(|n| n > 200)
    })
    .await
    .map_err(|_| anyhow::anyhow!("the campaign did not get going"))?;

    s.action(&id, "pause").await?;
    // What was queued is handed back and the in-flight requests finish; the pause wakes
    // the scheduler, whose top-ups after that find nothing running (planned from what the
    // tick measured, they would claim the paused campaign's recipients until the next
    // tick, for the lease to hold back).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let paused = s.requests(&id).await?;
    let claimed = |metrics: &str| {
        herald_tests::metric_sum(metrics, "herald_scheduler_claimed_total", &[]).unwrap_or(0.0)
    };
    let claimed_paused = claimed(&s.env.scrape(&scheduler).await?);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(s.requests(&id).await?, paused, "no sends while paused");
    assert_eq!(
        claimed(&s.env.scrape(&scheduler).await?),
        claimed_paused,
        "no claims while paused"
    );

    let resumed = std::time::Instant::now();
    s.action(&id, "resume").await?;
    wait_until(within, || async {
        s.requests(&id).await.is_ok_and(|n| n > paused)
    })
    .await
    .map_err(|_| {
        anyhow::anyhow!("no send within {within:?} of the resume: it waited for a tick")
    })?;
    eprintln!("first send {:?} after the resume", resumed.elapsed());
    // The counter is raised once the wake's batch is confirmed, which may be just after
    // its first request.
    let counted = wait_until(Duration::from_secs(5), || async {
        s.env.scrape(&scheduler).await.is_ok_and(|metrics| {
            herald_tests::metric_sum(&metrics, "herald_scheduler_wakes_total", &[])
                .is_some_and(|n| n >= 3.0)
        })
    })
    .await;
    assert!(
        counted.is_ok(),
        "the start, the pause and the resume each woke the scheduler"
    );
    assert_eq!(s.env.simulator_stats().await?["duplicates"], 0);
    Ok(())
}

/// A request to a rate-limited provider may wait seconds after its lease for its send slot
/// (a throttle's `Retry-After` moves every slot of the provider later, fleet-wide). What
/// happens to its campaign meanwhile still holds: a pause or a cancel holds the request back
/// (it asks just before its slot), and no slot is granted past the expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_cancel_or_expiry_holds_back_requests_waiting_for_a_send_slot() -> Result<()> {
    const RECIPIENTS: i64 = 20;
    let s = setup("fixed:0").await?;
    let paused = s.campaign(RECIPIENTS as usize, json!({})).await?;
    let cancelled = s.campaign(RECIPIENTS as usize, json!({})).await?;
    let expiring = s.campaign(RECIPIENTS as usize, json!({})).await?;
    let uuid = |id: &str| id.parse::<uuid::Uuid>();
    let campaigns = [uuid(&paused)?, uuid(&cancelled)?, uuid(&expiring)?];
    // Paced at 10 a second, and throttled as a Retry-After of 5 s would leave it: every
    // request leased from now on would wait for a slot at least 5 s away, within its lease.
    // The expiring campaign ends 3.5 s from now, before the first slot.
    sqlx::query("UPDATE providers SET rate_limit = 10, rate_window_ms = 1000 WHERE id = $1::uuid")
        .bind(&s.provider)
        .execute(&s.env.pool)
        .await?;
    let _scheduler = s.env.scheduler(TICK_MS, &[])?;
    let _worker = s.env.worker(&[])?;
    s.env.wait_live_worker(&s.provider).await?;
    sqlx::query(
        "INSERT INTO provider_pacing (provider_id, next_at) VALUES ($1::uuid, clock_timestamp() + interval '5 seconds')
         ON CONFLICT (provider_id) DO UPDATE SET next_at = excluded.next_at",
    )
    .bind(&s.provider)
    .execute(&s.env.pool)
    .await?;
    sqlx::query("UPDATE campaigns SET expires_at = now() + interval '3.5 seconds' WHERE id = $1")
        .bind(campaigns[2])
        .execute(&s.env.pool)
        .await?;
    let first_slot = std::time::Instant::now() + Duration::from_secs(5);
    for id in [&paused, &cancelled, &expiring] {
        s.action(id, "start").await?;
    }
    // The paused and cancelled campaigns have requests leased and waiting for their slots.
    let env = &s.env;
    let sending = move |campaign: uuid::Uuid| async move {
        env.states(campaign)
            .await
            .map_or(0, |states| states.get("sending").copied().unwrap_or(0))
    };
    let leased = || async {
        let mut all = true;
        for campaign in &campaigns[..2] {
            all &= sending(*campaign).await > 0;
        }
        all
    };
    wait_until(Duration::from_secs(3), leased)
        .await
        .map_err(|_| anyhow::anyhow!("the campaigns' requests were not all leased in time"))?;
    s.action(&paused, "pause").await?;
    s.action(&cancelled, "cancel").await?;
    anyhow::ensure!(
        std::time::Instant::now() + Duration::from_millis(500) < first_slot,
        "too slow to act before the first slot; the test proves nothing"
    );

    // The slots come and every waiting request has left or been handed back: nothing of
    // the three campaigns was sent.
    tokio::time::sleep_until(first_slot.into()).await;
    let settled = || async {
        let mut none = true;
        for campaign in campaigns {
            none &= sending(campaign).await == 0;
        }
        none
    };
    wait_until(Duration::from_secs(10), settled)
        .await
        .map_err(|_| anyhow::anyhow!("requests still waiting 10 s after their slots"))?;
    for id in [&paused, &cancelled, &expiring] {
        assert_eq!(
            s.requests(id).await?,
            0,
            "campaign {id} sent after it stopped"
        );
    }
    s.wait_status(&cancelled, "cancelled", Duration::from_secs(10))
        .await?;
    let expired = s
        .wait_progress(&expiring, Duration::from_secs(20), |p| {
            p["expired"] == RECIPIENTS
        })
        .await?;
    assert_eq!(expired["sent"], 0, "{expired}");
    // Its requests were leased before the expiry, and handed back for want of a slot.
    let handed_back: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM recipients
         WHERE campaign_id = $1 AND last_error = 'no send slot before the expiry'",
    )
    .bind(campaigns[2])
    .fetch_one(&s.env.pool)
    .await?;
    assert!(
        handed_back > 0,
        "the expiring campaign's requests were never leased"
    );

    // The paused campaign's recipients were handed back whole: resumed, each is sent once.
    s.action(&paused, "resume").await?;
    let done = s
        .wait_status(&paused, "completed", Duration::from_secs(30))
        .await?;
    assert_eq!(done["sent"], RECIPIENTS, "{done}");
    assert_eq!(s.requests(&paused).await?, RECIPIENTS);
    let cancelled_states = s.env.states(campaigns[1]).await?;
    assert_eq!(
        cancelled_states.get("cancelled"),
        Some(&RECIPIENTS),
        "{cancelled_states:?}"
    );
    assert_eq!(s.env.simulator_stats().await?["duplicates"], 0);
    Ok(())
}

/// A recipient ended unsent (its campaign cancelled) while an earlier request of it may have
/// been sent, its answer lost, says so: `cancelled` alone reads as "never sent".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_ended_after_a_lost_answer_says_it_may_have_been_sent() -> Result<()> {
    let s = setup("fixed:0").await?;
    let id = s.campaign(3, json!({})).await?;
    // No scheduler nor worker: the recipients wait, one as after a lost answer.
    s.action(&id, "start").await?;
    sqlx::query(
        "UPDATE recipients SET attempts = 1, outcome_unknown_at = now() - interval '1 minute',
                next_attempt_at = now(), last_error = 'timed out'
         WHERE id = (SELECT min(id) FROM recipients WHERE campaign_id = $1::uuid)",
    )
    .bind(&id)
    .execute(&s.env.pool)
    .await?;
    s.action(&id, "cancel").await?;
    herald_store::recipients::sweep::end_waiting_recipients(&s.env.pool).await?;
    let ended: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT state, last_error FROM recipients WHERE campaign_id = $1::uuid ORDER BY id",
    )
    .bind(&id)
    .fetch_all(&s.env.pool)
    .await?;
    assert_eq!(ended.len(), 3);
    assert!(
        ended.iter().all(|(state, _)| state == "cancelled"),
        "{ended:?}"
    );
    let said = ended[0].1.as_deref().unwrap_or_default();
    assert!(
        said.contains("may have reached the recipient") && said.contains("(last: timed out)"),
        "{said}"
    );
    assert_eq!(ended[1].1, None, "one never tried says nothing");
    Ok(())
}
