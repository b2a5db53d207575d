//! End to end: every recipient ends in exactly one terminal state, sent exactly once.

use herald_shared::queue::message::{DispatchMessage, FORMAT_VERSION};
use herald_shared::queue::topology;
use herald_store::recipients::lease::{self, Dispatch};
use herald_tests::{Result, TestEnv, numbers};
use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use std::time::Duration;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_tenants_every_recipient_ends_once() -> Result<()> {
    let env = TestEnv::new(&["--latency", "uniform:5-30", "--reject-prefix", "+1999"]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let (a, b, c) = (
        env.tenant("acme", 1).await?,
        env.tenant("globex", 1).await?,
        env.tenant("initech", 2).await?,
    );
    // One campaign has 20 numbers the provider rejects with 400: they must fail, once.
    let mut mixed = numbers("+1555100", 180);
    mixed.extend(numbers("+1999000", 20));
    let campaigns = vec![
        env.campaign(a, provider, "a-1", &numbers("+1555000", 400), 100)
            .await?,
        env.campaign(a, provider, "a-2", &numbers("+1555001", 150), 100)
            .await?,
        env.campaign(b, provider, "b-1", &mixed, 100).await?,
        env.campaign(c, provider, "c-1", &numbers("+1555200", 250), 100)
            .await?,
    ];
    let _scheduler = env.scheduler(500, &[])?;
    let _w1 = env.worker(&[("HERALD_WORKER_PREFETCH", "50")])?;
    let _w2 = env.worker(&[("HERALD_WORKER_PREFETCH", "50")])?;
    for &campaign in &campaigns {
        env.start(campaign).await?;
    }
    env.wait_completed(&campaigns, Duration::from_secs(90))
        .await?;

    let (sent, failed, other): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state = 'sent'), count(*) FILTER (WHERE state = 'failed'),
                count(*) FILTER (WHERE state NOT IN ('sent', 'failed'))
         FROM recipients",
    )
    .fetch_one(&env.pool)
    .await?;
    assert_eq!((sent, failed, other), (980, 20, 0));
    let wrong_failures: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM recipients WHERE state = 'failed' AND (address NOT LIKE '+1999%' OR attempts <> 1)",
    )
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(
        wrong_failures, 0,
        "only the rejected numbers fail, each after one attempt"
    );
    let without_id: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM recipients WHERE state = 'sent' AND provider_message_id IS NULL",
    )
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(
        without_id, 0,
        "every sent recipient records the provider's message id"
    );

    let stats = env.simulator_stats().await?;
    assert_eq!(stats["by_status"]["200"], 980, "{stats}");
    assert_eq!(stats["accepted"], 980);
    assert_eq!(stats["duplicates"], 0, "no recipient was sent twice");
    assert_eq!(stats["requests"], 1000, "one request per recipient");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_finished_work_is_acked_without_a_provider_call() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let tenant = env.tenant("acme", 1).await?;
    let campaign = env
        .campaign(tenant, provider, "once", &numbers("+1555300", 20), 100)
        .await?;
    let _scheduler = env.scheduler(300, &[])?;
    let _worker = env.worker(&[])?;
    env.start(campaign).await?;
    env.wait_completed(&[campaign], Duration::from_secs(30))
        .await?;
    assert_eq!(env.simulator_stats().await?["requests"], 20);

    // Publish every finished recipient's message again: half one to an AMQP message, as a
    // scheduler from before batches did, half in one batch, as the scheduler does now.
    let rows = dispatches(&env, campaign).await?;
    let (_connection, channel) = confirming_channel(&env).await?;
    let messages = copies(&rows, tenant, campaign, provider);
    let (singles, batched) = messages.split_at(messages.len() / 2);
    let mut bodies: Vec<Vec<u8>> = singles.iter().map(DispatchMessage::encode).collect();
    bodies.push(herald_shared::queue::message::encode_batch(batched));
    for body in &bodies {
        publish_to_lane(&channel, provider, body).await?;
    }
    // The worker consumes them all (the queue empties)...
    let drained = herald_tests::wait_until(Duration::from_secs(20), || {
        let channel = channel.clone();
        async move {
            topology::ready_messages(&channel, &topology::lane_queue(provider))
                .await
                .is_ok_and(|n| n == 0)
        }
    })
    .await;
    assert!(drained.is_ok(), "redelivered messages were not consumed");
    tokio::time::sleep(Duration::from_secs(1)).await;
    // ...without a single further provider call, and nothing changes state.
    assert_eq!(env.simulator_stats().await?["requests"], 20);
    assert_eq!(env.states(campaign).await?.get("sent"), Some(&20));
    Ok(())
}

/// A worker consumes the lanes of providers in use, and a retired provider's only while
/// something unfinished names it (a campaign that checked it just before its retirement,
/// the race the retirement leaves open): that campaign is still sent, then its lane goes,
/// as does at once the lane of a retired provider nothing names. Each lane is a channel
/// and a consumer on every worker's connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_provider_keeps_its_lane_only_while_something_unfinished_names_it() -> Result<()>
{
    let env = TestEnv::new(&[]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let idle = env.create_provider(&env.provider()).await?;
    let tenant = env.tenant("acme", 1).await?;
    let campaign = env
        .campaign(tenant, provider, "late", &numbers("+1555500", 50), 50)
        .await?;
    let _worker = env.worker(&[])?;
    // The providers whose lanes the worker says (in its heartbeat) it takes.
    let lanes = || async {
        let caps: Vec<serde_json::Value> = sqlx::query_scalar("SELECT caps FROM workers")
            .fetch_all(&env.pool)
            .await
            .unwrap_or_default();
        caps.iter()
            .filter_map(serde_json::Value::as_object)
            .flat_map(|caps| caps.keys().cloned())
            .collect::<std::collections::HashSet<String>>()
    };
    let (provider_id, idle_id) = (provider.to_string(), idle.to_string());
    let both = herald_tests::wait_until(Duration::from_secs(15), || async {
        let lanes = lanes().await;
        lanes.contains(&provider_id) && lanes.contains(&idle_id)
    })
    .await;
    assert!(both.is_ok(), "lanes before: {:?}", lanes().await);

    sqlx::query("UPDATE providers SET retired_at = now() WHERE id = ANY($1)")
        .bind(vec![provider, idle])
        .execute(&env.pool)
        .await?;
    let idle_gone = herald_tests::wait_until(Duration::from_secs(15), || async {
        !lanes().await.contains(&idle_id)
    })
    .await;
    assert!(
        idle_gone.is_ok(),
        "a retired provider nothing names keeps its lane"
    );
    assert!(
        lanes().await.contains(&provider_id),
        "a retired provider a campaign still names lost its lane"
    );

    let _scheduler = env.scheduler(300, &[])?;
    env.start(campaign).await?;
    env.wait_completed(&[campaign], Duration::from_secs(30))
        .await?;
    assert_eq!(env.states(campaign).await?.get("sent"), Some(&50));
    let gone = herald_tests::wait_until(Duration::from_secs(15), || async {
        !lanes().await.contains(&provider_id)
    })
    .await;
    assert!(gone.is_ok(), "the lane stayed once its campaign completed");
    Ok(())
}

/// A lane no live worker may send to gets nothing (its batches would be cut for nobody):
/// the recipients wait in PostgreSQL, and the lane is filled as soon as a worker joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_published_until_a_worker_may_send() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let tenant = env.tenant("acme", 1).await?;
    let campaign = env
        .campaign(tenant, provider, "early", &numbers("+1555400", 400), 400)
        .await?;
    let _scheduler = env.scheduler(300, &[])?;
    env.start(campaign).await?;
    // Several ticks without a worker.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let connection = env.amqp().await?;
    let channel = connection.create_channel().await?;
    // The scheduler declared the lane (measuring it), and put nothing in it.
    let ready = topology::ready_messages(&channel, &topology::lane_queue(provider)).await?;
    assert_eq!(ready, 0, "published to a lane nobody can take");
    assert_eq!(env.states(campaign).await?.get("pending"), Some(&400));

    let _worker = env.worker(&[])?;
    env.wait_completed(&[campaign], Duration::from_secs(30))
        .await?;
    assert_eq!(env.states(campaign).await?.get("sent"), Some(&400));
    let stats = env.simulator_stats().await?;
    assert_eq!(stats["requests"], 400, "{stats}");
    assert_eq!(stats["duplicates"], 0, "{stats}");
    Ok(())
}

/// A batch's message is acked once its recipients are leased, not once their requests are
/// answered: a slow request holds up neither its batch's slot in the worker's prefetch nor
/// the lane behind it (the recipients are `sending`, the sweeper's if the worker dies).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_acked_once_its_recipients_are_leased() -> Result<()> {
    let env = TestEnv::new(&["--latency", "fixed:15000"]).await?;
    let mut slow = env.provider();
    slow.timeout_ms = 30_000;
    let provider = env.create_provider(&slow).await?;
    let tenant = env.tenant("acme", 1).await?;
    let campaign = env
        .campaign(tenant, provider, "slow", &numbers("+1555410", 40), 40)
        .await?;
    let _scheduler = env.scheduler(300, &[])?;
    let mut worker = env.worker(&[])?;
    env.start(campaign).await?;
    let out = herald_tests::wait_until(Duration::from_secs(8), || async {
        env.simulator_stats()
            .await
            .is_ok_and(|s| s["in_flight"].as_i64() == Some(40))
    })
    .await;
    assert!(out.is_ok(), "the 40 requests never were in flight together");
    // Killed with all 40 requests at the provider: whatever it had not acked, the broker
    // hands back to the lane as it drops the worker's consumer.
    worker.kill();
    let connection = env.amqp().await?;
    let channel = connection.create_channel().await?;
    let lane = topology::lane_queue(provider);
    let dropped = herald_tests::wait_until(Duration::from_secs(10), || async {
        consumers(&channel, &lane).await == Some(0)
    })
    .await;
    assert!(dropped.is_ok(), "the killed worker still consumes the lane");
    let ready = topology::ready_messages(&channel, &lane).await?;
    assert_eq!(
        ready, 0,
        "the worker held messages of recipients it had leased"
    );
    assert_eq!(env.states(campaign).await?.get("sending"), Some(&40));
    Ok(())
}

/// A campaign's first attempts are claimed by id range: the claim writes the campaign's
/// cursor, not the recipients, which stay `pending` (their `dispatch_seq` unchanged) until a
/// worker leases them. So two messages for one first attempt carry the same dispatch (a
/// cursor moved back while the first message was still queued publishes a second), and may
/// reach a worker together: the row's one lease goes to one of them, the other is acked
/// unsent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_messages_for_a_first_attempt_in_one_batch_send_once() -> Result<()> {
    const RECIPIENTS: i64 = 30;
    let env = TestEnv::new(&[]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let tenant = env.tenant("acme", 1).await?;
    let addresses = numbers("+1555430", RECIPIENTS as usize);
    let campaign = env
        .campaign(tenant, provider, "doubled", &addresses, 100)
        .await?;
    // No scheduler: the only messages are the test's, each recipient's twice in one batch.
    // So the campaign is made running here, as the scheduler would at its start.
    let _worker = env.worker(&[])?;
    sqlx::query("UPDATE campaigns SET status = 'running', started_at = now() WHERE id = $1")
        .bind(campaign)
        .execute(&env.pool)
        .await?;
    let rows = dispatches(&env, campaign).await?;
    let (_connection, channel) = confirming_channel(&env).await?;
    let once = copies(&rows, tenant, campaign, provider);
    let twice: Vec<DispatchMessage> = once.iter().chain(&once).cloned().collect();
    // The lane, as a scheduler would declare it; the worker consumes it once it exists.
    topology::declare(&channel).await?;
    topology::declare_lane(&channel, provider).await?;
    let lane = topology::lane_queue(provider);
    let consuming = herald_tests::wait_until(Duration::from_secs(15), || async {
        consumers(&channel, &lane).await.is_some_and(|n| n > 0)
    })
    .await;
    assert!(consuming.is_ok(), "the worker never consumed the lane");
    publish_to_lane(
        &channel,
        provider,
        &herald_shared::queue::message::encode_batch(&twice),
    )
    .await?;
    let sent = herald_tests::wait_until(Duration::from_secs(20), || async {
        env.states(campaign)
            .await
            .is_ok_and(|s| s.get("sent") == Some(&RECIPIENTS))
    })
    .await;
    assert!(sent.is_ok(), "{:?}", env.states(campaign).await?);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats = env.simulator_stats().await?;
    assert_eq!(stats["requests"], RECIPIENTS, "{stats}");
    assert_eq!(stats["duplicates"], 0, "{stats}");
    Ok(())
}

/// A first attempt claimed by range that was made and failed waits for its retry as
/// `pending`, with the dispatch of its first message: a second message for that first
/// attempt (a cursor moved back while the first was queued) is acked unsent, because the
/// lease takes a `pending` recipient only while no attempt has been made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_attempt_already_made_is_not_sent_again_by_a_second_message() -> Result<()> {
    // Fewer than a circuit breaker needs to judge: every failure is a retry, none a deferral.
    const RECIPIENTS: i64 = 12;
    // Every recipient's first request fails (408: not taken, so a retry, not an unknown
    // outcome); its retry is a minute away.
    let env = TestEnv::new(&["--fail-first", "1", "--fail-status", "408"]).await?;
    let mut slow_retries = env.provider();
    slow_retries.retry_base_ms = 60_000;
    slow_retries.retry_max_ms = 60_000;
    let provider = env.create_provider(&slow_retries).await?;
    let tenant = env.tenant("acme", 1).await?;
    let addresses = numbers("+1555420", RECIPIENTS as usize);
    let campaign = env
        .campaign(tenant, provider, "twice", &addresses, 100)
        .await?;
    let _scheduler = env.scheduler(300, &[])?;
    let _worker = env.worker(&[])?;
    env.start(campaign).await?;
    // Every first attempt made and failed: all wait for their retry.
    let waiting = herald_tests::wait_until(Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM recipients
             WHERE campaign_id = $1 AND state = 'pending' AND attempts = 1",
        )
        .bind(campaign)
        .fetch_one(&env.pool)
        .await
        .is_ok_and(|n| n == RECIPIENTS)
    })
    .await;
    assert!(waiting.is_ok(), "{:?}", env.states(campaign).await?);
    let rows = dispatches(&env, campaign).await?;
    // Claimed by range: no claim wrote a recipient.
    assert!(rows.iter().all(|(_, seq, _)| *seq == 0), "{rows:?}");
    let claimed_through: i64 =
        sqlx::query_scalar("SELECT claimed_through FROM campaigns WHERE id = $1")
            .bind(campaign)
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(
        claimed_through,
        rows.iter().map(|(id, _, _)| *id).max().unwrap_or(0)
    );

    // The first attempts' messages again, as a second range claim would publish them.
    let (_connection, channel) = confirming_channel(&env).await?;
    let batch = copies(&rows, tenant, campaign, provider);
    publish_to_lane(
        &channel,
        provider,
        &herald_shared::queue::message::encode_batch(&batch),
    )
    .await?;
    // The copies are consumed and acked unsent (a lease is a statement of a few ms): their
    // recipients still wait for their retries, and the provider was asked nothing more.
    let lane = topology::lane_queue(provider);
    let consumed = herald_tests::wait_until(Duration::from_secs(5), || async {
        topology::ready_messages(&channel, &lane)
            .await
            .is_ok_and(|n| n == 0)
    })
    .await;
    assert!(consumed.is_ok(), "the copies were not consumed");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let attempts: Vec<(String, i32)> =
        sqlx::query_as("SELECT state, attempts FROM recipients WHERE campaign_id = $1")
            .bind(campaign)
            .fetch_all(&env.pool)
            .await?;
    assert!(
        attempts
            .iter()
            .all(|(state, n)| state == "pending" && *n == 1),
        "a copy was sent before its recipient's retry was due: {attempts:?}"
    );
    let stats = env.simulator_stats().await?;
    assert_eq!(stats["requests"], RECIPIENTS, "{stats}");
    Ok(())
}

/// Each recipient of `campaign`: its id, dispatch and address.
async fn dispatches(env: &TestEnv, campaign: Uuid) -> Result<Vec<(i64, i32, String)>> {
    Ok(
        sqlx::query_as("SELECT id, dispatch_seq, address FROM recipients WHERE campaign_id = $1")
            .bind(campaign)
            .fetch_all(&env.pool)
            .await?,
    )
}

/// Messages for `rows` (id, dispatch, address) of a campaign, as the scheduler would build
/// them.
fn copies(
    rows: &[(i64, i32, String)],
    tenant: Uuid,
    campaign: Uuid,
    provider: Uuid,
) -> Vec<DispatchMessage> {
    rows.iter()
        .map(|(id, seq, address)| DispatchMessage {
            v: FORMAT_VERSION,
            recipient_id: *id,
            seq: *seq,
            tenant_id: tenant,
            campaign_id: campaign,
            provider_id: provider,
            channel: herald_shared::domain::Channel::Sms,
            to: address.clone(),
            body: "again".into(),
            expires_at: None,
            variables: serde_json::Map::new(),
        })
        .collect()
}

/// Publishes `body` to `provider`'s lane on a channel in confirm mode; fails unless the
/// broker confirms it routed.
pub(crate) async fn publish_to_lane(
    channel: &lapin::Channel,
    provider: Uuid,
    body: &[u8],
) -> Result<()> {
    let confirm = channel
        .basic_publish(
            topology::DISPATCH_EXCHANGE.into(),
            topology::lane_routing_key(provider).as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await?
        .await?;
    anyhow::ensure!(
        confirm.is_ack() && confirm.take_message().is_none(),
        "not routed to the lane"
    );
    Ok(())
}

/// A worker whose consumer of one lane ends (its queue deleted here; as well the broker's
/// consumer timeout, a cancel) starts a new session and closes the old one's connection:
/// dropped, it lived on, and its consumers of the other lanes went on taking deliveries
/// beside the new session's, never resized, never cancelled at a stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_session_that_ends_leaves_no_consumer_behind() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let first = env.create_provider(&env.provider()).await?;
    let mut second = env.provider();
    second.name = "second".into();
    let second = env.create_provider(&second).await?;
    let _worker = env.worker(&[])?;
    let connection = env.amqp().await?;
    let count = |provider: Uuid| {
        let connection = &connection;
        async move {
            // A channel each: a passive declare of a queue that is not there closes it.
            let channel = connection.create_channel().await.ok()?;
            consumers(&channel, &topology::lane_queue(provider)).await
        }
    };
    herald_tests::wait_until(Duration::from_secs(20), || async {
        count(first).await == Some(1) && count(second).await == Some(1)
    })
    .await
    .map_err(|_| anyhow::anyhow!("the worker did not consume both lanes"))?;
    connection
        .create_channel()
        .await?
        .queue_delete(
            topology::lane_queue(first).as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await?;
    // The session ends, and the next one declares the lane again and consumes it.
    herald_tests::wait_until(Duration::from_secs(30), || async {
        count(first).await == Some(1)
    })
    .await
    .map_err(|_| anyhow::anyhow!("the deleted lane was not consumed again"))?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count(second).await,
        Some(1),
        "the ended session's consumer of the other lane lives on"
    );
    Ok(())
}

/// How many consumers `lane` has, if it exists.
async fn consumers(channel: &lapin::Channel, lane: &str) -> Option<u32> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    channel
        .queue_declare(lane.into(), passive, FieldTable::default())
        .await
        .ok()
        .map(|queue| queue.consumer_count())
}

/// A channel to `env`'s broker in confirm mode (and its connection, to keep it open).
async fn confirming_channel(env: &TestEnv) -> Result<(lapin::Connection, lapin::Channel)> {
    let connection = env.amqp().await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok((connection, channel))
}

/// A provider of 5 s, an overflow of 1 s, and a running campaign of `n` recipients (numbers
/// from `prefix`) of the first, never dispatched: (primary, overflow, campaign).
async fn running_with_a_quick_overflow(
    env: &TestEnv,
    prefix: &str,
    n: usize,
) -> Result<(Uuid, Uuid, Uuid)> {
    let primary = env.create_provider(&env.provider()).await?;
    let mut overflow = env.provider();
    overflow.name = "overflow".into();
    overflow.timeout_ms = 1_000;
    let overflow = env.create_provider(&overflow).await?;
    let tenant = env.tenant("acme", 1).await?;
    let campaign = env
        .campaign(tenant, primary, "lanes", &numbers(prefix, n), 10)
        .await?;
    sqlx::query("UPDATE campaigns SET status = 'running', started_at = now() WHERE id = $1")
        .bind(campaign)
        .execute(&env.pool)
        .await?;
    Ok((primary, overflow, campaign))
}

/// Two messages for one first attempt through different lanes (a cursor moved back between
/// them, and the second claim spilled to the overflow) in one lease statement: the first
/// takes the lease, with its own provider's timeout and `sent_via`; the second, and any
/// later one, finds the recipient taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_of_two_messages_for_a_first_attempt_takes_the_lease() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let (primary, overflow, campaign) = running_with_a_quick_overflow(&env, "+1555440", 1).await?;
    let (id, seq, _) = dispatches(&env, campaign).await?.remove(0);
    let via = |provider| Dispatch::new(id, seq, provider);
    let grace = Duration::from_secs(1);
    let answers = lease::begin(&env.pool, &[via(overflow), via(primary)], grace).await?;
    assert!(answers[0].is_some() && answers[1].is_none(), "{answers:?}");
    let (sent_via, lease_s): (Option<Uuid>, f64) = sqlx::query_as(
        "SELECT sent_via, extract(epoch FROM lease_until - attempted_at)::float8
         FROM recipients WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(sent_via, Some(overflow));
    // The overflow's 1 s timeout and the grace: not the primary's 5 s.
    assert!((1.5..2.5).contains(&lease_s), "lease of {lease_s} s");
    let again = lease::begin(&env.pool, &[via(primary)], grace).await?;
    assert_eq!(again, vec![None]);
    Ok(())
}

/// A retry through an overflow whose earlier attempt's outcome is unknown at the primary
/// may be looked up there, or sent again through it alone: its lease covers the primary's
/// longer timeout too. Sized by the overflow's alone, a request through the primary could
/// outlive the lease, and the sweeper hand the recipient to another worker while it was
/// still open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_covers_the_provider_of_an_earlier_unknown_outcome() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let (primary, overflow, campaign) = running_with_a_quick_overflow(&env, "+1555445", 2).await?;
    let rows = dispatches(&env, campaign).await?;
    // Both retries queued; the first's earlier attempt went to the primary, answer lost.
    sqlx::query(
        "UPDATE recipients SET state = 'queued', attempts = 1,
                outcome_unknown_at = CASE WHEN id = $2 THEN now() - interval '1 minute' END,
                unknown_via = CASE WHEN id = $2 THEN $3::uuid END
         WHERE campaign_id = $1",
    )
    .bind(campaign)
    .bind(rows[0].0)
    .bind(primary)
    .execute(&env.pool)
    .await?;
    let leased: Vec<Dispatch> = rows
        .iter()
        .map(|(id, seq, _)| Dispatch::new(*id, *seq, overflow))
        .collect();
    let answers = lease::begin(&env.pool, &leased, Duration::from_secs(1)).await?;
    assert!(answers.iter().all(Option::is_some), "{answers:?}");
    let lease_s = |id: i64| {
        sqlx::query_scalar::<_, f64>(
            "SELECT extract(epoch FROM lease_until - attempted_at)::float8 FROM recipients WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&env.pool)
    };
    // The primary's 5 s and the grace for the one it may be sent through; the overflow's
    // 1 s for the other.
    let (unknown, plain) = (lease_s(rows[0].0).await?, lease_s(rows[1].0).await?);
    assert!((5.5..6.5).contains(&unknown), "lease of {unknown} s");
    assert!((1.5..2.5).contains(&plain), "lease of {plain} s");
    Ok(())
}

/// A range claim whose message was lost (the scheduler died between claim and publish, or
/// the broker lost it) leaves first attempts `pending` below the campaign's cursor, where no
/// claim looks: once the claim is older than `HERALD_SCHEDULER_REQUEUE_AFTER_MS` the sweeper
/// moves the cursor back below them and they are sent; stale claims with nothing waiting are
/// dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_attempts_of_a_lost_range_claim_are_handed_out_again() -> Result<()> {
    const RECIPIENTS: i64 = 40;
    let env = TestEnv::new(&[]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let tenant = env.tenant("acme", 1).await?;
    let addresses = numbers("+1555450", RECIPIENTS as usize);
    let campaign = env
        .campaign(tenant, provider, "lost", &addresses, 100)
        .await?;
    // Running, every first attempt claimed a minute ago, and no message for any of them.
    sqlx::query(
        "WITH c AS (
             UPDATE campaigns SET status = 'running', started_at = now(),
                    claimed_through = (SELECT max(id) FROM recipients WHERE campaign_id = $1)
             WHERE id = $1 RETURNING id, claimed_through
         )
         INSERT INTO first_claims (campaign_id, through, claimed_at)
         SELECT id, claimed_through, now() - interval '1 minute' FROM c",
    )
    .bind(campaign)
    .execute(&env.pool)
    .await?;
    let requeue = [("HERALD_SCHEDULER_REQUEUE_AFTER_MS", "1000")];
    let _scheduler = env.scheduler(300, &requeue)?;
    let _worker = env.worker(&[])?;
    env.wait_completed(&[campaign], Duration::from_secs(30))
        .await?;
    assert_eq!(env.states(campaign).await?.get("sent"), Some(&RECIPIENTS));
    let stats = env.simulator_stats().await?;
    assert_eq!(stats["requests"], RECIPIENTS, "{stats}");
    // The claims that sent them, stale a second later, are dropped: nothing waits below them.
    let swept = herald_tests::wait_until(Duration::from_secs(10), || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM first_claims WHERE campaign_id = $1")
            .bind(campaign)
            .fetch_one(&env.pool)
            .await
            .is_ok_and(|n| n == 0)
    })
    .await;
    assert!(swept.is_ok(), "stale claims with nothing waiting were kept");
    Ok(())
}

/// A worker parks the messages of a paused campaign, and a first attempt claimed by range
/// goes back to waiting by its campaign's cursor moving back below it. When the campaign's
/// row is held at that moment (another lease parking the same campaign's messages, an
/// upload streaming), the move is owed, not dropped: the next sweep makes it, below the
/// range handed back only, rather than the stale-claim pass a requeue window (a minute)
/// later, which left a resumed campaign's parked recipients a minute behind the rest. The
/// scheduler's release of an unconfirmed publish owes its move the same way. The sweeper
/// tells such moves from lost messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_a_busy_campaign_kept_from_moving_back_is_moved_at_the_next_sweep() -> Result<()> {
    use herald_store::recipients::{claim, sweep};
    let env = TestEnv::new(&[]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let tenant = env.tenant("acme", 1).await?;
    let campaign = env
        .campaign(tenant, provider, "busy", &numbers("+1555460", 20), 100)
        .await?;
    let mut rows = dispatches(&env, campaign).await?;
    rows.sort();
    let ids: Vec<i64> = rows.iter().map(|(id, _, _)| *id).collect();
    let highest = ids[19];
    // Paused with every first attempt claimed by range and none attempted yet: their
    // messages are in the queue.
    let claimed_all = || async {
        sqlx::query(
            "UPDATE campaigns SET status = 'paused', started_at = coalesce(started_at, now()),
                    claimed_through = $2
             WHERE id = $1",
        )
        .bind(campaign)
        .bind(highest)
        .execute(&env.pool)
        .await
    };
    let cursor = || async {
        sqlx::query_scalar::<_, i64>("SELECT claimed_through FROM campaigns WHERE id = $1")
            .bind(campaign)
            .fetch_one(&env.pool)
            .await
    };
    let claims_left = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM first_claims WHERE campaign_id = $1")
            .bind(campaign)
            .fetch_one(&env.pool)
            .await
    };
    // A range claim made two minutes ago, of ids below the audience's: nothing it claimed
    // is waiting.
    let pool = &env.pool;
    let old_claim = |through: i64| async move {
        sqlx::query(
            "INSERT INTO first_claims (campaign_id, through, claimed_at)
             VALUES ($1, $2, now() - interval '2 minutes')",
        )
        .bind(campaign)
        .bind(through)
        .execute(pool)
        .await
    };
    let hold = || async {
        let mut busy = env.pool.begin().await?;
        sqlx::query("SELECT 1 FROM campaigns WHERE id = $1 FOR NO KEY UPDATE")
            .bind(campaign)
            .execute(&mut *busy)
            .await?;
        Ok::<_, sqlx::Error>(busy)
    };
    let requeue_after = Duration::from_secs(60);
    let sweep = || sweep::rewind_stale_first_claims(&env.pool, requeue_after);

    // A lease parks the 6th to 20th while the campaign's row is held; the first five's
    // messages are still queued.
    claimed_all().await?;
    old_claim(ids[0] - 1).await?;
    let busy = hold().await?;
    let leased: Vec<Dispatch> = rows[5..]
        .iter()
        .map(|(id, seq, _)| Dispatch::new(*id, *seq, provider))
        .collect();
    let answers = lease::begin(&env.pool, &leased, Duration::from_secs(1)).await?;
    busy.rollback().await?;
    assert!(answers.iter().all(Option::is_none), "{answers:?}");
    assert_eq!(cursor().await?, highest, "the held cursor was moved");
    // Owed, beside an old range claim with nothing waiting: not a lost message.
    assert_eq!(sweep().await?, sweep::Rewound { lost: 0, owed: 1 });
    assert_eq!(
        cursor().await?,
        ids[5] - 1,
        "not below the parked range only"
    );
    assert_eq!(claims_left().await?, 0, "a claim done with was kept");
    assert_eq!(env.states(campaign).await?.get("pending"), Some(&20));

    // The scheduler's release of the 11th to 20th, whose publish was not confirmed.
    claimed_all().await?;
    let claims: Vec<(i64, i32)> = rows.iter().map(|(id, seq, _)| (*id, *seq)).collect();
    let busy = hold().await?;
    claim::release(&env.pool, &claims[10..]).await?;
    busy.rollback().await?;
    assert_eq!(cursor().await?, highest);
    assert_eq!(sweep().await?, sweep::Rewound { lost: 0, owed: 1 });
    assert_eq!(cursor().await?, ids[10] - 1);

    // A campaign still held when the sweeper comes keeps what it is owed for a later sweep.
    claimed_all().await?;
    let busy = hold().await?;
    claim::release(&env.pool, &claims[15..]).await?;
    assert_eq!(sweep().await?, sweep::Rewound::default());
    busy.rollback().await?;
    assert_eq!(claims_left().await?, 1, "an owed move not made was dropped");
    assert_eq!(sweep().await?, sweep::Rewound { lost: 0, owed: 1 });
    assert_eq!(cursor().await?, ids[15] - 1);

    // A cursor already below what is handed back owes no move: claims only move it forward,
    // past what they publish (a lease's parking and a release alike).
    let below = || async {
        sqlx::query("UPDATE campaigns SET claimed_through = $2 WHERE id = $1")
            .bind(campaign)
            .bind(ids[2])
            .execute(&env.pool)
            .await
    };
    claimed_all().await?;
    below().await?;
    let busy = hold().await?;
    claim::release(&env.pool, &claims[10..]).await?;
    let answers = lease::begin(&env.pool, &leased, Duration::from_secs(1)).await?;
    busy.rollback().await?;
    assert!(answers.iter().all(Option::is_none), "{answers:?}");
    assert_eq!(
        claims_left().await?,
        0,
        "a move owed by a cursor below the range"
    );
    assert_eq!(cursor().await?, ids[2]);

    // An old range claim with first attempts waiting is a lost message, whatever is owed.
    claimed_all().await?;
    let busy = hold().await?;
    claim::release(&env.pool, &claims[15..]).await?;
    busy.rollback().await?;
    old_claim(highest).await?;
    assert_eq!(sweep().await?, sweep::Rewound { lost: 1, owed: 0 });
    assert_eq!(cursor().await?, ids[0] - 1);
    Ok(())
}

/// A recipient whose stored variables no service can read back (a number past a double's
/// range, which PostgreSQL's `numeric` holds) fails alone. The claim read every campaign of
/// a lane in one statement, and one such row failed it: no campaign of any tenant in the
/// lane sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_whose_variables_cannot_be_read_fails_alone() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let (a, b) = (env.tenant("acme", 1).await?, env.tenant("globex", 1).await?);
    let poisoned = env
        .campaign(a, provider, "poisoned", &numbers("+1555470", 10), 100)
        .await?;
    let other = env
        .campaign(b, provider, "other", &numbers("+1555471", 10), 100)
        .await?;
    sqlx::query(
        "UPDATE recipients SET variables = jsonb_build_object('n', ('1' || repeat('0', 400))::numeric)
         WHERE id = (SELECT min(id) FROM recipients WHERE campaign_id = $1)",
    )
    .bind(poisoned)
    .execute(&env.pool)
    .await?;
    let _scheduler = env.scheduler(300, &[])?;
    let _worker = env.worker(&[])?;
    env.start(poisoned).await?;
    env.start(other).await?;
    env.wait_completed(&[poisoned, other], Duration::from_secs(30))
        .await?;
    let states = env.states(poisoned).await?;
    assert_eq!(
        (states.get("sent"), states.get("failed")),
        (Some(&9), Some(&1))
    );
    assert_eq!(env.states(other).await?.get("sent"), Some(&10));
    let error: String = sqlx::query_scalar(
        "SELECT last_error FROM recipients WHERE campaign_id = $1 AND state = 'failed'",
    )
    .bind(poisoned)
    .fetch_one(&env.pool)
    .await?;
    assert!(error.contains("cannot be read"), "{error}");
    Ok(())
}

/// A tick plans a campaign's first attempts from a bound (the ids past its cursor up to its
/// audience's highest), which overstates them when recipients above the cursor were already
/// attempted (a cursor moved back, then its first attempts taken by earlier messages). The
/// claim that finds fewer than it asked for moves the cursor past the whole audience: the
/// campaign leaves the plan and completes, instead of being planned (and kept from
/// completing) for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_planned_for_more_than_it_has_left_still_completes() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let tenant = env.tenant("acme", 1).await?;
    let campaign = env
        .campaign(tenant, provider, "bound", &numbers("+1555460", 10), 100)
        .await?;
    // The upper half already sent, the cursor below all of them.
    sqlx::query(
        "UPDATE recipients SET state = 'sent', attempts = 1, sent_at = now()
         WHERE id IN (SELECT id FROM recipients WHERE campaign_id = $1 ORDER BY id DESC LIMIT 5)",
    )
    .bind(campaign)
    .execute(&env.pool)
    .await?;
    let _scheduler = env.scheduler(300, &[])?;
    let _worker = env.worker(&[])?;
    env.start(campaign).await?;
    env.wait_completed(&[campaign], Duration::from_secs(30))
        .await?;
    assert_eq!(env.states(campaign).await?.get("sent"), Some(&10));
    let stats = env.simulator_stats().await?;
    assert_eq!(stats["requests"], 5, "{stats}");
    let (through, audience): (i64, i64) =
        sqlx::query_as("SELECT claimed_through, audience_through FROM campaigns WHERE id = $1")
            .bind(campaign)
            .fetch_one(&env.pool)
            .await?;
    let highest: i64 = sqlx::query_scalar("SELECT max(id) FROM recipients WHERE campaign_id = $1")
        .bind(campaign)
        .fetch_one(&env.pool)
        .await?;
    assert_eq!((through, audience), (highest, highest));
    Ok(())
}

/// A campaign never claimed yet is planned for the recipients it has: its bound runs from
/// its audience's lowest id, not from 0. From 0 a small campaign looked as large as its
/// highest id (up to its batch size: a whole batch for all but the first few), and with
/// thousands of them the fair plan handed each pass's budget to campaigns that could not
/// use it (BENCHMARKS.md 2026-12-12).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_campaign_is_planned_for_the_recipients_it_has() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let tenant = env.tenant("acme", 1).await?;
    let first = env
        .campaign(tenant, provider, "first", &numbers("+1555470", 50), 100)
        .await?;
    let second = env
        .campaign(tenant, provider, "second", &numbers("+1555471", 10), 100)
        .await?;
    // Another audience's ids between two inserts of one campaign's recipients: still a
    // bound, never less than what is there.
    let third = env
        .campaign(tenant, provider, "third", &numbers("+1555472", 5), 100)
        .await?;
    env.campaign(tenant, provider, "between", &numbers("+1555473", 7), 100)
        .await?;
    sqlx::query(
        "INSERT INTO recipients (campaign_id, address, variables)
         SELECT $1, a, '{\"first_name\": \"x\"}' FROM unnest($2::text[]) a",
    )
    .bind(third)
    .bind(numbers("+1555474", 3))
    .execute(&env.pool)
    .await?;
    for campaign in [first, second, third] {
        env.start(campaign).await?;
    }
    herald_store::campaigns::activate_due(&env.pool).await?;
    let due: std::collections::BTreeMap<Uuid, i64> =
        herald_store::campaigns::dispatchable(&env.pool, 20_000, None)
            .await?
            .into_iter()
            .map(|c| (c.id, c.due))
            .collect();
    assert_eq!(due.get(&first), Some(&50), "{due:?}");
    assert_eq!(due.get(&second), Some(&10), "{due:?}");
    // Five, the seven of "between", then three: fifteen ids for eight recipients.
    assert_eq!(due.get(&third), Some(&15), "{due:?}");
    Ok(())
}

/// A campaign's `batch_size` is the most one pass of the scheduler gives it, not a rate: a
/// lane whose campaign got a whole batch with more due is topped up as soon as its workers
/// empty it. It used to wait for the next tick (a lane short of its budget looked out of
/// work), so a campaign alone in its lane sent one batch a tick: 500 msg/s at the admin's
/// default of 1,000 and 2 s ticks, whatever its workers could do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_alone_in_its_lane_is_not_held_to_a_batch_a_tick() -> Result<()> {
    let env = TestEnv::new(&["--latency", "fixed:0"]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let tenant = env.tenant("acme", 1).await?;
    // Twenty batches: twenty ticks (38 s at least) if each tick gave one.
    let campaign = env
        .campaign(
            tenant,
            provider,
            "batches",
            &numbers("+1555470", 2_000),
            100,
        )
        .await?;
    let _scheduler = env.scheduler(2_000, &[])?;
    let _worker = env.worker(&[])?;
    env.start(campaign).await?;
    env.wait_completed(&[campaign], Duration::from_secs(90))
        .await?;
    assert_eq!(env.states(campaign).await?.get("sent"), Some(&2_000));
    let stats = env.simulator_stats().await?;
    assert_eq!(stats["requests"], 2_000, "{stats}");
    let took = first_to_last_send(&env, campaign).await?;
    assert!(
        took < 12.0,
        "2,000 recipients in batches of 100 took {took:.1} s: about a batch a tick"
    );
    Ok(())
}

/// The same through an overflow: while its primary's breaker is open, a campaign sends all
/// its work through its overflow provider's lane, and gets no less there than in its own.
/// That lane's passes gave it a batch each while the lane looked out of work, so a failover
/// went at a batch a tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_whose_primary_is_down_is_not_held_to_a_batch_a_tick_in_its_overflow()
-> Result<()> {
    let env = TestEnv::new(&["--latency", "fixed:0"]).await?;
    let mut down = env.provider();
    down.name = "down".into();
    let primary = env.create_provider(&down).await?;
    let overflow = env.create_provider(&env.provider()).await?;
    let tenant = env.tenant("acme", 1).await?;
    let campaign = env
        .campaign(
            tenant,
            primary,
            "failover",
            &numbers("+1555471", 2_000),
            100,
        )
        .await?;
    sqlx::query("UPDATE campaigns SET overflow_provider_id = $2 WHERE id = $1")
        .bind(campaign)
        .bind(overflow)
        .execute(&env.pool)
        .await?;
    // The fleet's breaker for the primary, open for longer than the test.
    sqlx::query(
        "INSERT INTO provider_pacing (provider_id, open_until) VALUES ($1, now() + interval '1 hour')
         ON CONFLICT (provider_id) DO UPDATE SET open_until = excluded.open_until",
    )
    .bind(primary)
    .execute(&env.pool)
    .await?;
    let _scheduler = env.scheduler(2_000, &[])?;
    let _worker = env.worker(&[])?;
    env.start(campaign).await?;
    env.wait_completed(&[campaign], Duration::from_secs(90))
        .await?;
    let via: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT sent_via, count(*) FROM recipients WHERE campaign_id = $1 GROUP BY 1",
    )
    .bind(campaign)
    .fetch_all(&env.pool)
    .await?;
    assert_eq!(via, [(overflow, 2_000)], "every send through the overflow");
    let took = first_to_last_send(&env, campaign).await?;
    assert!(
        took < 12.0,
        "2,000 recipients in batches of 100 through the overflow took {took:.1} s: about a batch a tick"
    );
    Ok(())
}

/// Seconds from a campaign's first send to its last, by the database's clock (the services'
/// start-up left out).
async fn first_to_last_send(env: &TestEnv, campaign: Uuid) -> Result<f64> {
    Ok(sqlx::query_scalar(
        "SELECT extract(epoch FROM max(r.sent_at) - c.first_sent_at)::float8
         FROM recipients r JOIN campaigns c ON c.id = r.campaign_id
         WHERE c.id = $1 GROUP BY c.first_sent_at",
    )
    .bind(campaign)
    .fetch_one(&env.pool)
    .await?)
}

/// Two tenants' campaigns of ten recipients each, `held` and `other`, their numbers from
/// `prefixes`.
async fn held_and_other(env: &TestEnv, prefixes: [&str; 2]) -> Result<(Uuid, Uuid)> {
    let provider = env.create_provider(&env.provider()).await?;
    let (a, b) = (env.tenant("acme", 1).await?, env.tenant("globex", 1).await?);
    let held = env
        .campaign(a, provider, "held", &numbers(prefixes[0], 10), 100)
        .await?;
    let other = env
        .campaign(b, provider, "other", &numbers(prefixes[1], 10), 100)
        .await?;
    Ok((held, other))
}

/// Starts `other` and runs a scheduler and a worker while `held`'s row is held as an upload
/// to it holds it while it streams: `other` must complete meanwhile. Then lets go, and
/// waits for `held` to complete too. Answers `held`'s status while it was held.
async fn other_completes_while_held(env: &TestEnv, held: Uuid, other: Uuid) -> Result<String> {
    env.start(other).await?;
    let mut upload = env.pool.begin().await?;
    sqlx::query("SELECT 1 FROM campaigns WHERE id = $1 FOR UPDATE")
        .bind(held)
        .execute(&mut *upload)
        .await?;
    let _scheduler = env.scheduler(250, &[])?;
    let _worker = env.worker(&[])?;
    env.wait_completed(&[other], Duration::from_secs(20))
        .await?;
    let while_held: String = sqlx::query_scalar("SELECT status FROM campaigns WHERE id = $1")
        .bind(held)
        .fetch_one(&env.pool)
        .await?;
    upload.rollback().await?;
    env.wait_completed(&[held], Duration::from_secs(20)).await?;
    Ok(while_held)
}

/// A campaign whose start has come while an upload holds its row (an upload to a scheduled
/// campaign holds it for as long as it streams) is made running at a later tick: waiting
/// for it held up the tick, and every other tenant's dispatch with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_campaign_held_by_an_upload_does_not_stall_the_tick() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let (held, other) = held_and_other(&env, ["+1555960", "+1555961"]).await?;
    env.start(held).await?;
    // Scheduled, its start come: due at the first tick.
    sqlx::query("UPDATE campaigns SET status = 'scheduled', start_at = now() WHERE id = $1")
        .bind(held)
        .execute(&env.pool)
        .await?;
    let waiting = other_completes_while_held(&env, held, other).await?;
    assert_eq!(waiting, "scheduled", "not made running while held");
    Ok(())
}

/// Completion skips a campaign whose row an upload holds (an upload streams under its
/// campaign's lock): other campaigns still complete meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_held_by_an_upload_does_not_hold_up_others_completing() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let (held, other) = held_and_other(&env, ["+1555962", "+1555963"]).await?;
    // Scheduled for later and already past its expiry: completion's to close.
    sqlx::query(
        "UPDATE campaigns SET status = 'scheduled', start_at = now() + interval '1 hour',
                              expires_at = now() - interval '1 minute' WHERE id = $1",
    )
    .bind(held)
    .execute(&env.pool)
    .await?;
    other_completes_while_held(&env, held, other).await?;
    Ok(())
}

/// While a worker's outcome statements cannot be written (here: the rows of the recipients
/// in flight held, which their outcomes must update), it takes no more leases once as many
/// outcomes as its prefetch wait: answered work does not pile up in memory while requests
/// go on. Once the rows are free, everything is written and sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_outcomes_cannot_be_written_stops_taking_leases() -> Result<()> {
    const RECIPIENTS: i64 = 1_000;
    const PREFETCH: i64 = 40;
    let env = TestEnv::new(&["--latency", "fixed:1500"]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let tenant = env.tenant("acme", 1).await?;
    let campaign = env
        .campaign(
            tenant,
            provider,
            "c",
            &numbers("+1555460", RECIPIENTS as usize),
            1_000,
        )
        .await?;
    let _worker = env.worker(&[("HERALD_WORKER_PREFETCH", "40")])?;
    env.wait_live_worker(&provider.to_string()).await?;
    // The whole campaign claimed in the first tick: later claims need no campaign row.
    let _scheduler = env.scheduler(250, &[("HERALD_SCHEDULER_MIN_BUDGET", "1000")])?;
    env.start(campaign).await?;
    let sending = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM recipients WHERE campaign_id = $1 AND state = 'sending'",
        )
        .bind(campaign)
        .fetch_one(&env.pool)
        .await
        .unwrap_or(0)
    };
    // A prefetch leased: no more until answers come (1.5 s).
    herald_tests::wait_until(Duration::from_secs(20), || async {
        sending().await >= PREFETCH
    })
    .await
    .map_err(|_| anyhow::anyhow!("not a prefetch leased"))?;
    // Before their answers, their rows are held: no outcome of theirs can be written until
    // they are let go.
    let mut held = env.pool.begin().await?;
    sqlx::query(
        "SELECT 1 FROM recipients WHERE campaign_id = $1 AND state = 'sending' FOR NO KEY UPDATE",
    )
    .bind(campaign)
    .execute(&mut *held)
    .await?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let leased = sending().await;
    let requests = env.simulator_stats().await?["requests"]
        .as_i64()
        .unwrap_or(0);
    held.rollback().await?;
    // At most a prefetch answered and waiting, and a prefetch in flight (at about 27 msg/s,
    // over 200 would have been leased and sent in those 8 s).
    assert!(
        leased <= 2 * PREFETCH,
        "{leased} leased while outcomes waited"
    );
    assert!(
        requests <= 2 * PREFETCH,
        "{requests} requests while outcomes waited"
    );

    env.wait_completed(&[campaign], Duration::from_secs(60))
        .await?;
    assert_eq!(env.states(campaign).await?.get("sent"), Some(&RECIPIENTS));
    let stats = env.simulator_stats().await?;
    assert_eq!(stats["requests"], RECIPIENTS, "{stats}");
    assert_eq!(stats["duplicates"], 0, "{stats}");
    Ok(())
}

/// A paced provider whose pace last changed long ago (a night of quiet hours, a provider used
/// once a day) sends again: its slowdown decays by ×0.8 a second since then, and past about
/// 55 minutes that factor is below the smallest float PostgreSQL has, which it refused as an
/// underflow, every reservation failing (the provider never sent again, nobody charged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_provider_whose_pace_last_changed_hours_ago_sends() -> Result<()> {
    // Slowed down by a throttle two hours ago, not changed since.
    let (env, provider) = paced_provider_sends(SLOWED_DOWN_AT, "-2 hours").await?;
    slowed_down_at_most_as_much(&env, provider).await
}

/// So does one whose pace last changed "in the future", as a database whose clock was stepped
/// back (or a standby behind the primary's) reads it: the decay's negative power made the
/// slowdown astronomical, and the worker's spacing overflowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_provider_whose_pace_changed_after_the_database_clock_sends() -> Result<()> {
    let (env, provider) = paced_provider_sends(SLOWED_DOWN_AT, "10 minutes").await?;
    slowed_down_at_most_as_much(&env, provider).await
}

/// A pacing row slowed down (×4) by a throttle `$2` from now (an interval), its next slot
/// long free.
const SLOWED_DOWN_AT: &str =
    "INSERT INTO provider_pacing (provider_id, slowdown, throttled_at, updated_at, next_at)
     VALUES ($1, 4.0, now() + $2::interval, now() + $2::interval, now() - interval '1 hour')";

async fn slowed_down_at_most_as_much(env: &TestEnv, provider: Uuid) -> Result<()> {
    let slowdown: f64 =
        sqlx::query_scalar("SELECT slowdown FROM provider_pacing WHERE provider_id = $1")
            .bind(provider)
            .fetch_one(&env.pool)
            .await?;
    assert!((1.0..=4.0).contains(&slowdown), "slowdown {slowdown}");
    Ok(())
}

/// A provider's pacing row written just before the database's clock stepped back an hour
/// (a failover to a server whose clock is behind) holds times an hour ahead: its next free
/// slot, its breaker's opening, its last throttle. Read as written, the scheduler released
/// none of its recipients (breaker open fleet-wide) and the worker's send slots lay an hour
/// out. The row's change time shows the step, which is taken off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_paced_just_before_the_database_clock_stepped_back_sends() -> Result<()> {
    // As written a moment before the step: a breaker open for 5 s more, the next slot 2 s
    // away, a throttle just now.
    let (env, provider) = paced_provider_sends(
        "INSERT INTO provider_pacing (provider_id, slowdown, updated_at, throttled_at, next_at, open_until)
         VALUES ($1, 2.0, now() + $2::interval, now() + $2::interval,
                 now() + $2::interval + interval '2 seconds', now() + $2::interval + interval '5 seconds')",
        "1 hour",
    )
    .await?;
    // Written back on the database's clock as it now runs.
    let (ahead, open): (bool, bool) = sqlx::query_as(
        "SELECT next_at > now() + interval '1 minute' OR throttled_at > now() + interval '1 minute',
                open_until > now()
         FROM provider_pacing WHERE provider_id = $1",
    )
    .bind(provider)
    .fetch_one(&env.pool)
    .await?;
    assert!(
        !ahead && !open,
        "times still ahead: {ahead}, breaker open: {open}"
    );
    Ok(())
}

/// A campaign of 20 through a provider paced at 100 a second, its pacing row written by
/// `pacing` (binding the provider and `at`, an interval), is sent whole within 30 s.
async fn paced_provider_sends(pacing: &'static str, at: &str) -> Result<(TestEnv, Uuid)> {
    const RECIPIENTS: usize = 20;
    let env = TestEnv::new(&[]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    sqlx::query("UPDATE providers SET rate_limit = 100, rate_window_ms = 1000 WHERE id = $1")
        .bind(provider)
        .execute(&env.pool)
        .await?;
    sqlx::query(pacing)
        .bind(provider)
        .bind(at)
        .execute(&env.pool)
        .await?;
    let tenant = env.tenant("acme", 1).await?;
    let campaign = env
        .campaign(tenant, provider, "c", &numbers("+1555830", RECIPIENTS), 100)
        .await?;
    let scheduler = env.scheduler(250, &[])?;
    let worker = env.worker(&[])?;
    env.start(campaign).await?;
    if env
        .wait_completed(&[campaign], Duration::from_secs(30))
        .await
        .is_err()
    {
        anyhow::bail!(
            "not sent: {:?}; scheduler log:\n{}\nworker log:\n{}",
            env.states(campaign).await?,
            scheduler.log_text(),
            worker.log_text()
        );
    }
    let states = env.states(campaign).await?;
    assert_eq!(states.get("sent"), Some(&(RECIPIENTS as i64)), "{states:?}");
    Ok((env, provider))
}
