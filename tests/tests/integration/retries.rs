//! Transient failures retry with backoff; permanent ones fail at once; garbage is dead-lettered.

use herald_shared::queue::topology;
use herald_tests::{Result, TestEnv, numbers};
use lapin::options::ConfirmSelectOptions;
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_500s_then_success_is_sent_after_four_attempts_with_backoff() -> Result<()> {
    let env = TestEnv::new(&[
        "--fail-first",
        "3",
        "--fail-status",
        "500",
        "--reject-prefix",
        "+1999",
    ])
    .await?;
    let mut provider = env.provider();
    provider.max_attempts = 5;
    provider.retry_base_ms = 400;
    let provider = env.create_provider(&provider).await?;
    // A 500 may have been sent: retried at once only by a provider that honours the
    // idempotency key (a generic one may); by default it would wait for a receipt.
    sqlx::query("UPDATE providers SET unknown_outcome = 'retry' WHERE id = $1")
        .bind(provider)
        .execute(&env.pool)
        .await?;
    let tenant = env.tenant("acme", 1).await?;
    let mut addresses = numbers("+1555400", 3);
    addresses.push("+19990000001".into());
    let campaign = env
        .campaign(tenant, provider, "flaky", &addresses, 100)
        .await?;
    let _scheduler = env.scheduler(250, &[])?;
    let _worker = env.worker(&[])?;
    env.start(campaign).await?;
    env.wait_completed(&[campaign], Duration::from_secs(60))
        .await?;

    let rows: Vec<(i64, String, String, i32, Option<String>)> = sqlx::query_as(
        "SELECT id, address, state, attempts, last_error FROM recipients WHERE campaign_id = $1 ORDER BY id",
    )
    .bind(campaign)
    .fetch_all(&env.pool)
    .await?;
    for (id, address, state, attempts, last_error) in rows {
        let key = format!("herald-{}-{id}", campaign.simple());
        let history = env.simulator_requests(&key).await?;
        let history = history.as_array().cloned().unwrap_or_default();
        let statuses: Vec<i64> = history
            .iter()
            .filter_map(|r| r["status"].as_i64())
            .collect();
        if address.starts_with("+1999") {
            // 400: permanent, failed at once, one request, the provider's error kept.
            assert_eq!((state.as_str(), attempts), ("failed", 1));
            assert_eq!(statuses, vec![400]);
            assert!(last_error.unwrap_or_default().contains("400"));
            continue;
        }
        assert_eq!((state.as_str(), attempts), ("sent", 4), "{address}");
        assert_eq!(statuses, vec![500, 500, 500, 200], "{address}");
        // Each retry waited at least the lower edge of its jittered backoff (base·2^(k-1)/2).
        let arrivals: Vec<i64> = history
            .iter()
            .filter_map(|r: &Value| r["arrived_ms"].as_i64())
            .collect();
        for (k, pair) in arrivals.windows(2).enumerate() {
            let min_gap = 400 * (1 << k) / 2;
            assert!(
                pair[1] - pair[0] >= min_gap,
                "retry {} of {address} came after {} ms",
                k + 1,
                pair[1] - pair[0]
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_message_lands_in_the_dead_letter_queue() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let mut worker = env.worker(&[])?;
    let connection = env.amqp().await?;
    let channel = connection.create_channel().await?;
    topology::declare(&channel).await?;
    topology::declare_lane(&channel, provider).await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    crate::dispatch::publish_to_lane(&channel, provider, b"{this is not a dispatch message")
        .await?;
    let dead_lettered = herald_tests::wait_until(Duration::from_secs(20), || {
        let channel = channel.clone();
        async move {
            topology::ready_messages(&channel, topology::DEAD_LETTER_QUEUE)
                .await
                .is_ok_and(|n| n == 1)
        }
    })
    .await;
    assert!(
        dead_lettered.is_ok(),
        "the message did not reach {}",
        topology::DEAD_LETTER_QUEUE
    );
    assert_eq!(
        topology::ready_messages(&channel, &topology::lane_queue(provider)).await?,
        0
    );
    assert_eq!(env.simulator_stats().await?["requests"], 0);
    assert!(
        worker.wait(Duration::from_millis(10)).await.is_none(),
        "the worker survives a poison message"
    );
    Ok(())
}

/// A lease that runs out keeps what is known of the attempt's request: the attempt it made
/// (at a provider that deduplicates, `retry`: asked again there, since no other knows its
/// key), or an earlier one whose answer was lost and that its worker had not yet ruled
/// out (it died between the lease and the ruling, so nothing was sent since). Recovered
/// with neither, the next attempt went anywhere with no lookup at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_runs_out_keeps_what_is_known_of_a_lost_answer() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let waits = env.twilio_provider("twilio_sms").await?;
    let dedups = env.create_provider(&env.provider()).await?;
    sqlx::query("UPDATE providers SET unknown_outcome = 'retry' WHERE id = $1")
        .bind(dedups)
        .execute(&env.pool)
        .await?;
    let tenant = env.tenant("acme", 1).await?;
    let campaign = env
        .campaign(tenant, waits, "c", &numbers("+1555990", 3), 100)
        .await?;
    let ids = env.recipient_ids(campaign).await?;
    // Both were sent to `dedups` a minute ago under leases now run out; the first had an
    // earlier attempt at `waits` whose answer was lost ten minutes ago.
    sqlx::query(
        "UPDATE recipients SET state = 'sending', attempts = 1, sent_via = $2,
                attempted_at = now() - interval '1 minute', lease_until = now() - interval '1 second'
         WHERE campaign_id = $1",
    )
    .bind(campaign)
    .bind(dedups)
    .execute(&env.pool)
    .await?;
    earlier_lost_attempt(&env, ids[0], waits).await?;
    // The third was on its last attempt.
    sqlx::query("UPDATE recipients r SET attempts = p.max_attempts FROM providers p WHERE r.id = $1 AND p.id = $2")
        .bind(ids[2])
        .bind(dedups)
        .execute(&env.pool)
        .await?;
    let recovered = herald_store::recipients::sweep::recover_expired_leases(&env.pool).await?;
    assert_eq!(recovered, 3);
    let rows: Vec<(String, Option<uuid::Uuid>, bool)> = sqlx::query_as(
        "SELECT state, unknown_via,
                CASE WHEN id = $2 THEN outcome_unknown_at < now() - interval '9 minutes'
                     ELSE outcome_unknown_at = attempted_at END
         FROM recipients WHERE campaign_id = $1 ORDER BY id",
    )
    .bind(campaign)
    .bind(ids[0])
    .fetch_all(&env.pool)
    .await?;
    assert_eq!(
        rows,
        vec![
            // `dedups`' policy: due again at once, the earlier attempt looked up first.
            ("pending".to_owned(), Some(waits), true),
            ("pending".to_owned(), Some(dedups), true),
            // No attempt left: not failed while it may have been sent, but waiting for a
            // receipt.
            ("unknown".to_owned(), Some(dedups), true),
        ]
    );
    Ok(())
}

/// A worker whose outcome could not be written before its lease ran out (a database stall)
/// learnt that nothing went out: a throttle, a refusal, a request that never left. The
/// sweeper meanwhile guessed the attempt may have been sent (`unknown`, dated from its
/// start); the outcome replaces the guess, or the next attempt would look for a message
/// never created (and, at a provider whose lost answers fail, fail the recipient). An
/// earlier attempt not yet ruled out stays known.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_that_nothing_went_out_replaces_the_sweepers_guess() -> Result<()> {
    use herald_worker::attempts::{Dispatch, outcome};
    use herald_worker::outcome::Decision;
    let env = TestEnv::new(&[]).await?;
    let provider = env.twilio_provider("twilio_sms").await?;
    let tenant = env.tenant("acme", 1).await?;
    let campaign = env
        .campaign(tenant, provider, "c", &numbers("+1555991", 2), 100)
        .await?;
    let ids = env.recipient_ids(campaign).await?;
    let token = Uuid::new_v4();
    sqlx::query(
        "UPDATE recipients SET state = 'sending', dispatch_seq = 1, attempts = 1, sent_via = $2,
                attempted_at = now() - interval '1 minute', lease_until = now() - interval '1 second',
                lease_token = $3
         WHERE campaign_id = $1",
    )
    .bind(campaign)
    .bind(provider)
    .bind(token)
    .execute(&env.pool)
    .await?;
    // The second had an earlier attempt whose answer was lost, not yet ruled out.
    earlier_lost_attempt(&env, ids[1], provider).await?;
    assert_eq!(
        herald_store::recipients::sweep::recover_expired_leases(&env.pool).await?,
        2
    );
    let outcomes: Vec<_> = ids
        .iter()
        .map(|&id| {
            let dispatch = Dispatch {
                token,
                ..Dispatch::new(id, 1, provider)
            };
            outcome(
                dispatch,
                provider,
                &Decision::Deferred {
                    error: "throttled".into(),
                    delay: Duration::ZERO,
                },
            )
        })
        .collect();
    herald_store::recipients::record::record(&env.pool, &outcomes, herald_tests::DAY).await?;
    let rows: Vec<(String, String, Option<uuid::Uuid>)> = sqlx::query_as(
        "SELECT state, CASE WHEN outcome_unknown_at IS NULL THEN 'none'
                            WHEN outcome_unknown_at < now() - interval '9 minutes' THEN 'earlier'
                            ELSE 'this attempt' END,
                unknown_via
         FROM recipients WHERE campaign_id = $1 ORDER BY id",
    )
    .bind(campaign)
    .fetch_all(&env.pool)
    .await?;
    assert_eq!(
        rows,
        vec![
            ("pending".to_owned(), "none".to_owned(), None),
            ("pending".to_owned(), "earlier".to_owned(), Some(provider)),
        ]
    );
    Ok(())
}

/// A campaign of one recipient (its number from `prefix`) through a provider at this test's
/// simulator, running as the scheduler makes it: (provider, campaign, recipient).
async fn one_running_recipient(env: &TestEnv, prefix: &str) -> Result<(Uuid, Uuid, i64)> {
    let provider = env.create_provider(&env.provider()).await?;
    let tenant = env.tenant("acme", 1).await?;
    let campaign = env
        .campaign(tenant, provider, "c", &numbers(prefix, 1), 100)
        .await?;
    sqlx::query("UPDATE campaigns SET status = 'running', started_at = now() WHERE id = $1")
        .bind(campaign)
        .execute(&env.pool)
        .await?;
    let id = env.recipient_ids(campaign).await?[0];
    Ok((provider, campaign, id))
}

/// A lease or outcome statement whose commit the worker never heard of (its connection broke
/// after the commit, or a statement given up at its deadline ran late) is tried again. The
/// lease's retry finds the recipient under its own lease and the request is made (before:
/// acked unsent, and the sweeper judged an attempt never made like a lost answer, failing
/// the recipient unsent when no attempt was left); the outcome's retry changes nothing
/// (before: a throttle was counted twice, giving an attempt back). Another delivery of the
/// same message still finds the recipient taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_or_outcome_tried_again_after_its_commit_was_lost_holds_once() -> Result<()> {
    use herald_store::recipients::{lease, record};
    use herald_worker::attempts::{Dispatch, outcome};
    use herald_worker::outcome::Decision;
    let env = TestEnv::new(&[]).await?;
    let (provider, _, id) = one_running_recipient(&env, "+1555992").await?;
    let seq: i32 = sqlx::query_scalar("SELECT dispatch_seq FROM recipients WHERE id = $1")
        .bind(id)
        .fetch_one(&env.pool)
        .await?;
    let dispatch = Dispatch::new(id, seq, provider);
    let grace = Duration::from_secs(1);
    let first = lease::begin(&env.pool, &[dispatch], grace).await?;
    assert!(first[0].is_some(), "{first:?}");
    let again = lease::begin(&env.pool, &[dispatch], grace).await?;
    assert_eq!(again, first, "the retry finds its own lease");
    let other = lease::begin(&env.pool, &[Dispatch::new(id, seq, provider)], grace).await?;
    assert_eq!(
        other,
        vec![None],
        "another delivery finds the recipient taken"
    );

    let row = || async {
        sqlx::query_as::<_, (String, i32, i32, f64)>(
            "SELECT state, attempts, throttles, extract(epoch FROM next_attempt_at)::float8
             FROM recipients WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&env.pool)
        .await
    };
    let throttled = outcome(
        dispatch,
        provider,
        &Decision::Throttled {
            error: "HTTP 429".into(),
            delay: Duration::from_secs(60),
        },
    );
    record::record(
        &env.pool,
        std::slice::from_ref(&throttled),
        herald_tests::DAY,
    )
    .await?;
    let recorded = row().await?;
    assert_eq!(
        (recorded.0.as_str(), recorded.1, recorded.2),
        ("pending", 1, 1),
        "one attempt, not counted"
    );
    record::record(
        &env.pool,
        std::slice::from_ref(&throttled),
        herald_tests::DAY,
    )
    .await?;
    assert_eq!(row().await?, recorded, "written again, changed nothing");
    Ok(())
}

/// Gives recipient `id` (on its first attempt) an earlier attempt at `via`, ten minutes ago,
/// whose answer was lost and that its worker had not yet ruled out.
async fn earlier_lost_attempt(env: &TestEnv, id: i64, via: Uuid) -> Result<()> {
    sqlx::query(
        "UPDATE recipients SET attempts = 2, outcome_unknown_at = now() - interval '10 minutes',
                unknown_via = $2 WHERE id = $1",
    )
    .bind(id)
    .bind(via)
    .execute(&env.pool)
    .await?;
    Ok(())
}

/// Only a provider putting a recipient off counts toward the deferral limit: Herald holding
/// a request back itself (its campaign's quiet hours began while the request waited, no send
/// slot in time) neither fails a recipient past the limit nor ends its run of deferrals, and
/// a provider's next deferral past the limit fails it. Quiet hours held recipients back for
/// a night, counted as deferrals, and a limit under a night failed them at their first 429
/// of the morning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_providers_deferrals_count_toward_the_limit() -> Result<()> {
    use herald_store::recipients::{lease, record};
    use herald_worker::attempts::{Dispatch, outcome};
    use herald_worker::outcome::Decision;
    let env = TestEnv::new(&[]).await?;
    let (provider, campaign, id) = one_running_recipient(&env, "+1555993").await?;
    // Put off by its provider since two days ago.
    sqlx::query("UPDATE recipients SET deferred_since = now() - interval '2 days' WHERE id = $1")
        .bind(id)
        .execute(&env.pool)
        .await?;
    let env = &env;
    // An attempt leased while the campaign runs; `meanwhile` changes its campaign before the
    // outcome is written.
    let attempt = |decision: Decision, meanwhile: &'static str| async move {
        let seq: i32 = sqlx::query_scalar(
            "UPDATE recipients SET dispatch_seq = dispatch_seq + 1, state = 'queued'
             WHERE id = $1 RETURNING dispatch_seq",
        )
        .bind(id)
        .fetch_one(&env.pool)
        .await?;
        let dispatch = Dispatch::new(id, seq, provider);
        let leased = lease::begin(&env.pool, &[dispatch], Duration::from_secs(5)).await?;
        anyhow::ensure!(leased[0].is_some(), "not leased: {leased:?}");
        sqlx::query(meanwhile)
            .bind(campaign)
            .execute(&env.pool)
            .await?;
        let done = outcome(dispatch, provider, &decision);
        record::record(&env.pool, &[done], herald_tests::DAY).await?;
        Ok::<_, anyhow::Error>(
            sqlx::query_as::<_, (String, bool)>(
                "SELECT state, deferred_since < now() - interval '1 day' FROM recipients WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&env.pool)
            .await?,
        )
    };
    const NOTHING: &str = "SELECT $1::uuid";
    let held_back = attempt(
        Decision::Postponed {
            error: "its campaign stopped sending (quiet hours) while the request waited".into(),
            delay: Duration::ZERO,
        },
        NOTHING,
    )
    .await?;
    assert_eq!(
        held_back,
        ("pending".into(), true),
        "held back by Herald: not failed, the run of deferrals kept"
    );
    let put_off = || Decision::Deferred {
        error: "HTTP 503".into(),
        delay: Duration::ZERO,
    };
    // Its campaign expired while the request was out: left to the sweeper to end `expired`.
    let expired = attempt(
        put_off(),
        "UPDATE campaigns SET expires_at = now() - interval '1 second' WHERE id = $1",
    )
    .await?;
    assert_eq!(expired.0, "pending", "not failed: its campaign expired");
    sqlx::query("UPDATE campaigns SET expires_at = NULL WHERE id = $1")
        .bind(campaign)
        .execute(&env.pool)
        .await?;
    let put_off = attempt(put_off(), NOTHING).await?;
    assert_eq!(
        put_off.0, "failed",
        "put off by its provider past the limit"
    );
    Ok(())
}

/// A lease that ran out is an attempt made (it may have been sent): it ends the run of
/// deferrals before it, as an outcome that judged the recipient does. Kept, the first lookup
/// the provider did not answer after it failed at once a recipient put off for most of a
/// day before the attempt, as "no attempt spent".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_ran_out_ends_the_run_of_deferrals() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let (provider, _, id) = one_running_recipient(&env, "+1555994").await?;
    sqlx::query(
        "UPDATE recipients SET state = 'sending', attempts = 1, dispatch_seq = 1,
                attempted_at = now() - interval '1 minute', sent_via = $2,
                lease_until = now() - interval '1 second',
                deferred_since = now() - interval '23 hours'
         WHERE id = $1",
    )
    .bind(id)
    .bind(provider)
    .execute(&env.pool)
    .await?;
    let recovered = herald_store::recipients::sweep::recover_expired_leases(&env.pool).await?;
    assert_eq!(recovered, 1);
    let (state, deferred): (String, bool) =
        sqlx::query_as("SELECT state, deferred_since IS NOT NULL FROM recipients WHERE id = $1")
            .bind(id)
            .fetch_one(&env.pool)
            .await?;
    assert_eq!((state.as_str(), deferred), ("unknown", false));
    Ok(())
}
