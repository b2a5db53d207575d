//! The fault suite's scenarios: one fault (or one kind of fault, repeated) each, struck while
//! a [`Scenario`]'s 20,000 recipients are being sent, then every recipient classified. The
//! promise is the same for all: each recipient sent exactly once, none lost, none stuck,
//! nothing dead-lettered but what was poisoned, and no process restarted by hand.
//!
//! Faults that take a service away from every process (a broker or database restart) run
//! on services of the scenario's own ([`herald_tests::services`]); faults that cut one
//! process off run through a [`Proxy`] in front of the machine's services.

use crate::suite::{ALONE, RECIPIENTS, Scenario, stat};
use herald_shared::queue::topology;
use herald_tests::proxy::{Mode, Proxy};
use herald_tests::services::{PrivatePostgres, RabbitNode};
use herald_tests::{Backends, Result, TestEnv};
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use std::time::{Duration, Instant};

/// The provider answers in 20–200 ms: requests are in flight whenever a fault strikes.
const PROVIDER: [&str; 2] = ["--latency", "uniform:20-200"];

/// Runs a blocking call (starting or stopping a service) without stalling the test's other
/// tasks (its proxies).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// A service's log without its colours.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // An escape sequence runs to its final letter (`m` for colours).
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Workers SIGKILLed at random moments (before, during and after their requests, between
/// the database write and the ack), four times, each replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_killed_repeatedly() -> Result<()> {
    let _alone = ALONE.lock().await;
    let mut s = Scenario::start(TestEnv::new(&PROVIDER).await?).await?;
    for at in [0.1, 0.25, 0.4, 0.55] {
        s.wait_progress(at).await?;
        sleep_ms(rand::random_range(0..500)).await;
        let victim = rand::random_range(0..s.workers.len());
        s.replace_worker(victim)?;
        // The replacement consumes at once with what the others leave of the cap, and
        // sends once the dead worker's share is free (6 s after its last heartbeat).
        let started = Instant::now();
        let sending = herald_tests::wait_until(Duration::from_secs(10), || async {
            plain(&s.workers[victim].log_text()).contains(": sent attempt=")
        })
        .await;
        assert!(
            sending.is_ok(),
            "the replacement sent nothing within 10 s: {}",
            s.workers[victim].log_text()
        );
        eprintln!("replacement sending after {:?}", started.elapsed());
    }
    let report = s.finish("workers killed repeatedly").await?;
    report.assert_clean(0);
    report.assert_within_cap();
    Ok(())
}

/// SIGTERM: the worker stops taking deliveries, finishes and acks what it holds, exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_terminated_drains() -> Result<()> {
    let _alone = ALONE.lock().await;
    let mut s = Scenario::start(TestEnv::new(&PROVIDER).await?).await?;
    s.wait_progress(0.3).await?;
    s.workers[0].terminate();
    let status = s.workers[0].wait(Duration::from_secs(40)).await;
    let log = s.workers[0].log_text();
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}\n{log}"
    );
    assert!(log.contains("draining"), "{log}");
    s.workers.remove(0);
    let report = s.finish("worker terminated").await?;
    report.assert_clean(0);
    report.assert_within_cap();
    Ok(())
}

/// The leading scheduler SIGKILLed three times; a new scheduler joins after each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leading_scheduler_killed() -> Result<()> {
    let _alone = ALONE.lock().await;
    let mut s = Scenario::start(TestEnv::new(&PROVIDER).await?).await?;
    for at in [0.15, 0.35, 0.55] {
        s.wait_progress(at).await?;
        s.add_scheduler()?;
        s.kill_leader().await?;
    }
    s.finish("leading scheduler killed").await?.assert_clean(0);
    Ok(())
}

/// The leader claims a batch and cannot publish it (its broker raised a memory alarm, which
/// blocks every publishing connection mid-publish), then is SIGKILLed: the standby takes over,
/// the sweeper hands the claimed recipients out again (requeues retries, moves a campaign's
/// cursor back below its first attempts), and whatever the dead leader had half-written to
/// its socket is fenced off: a row claim by the recipients' dispatch sequence, a range claim
/// by the lease, which takes a first attempt only while no attempt has been made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_killed_between_claim_and_publish() -> Result<()> {
    let _alone = ALONE.lock().await;
    // A broker of its own: the alarm blocks everyone who publishes to it.
    let (node, env) = on_private_broker("claim").await?;
    let mut s = Scenario::start_with(env, 1, 3).await?;
    herald_tests::wait_until(Duration::from_secs(30), || async { s.leader() == Some(0) })
        .await
        .map_err(|_| anyhow::anyhow!("the first scheduler did not lead"))?;
    s.add_scheduler()?;
    s.wait_progress(0.2).await?;
    blocking(|| node.block_publishers(true))?;
    // The workers drain what was published; the leader's next claim cannot be. Then the
    // lane is empty while recipients stay claimed: claimed and never published.
    sleep_ms(3_000).await;
    let stranded = stranded(&s).await;
    s.kill_leader().await?;
    sleep_ms(2_000).await;
    blocking(|| node.block_publishers(false))?;
    let (ready, queued) = stranded?;
    assert!(
        ready == 0 && queued > 0,
        "{queued} recipients claimed with {ready} messages in the lane"
    );
    s.finish("scheduler killed between claim and publish")
        .await?
        .assert_clean(0);
    Ok(())
}

/// Messages ready in the campaign's lane (counted on a connection that never publishes,
/// which the broker's alarm leaves alone) and its recipients claimed but not yet leased.
async fn stranded(s: &Scenario) -> Result<(u32, i64)> {
    let connection = s.env.amqp().await?;
    let channel = connection.create_channel().await?;
    let ready = topology::ready_messages(&channel, &topology::lane_queue(s.provider)).await?;
    let _ = connection.close(200, "counted".into()).await;
    // Claimed row by row (`queued`), or by range: a first attempt at or below the campaign's
    // cursor, not leased yet.
    let queued = sqlx::query_scalar(
        "SELECT count(*) FROM recipients r JOIN campaigns c ON c.id = r.campaign_id
         WHERE r.campaign_id = $1
           AND (r.state = 'queued'
                OR (r.state = 'pending' AND r.attempts = 0 AND r.id <= c.claimed_through))",
    )
    .bind(s.campaign)
    .fetch_one(&s.env.pool)
    .await?;
    Ok((ready, queued))
}

/// One worker's connection to the broker cut (no byte through, no reset) for 15 s, three
/// heartbeat timeouts: the broker requeues its deliveries, the worker reconnects by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_cut_from_broker() -> Result<()> {
    let _alone = ALONE.lock().await;
    let mut s = Scenario::start_with(TestEnv::new(&PROVIDER).await?, 2, 2).await?;
    let proxy = Proxy::start("127.0.0.1:5672".parse()?).await?;
    let direct = s.env.amqp_url.clone();
    s.env
        .route(None, Some(format!("{}?heartbeat=5", proxy.url(&direct))));
    s.add_worker()?;
    s.wait_progress(0.3).await?;
    let logged = plain(&s.workers[2].log_text()).len();
    proxy.set(Mode::Cut);
    sleep_ms(15_000).await;
    proxy.set(Mode::Open);
    let cut_off = &mut s.workers[2];
    assert!(cut_off.wait(Duration::from_millis(10)).await.is_none());
    // Since the cut: the lost connection, then lanes consumed again.
    let reconnected = herald_tests::wait_until(Duration::from_secs(20), || async {
        let log = plain(&cut_off.log_text());
        let since = log.get(logged..).unwrap_or_default();
        since
            .find("broker connection lost")
            .is_some_and(|lost| since[lost..].contains("consuming lane"))
    })
    .await;
    assert!(reconnected.is_ok(), "{}", cut_off.log_text());
    s.finish("worker cut from the broker")
        .await?
        .assert_clean(0);
    Ok(())
}

/// One worker's connections to PostgreSQL cut for 20 s, longer than every lease: the worker
/// holds what it sent until the outcome is written; its unsent recipients go elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_cut_from_postgres() -> Result<()> {
    let _alone = ALONE.lock().await;
    let mut s = Scenario::start_with(TestEnv::new(&PROVIDER).await?, 2, 2).await?;
    let proxy = Proxy::start("127.0.0.1:5432".parse()?).await?;
    let direct = s.env.database_url.clone();
    s.env.route(Some(proxy.url(&direct)), None);
    s.add_worker()?;
    s.wait_progress(0.3).await?;
    proxy.set(Mode::Cut);
    sleep_ms(20_000).await;
    proxy.set(Mode::Open);
    assert!(s.workers[2].wait(Duration::from_millis(10)).await.is_none());
    let report = s.finish("worker cut from PostgreSQL").await?;
    report.assert_clean(0);
    report.assert_within_cap();
    Ok(())
}

/// PostgreSQL failed over mid-run, as to another host that every process's kernel has not
/// noticed: the connections open then lead nowhere (the old server's sessions end, locks and
/// transactions with them; the processes' sockets stay open and never hear another byte, as
/// until TCP gives up, about 15 minutes), while new connections get through. It strikes
/// while statements are in flight. Every process
/// gives a statement up after the database deadline (`HERALD_DB_DEADLINE_MS`, 15 s) and a
/// connection that does not answer a ping within 2 s, and goes on with new ones: outcomes
/// are written again within 40 s (15.6, 15.9 and 16.1 s seen), every recipient is sent once, and
/// the receiver takes every receipt in the end (its one statement lane held them all off
/// for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_failed_over() -> Result<()> {
    let _alone = ALONE.lock().await;
    let mut env = TestEnv::new(&PROVIDER).await?;
    let proxy = Proxy::start("127.0.0.1:5432".parse()?).await?;
    let direct = env.database_url.clone();
    // Every process of the scenario (the receiver, both schedulers, the three workers); the
    // test's own pool stays direct.
    env.route(Some(proxy.url(&direct)), None);
    let s = Scenario::start(env).await?;
    s.wait_progress(0.3).await?;
    // Struck while the processes' writes wait at the server, so that statements are in
    // flight when it strikes (an idle connection already fails sqlx's ping when next taken,
    // if only after the pool's 5 s wait for a connection).
    let mut hold = s.env.pool.begin().await?;
    sqlx::query("LOCK TABLE recipients IN EXCLUSIVE MODE")
        .execute(&mut *hold)
        .await?;
    sleep_ms(1_000).await;
    proxy.fail_over();
    hold.rollback().await?;
    let struck = Instant::now();
    let sent_then = s.sent().await;
    let written = herald_tests::wait_until(Duration::from_secs(120), || async {
        s.sent().await >= sent_then + 1_000
    })
    .await;
    let resumed = struck.elapsed();
    eprintln!("outcomes written again {resumed:?} after the failover");
    assert!(
        written.is_ok(),
        "no outcome written for 120 s after the failover"
    );
    // The receiver takes receipts again too (its statement lane used to stay stuck): in the
    // end every one the provider posted is stored.
    s.assert_receipts_stored().await;
    let report = s.finish("PostgreSQL failed over").await?;
    report.assert_clean(0);
    report.assert_within_cap();
    assert!(
        resumed < Duration::from_secs(40),
        "outcomes were written again only {resumed:?} after the failover"
    );
    Ok(())
}

/// A scenario on a PostgreSQL cluster of its own (and the machine's RabbitMQ).
/// A test environment on a RabbitMQ node of its own (one a scenario may kill or block).
async fn on_private_broker(label: &str) -> Result<(RabbitNode, TestEnv)> {
    let node = blocking(|| RabbitNode::start(label))?;
    let backends = Backends {
        postgres: None,
        rabbitmq: Some(vec![node.amqp_url()]),
    };
    let env = TestEnv::with(backends, &PROVIDER).await?;
    Ok((node, env))
}

async fn on_private_postgres() -> Result<(PrivatePostgres, Scenario)> {
    let pg = blocking(PrivatePostgres::start)?;
    let backends = Backends {
        postgres: Some(pg.url("postgres")),
        rabbitmq: None,
    };
    let s = Scenario::start(TestEnv::with(backends, &PROVIDER).await?).await?;
    Ok((pg, s))
}

/// PostgreSQL restarted (fast shutdown, started again at once) mid-run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted() -> Result<()> {
    let _alone = ALONE.lock().await;
    let (pg, s) = on_private_postgres().await?;
    s.wait_progress(0.3).await?;
    blocking(|| pg.stop("fast").and_then(|()| pg.start_again()))?;
    s.assert_receipts_stored().await;
    let report = s.finish("PostgreSQL restarted").await?;
    report.assert_clean(0);
    report.assert_within_cap();
    Ok(())
}

/// PostgreSQL down for 70 s mid-run, far past every lease and write retry: requests the
/// provider accepted are held (unacked) until their outcomes are written, never sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_70_s() -> Result<()> {
    let _alone = ALONE.lock().await;
    let (pg, s) = on_private_postgres().await?;
    s.wait_progress(0.3).await?;
    blocking(|| pg.stop("fast"))?;
    sleep_ms(70_000).await;
    blocking(|| pg.start_again())?;
    s.assert_receipts_stored().await;
    let report = s.finish("PostgreSQL down 70 s").await?;
    report.assert_clean(0);
    report.assert_within_cap();
    Ok(())
}

/// The RabbitMQ node SIGKILLed mid-run and started again 5 s later: quorum queues keep
/// their messages, and requests reach the provider again within 4 s of the node being back
/// (a worker's reconnect backoff reaches 1 s; 2.18, 2.23, 2.44 and 2.75 s were seen).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_and_restarted() -> Result<()> {
    let _alone = ALONE.lock().await;
    let (node, env) = on_private_broker("killed").await?;
    let s = Scenario::start(env).await?;
    s.wait_progress(0.3).await?;
    blocking(|| node.kill())?;
    sleep_ms(5_000).await;
    // Counted before the node boots: workers reconnecting during its boot count as resumed
    // at once.
    let before = s.requests().await;
    blocking(|| node.start_again())?;
    let back = Instant::now();
    let resumed = s
        .requests_resume(before, back, Duration::from_secs(30))
        .await?;
    eprintln!("requests resumed {resumed:?} after the broker was back");
    s.finish("RabbitMQ killed and restarted")
        .await?
        .assert_clean(0);
    assert!(
        resumed < Duration::from_secs(4),
        "requests resumed {resumed:?} after the broker was back"
    );
    Ok(())
}

/// A three-node RabbitMQ cluster; Herald is given the list of nodes. The node leading the
/// lane's quorum queue is stopped mid-run: dispatch goes on through the other two, nothing is
/// lost, and the node rejoins when started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_cluster_node_stopped() -> Result<()> {
    let _alone = ALONE.lock().await;
    let nodes = blocking(|| {
        std::thread::scope(|scope| {
            let starting: Vec<_> = ["a", "b", "c"]
                .map(|label| scope.spawn(move || RabbitNode::start(label)))
                .into_iter()
                .collect();
            starting
                .into_iter()
                .map(|s| s.join().expect("node start thread"))
                .collect::<Result<Vec<_>>>()
        })
    })?;
    blocking(|| {
        nodes[1]
            .join(&nodes[0])
            .and_then(|()| nodes[2].join(&nodes[0]))
    })?;
    assert_eq!(blocking(|| nodes[0].running_nodes())?.len(), 3);
    let backends = Backends {
        postgres: None,
        rabbitmq: Some(nodes.iter().map(RabbitNode::amqp_url).collect()),
    };
    let s = Scenario::start(TestEnv::with(backends, &PROVIDER).await?).await?;
    s.wait_progress(0.15).await?;
    let lane = topology::lane_queue(s.provider);
    let leader = blocking(|| nodes[0].queue_leader(&lane))?;
    let stopped = nodes
        .iter()
        .position(|n| n.name == leader)
        .expect("the lane's leader is a node of the cluster");
    blocking(|| nodes[stopped].stop())?;
    // A clean stop hands the lane's leadership over first, so sending goes on while it runs;
    // count from the moment the node is gone.
    let stopped_at = s.sent().await;
    assert!(
        stopped_at < RECIPIENTS as i64 - 2_000,
        "the node stopped too late to prove anything ({stopped_at} sent)"
    );
    // Dispatch goes on without the node.
    herald_tests::wait_until(Duration::from_secs(60), || async {
        s.sent().await >= stopped_at + 2_000
    })
    .await
    .map_err(|_| anyhow::anyhow!("dispatch stalled with a node of the cluster stopped"))?;
    blocking(|| nodes[stopped].start_again())?;
    let other = (stopped + 1) % nodes.len();
    let rejoined = herald_tests::wait_until(Duration::from_secs(30), || async {
        blocking(|| nodes[other].running_nodes()).is_ok_and(|n| n.len() == 3)
    })
    .await;
    assert!(rejoined.is_ok(), "the stopped node rejoined its cluster");
    s.finish("RabbitMQ cluster node stopped")
        .await?
        .assert_clean(0);
    Ok(())
}

/// The provider fails 5% of requests (500), holds 1% past the timeout and loses 3% of its
/// answers after accepting: retries, unknown outcomes settled by receipts, no second message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_errors_timeouts_and_lost_answers() -> Result<()> {
    let _alone = ALONE.lock().await;
    let env = TestEnv::new(&[
        "--latency",
        "uniform:20-200",
        "--error-rate",
        "0.05",
        "--timeout-rate",
        "0.01",
        "--timeout-hold-ms",
        "3000",
        "--lose-rate",
        "0.03",
    ])
    .await?;
    let report = Scenario::start(env)
        .await?
        .finish("provider errors, timeouts, lost answers")
        .await?;
    report.assert_clean(0);
    assert!(report.answers(500) > 0, "{report:?}");
    assert!(stat(&report.provider, "answers_lost") > 0, "{report:?}");
    // A 500's message was never created, so no receipt settles it: looked up (and not
    // found) before it is sent again.
    assert!(stat(&report.provider, "lookups") > 0, "{report:?}");
    Ok(())
}

/// The provider answers 503 to everything for 20 s mid-run: no recipient is charged an
/// attempt for it, breaker open or not, and all are sent once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_outage_20_s() -> Result<()> {
    let _alone = ALONE.lock().await;
    let s = Scenario::start(TestEnv::new(&PROVIDER).await?).await?;
    s.wait_progress(0.3).await?;
    s.env
        .simulator_config(serde_json::json!({"outage": true}))
        .await?;
    sleep_ms(20_000).await;
    s.env
        .simulator_config(serde_json::json!({"outage": false}))
        .await?;
    let campaign = s.campaign;
    let pool = s.env.pool.clone();
    let report = s.finish("provider outage 20 s").await?;
    report.assert_clean(0);
    let outage_answers = report.answers(503);
    let charged: (i32, i32) = sqlx::query_as(
        "SELECT min(attempts - throttles), max(attempts - throttles)
         FROM recipients WHERE campaign_id = $1",
    )
    .bind(campaign)
    .fetch_one(&pool)
    .await?;
    assert!(outage_answers > 0, "the provider answered 503s");
    assert_eq!(
        charged,
        (1, 1),
        "attempts charged beyond the one send ({outage_answers} outage answers)"
    );
    Ok(())
}

/// Undecodable messages published into the lane mid-run go to the dead-letter queue, one
/// each, and disturb nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages() -> Result<()> {
    const POISONED: i64 = 25;
    let _alone = ALONE.lock().await;
    let s = Scenario::start(TestEnv::new(&PROVIDER).await?).await?;
    s.wait_progress(0.2).await?;
    let connection = s.env.amqp().await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await?;
    let lane = topology::lane_queue(s.provider);
    for i in 0..POISONED {
        let body = format!("not a dispatch message {i}");
        channel
            .basic_publish(
                "".into(),
                lane.as_str().into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?
            .await?;
    }
    let _ = connection.close(200, "poisoned".into()).await;
    s.finish("poison messages").await?.assert_clean(POISONED);
    Ok(())
}
