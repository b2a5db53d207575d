//! Processes die: workers (SIGKILL, SIGTERM) and the leading scheduler. Nothing is lost,
//! nothing stuck, nothing sent twice because of a handover.

use herald_tests::{Result, TestEnv, numbers, wait_until};
use std::time::{Duration, Instant};

async fn sent(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM recipients WHERE state = 'sent'")
        .fetch_one(&env.pool)
        .await
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_terminated_workers_lose_nothing() -> Result<()> {
    // ~250 msg/s per worker, so plenty of work is left at each step. Like Twilio, the
    // simulator sends a second message for a repeated key: only receipts tell Herald what a
    // killed worker's requests did.
    let mut env = TestEnv::new(&["--latency", "fixed:200"]).await?;
    env.receiver().await?;
    let mut provider = env.provider();
    provider.timeout_ms = 2_000;
    provider.unknown_window_ms = 5_000;
    let provider = env.create_provider(&provider).await?;
    let tenant = env.tenant("acme", 1).await?;
    let total = 6_000;
    let campaign = env
        .campaign(tenant, provider, "c", &numbers("+1555900", total), 1_000)
        .await?;
    let _scheduler = env.scheduler(500, &[])?;
    let worker_env = [
        ("HERALD_WORKER_PREFETCH", "50"),
        ("HERALD_WORKER_LEASE_GRACE_MS", "1000"),
    ];
    let mut killed = env.worker(&worker_env)?;
    let mut terminated = env.worker(&worker_env)?;
    env.start(campaign).await?;

    let progress = |n: i64| {
        let env = &env;
        move || async move { sent(env).await >= n }
    };
    wait_until(Duration::from_secs(30), progress(300))
        .await
        .map_err(|_| anyhow::anyhow!("no progress"))?;
    killed.kill();
    // Past the killed worker's leases (2 s timeout + 1 s grace), the other keeps going.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let before_term = sent(&env).await;
    wait_until(Duration::from_secs(30), progress(before_term + 300))
        .await
        .map_err(|_| anyhow::anyhow!("stalled"))?;

    let asked = Instant::now();
    terminated.terminate();
    let status = terminated
        .wait(Duration::from_secs(35))
        .await
        .unwrap_or_else(|| {
            panic!(
                "worker exits after SIGTERM; log:\n{}",
                terminated.log_text()
            )
        });
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM exits 0\n{}",
        terminated.log_text()
    );
    assert!(
        asked.elapsed() < Duration::from_secs(30),
        "drained within the drain timeout"
    );
    assert!(
        terminated.log_text().contains("draining"),
        "the worker drained before exiting"
    );
    // It finished what it held: nothing of it is left mid-send.
    let sending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM recipients WHERE state = 'sending'")
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(
        sending, 0,
        "a terminated worker leaves no recipient mid-send"
    );
    assert!(
        sent(&env).await < total as i64,
        "work remained for a new worker"
    );

    // At this provider (no lookup), a request the killed worker may have made is sent again
    // only once the provider reports on messages sent after it (start + 2 s timeout + 1 s
    // grace + 5 s); the new worker keeps the same pace so that such messages exist. One at
    // the default prefetch could finish the rest before that, and the killed worker's
    // unanswered requests would rightly wait half an hour to be failed, not resent.
    let _fresh = env.worker(&worker_env)?;
    env.wait_completed(&[campaign], Duration::from_secs(60))
        .await?;
    let states = env.states(campaign).await?;
    assert_eq!(states.get("sent"), Some(&(total as i64)), "{states:?}");
    let stats = env.simulator_stats().await?;
    // A SIGKILL may cut a request after the provider took it: its receipt settles the
    // recipient, and nothing is sent again.
    assert_eq!(stats["accepted"], total, "{stats}");
    assert_eq!(stats["duplicates"], 0, "{stats}");
    Ok(())
}

/// How many sessions wait on `holder` (a backend's pid) while running a statement that
/// contains `statement` (found by its text: what pg_stat_activity keeps of it).
async fn waiting_on(env: &TestEnv, holder: i32, statement: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE $1 = ANY (pg_blocking_pids(pid)) AND strpos(query, $2) > 0",
    )
    .bind(holder)
    .bind(statement)
    .fetch_one(&env.pool)
    .await
    .unwrap_or(0)
}

/// How many sessions hold the leader's advisory lock. Only that key: workers take a
/// transaction's advisory lock of their own at each heartbeat (`store::fleet`), which a count
/// of every advisory lock caught now and then. pg_locks shows a 64-bit key as its high and
/// low halves.
async fn leader_lock_holders(env: &TestEnv) -> i64 {
    let key = herald_store::leadership::LOCK_KEY;
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks
         WHERE locktype = 'advisory' AND granted AND objsubid = 1
           AND classid::int8 = $1 AND objid::int8 = $2
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .bind(key >> 32)
    .bind(key & 0xffff_ffff)
    .fetch_one(&env.pool)
    .await
    .unwrap_or(0)
}

/// The leader's check asks PostgreSQL whether its session holds the lock, not only whether
/// the session answers: behind a pooler in transaction mode another server session would
/// answer, and two schedulers could lead unnoticed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leaders_check_asks_whether_its_session_holds_the_lock() -> Result<()> {
    use herald_store::leadership;
    use sqlx::Connection;
    let env = TestEnv::new(&[]).await?;
    let (me, another) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let mut leader = sqlx::PgConnection::connect(&env.database_url).await?;
    let mut other = sqlx::PgConnection::connect(&env.database_url).await?;
    assert!(leadership::try_lock(&mut leader, me).await?);
    assert!(leadership::still_held(&mut leader, me).await?);
    assert!(
        !leadership::still_held(&mut other, me).await?,
        "a session without the lock"
    );
    assert!(!leadership::try_lock(&mut other, another).await?);
    // Another scheduler's statement on the same server session (a pooler in transaction
    // mode) takes the re-entrant lock too: the first sees it is not alone.
    assert!(leadership::try_lock(&mut leader, another).await?);
    assert!(
        !leadership::still_held(&mut leader, me).await?,
        "two leaders"
    );
    leadership::unlock(&mut leader).await?;
    leadership::unlock(&mut leader).await?;
    assert!(
        !leadership::still_held(&mut leader, another).await?,
        "a session that let it go"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_scheduler_takes_over_within_two_ticks_without_double_sends() -> Result<()> {
    const TICK_MS: u64 = 1000;
    let env = TestEnv::new(&["--latency", "fixed:50"]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let tenant = env.tenant("acme", 1).await?;
    let total = 6_000;
    let campaign = env
        .campaign(tenant, provider, "c", &numbers("+1555950", total), 300)
        .await?;
    let requeue = [("HERALD_SCHEDULER_REQUEUE_AFTER_MS", "5000")];
    let mut first = env.scheduler(TICK_MS, &requeue)?;
    wait_until(Duration::from_secs(10), || async {
        leader_lock_holders(&env).await == 1
    })
    .await
    .map_err(|_| anyhow::anyhow!("no leader"))?;
    let mut second = env.scheduler(TICK_MS, &requeue)?;
    let _worker = env.worker(&[("HERALD_WORKER_PREFETCH", "50")])?;
    env.start(campaign).await?;

    wait_until(Duration::from_secs(30), || async {
        sent(&env).await >= 1_000
    })
    .await
    .map_err(|_| anyhow::anyhow!("no progress"))?;
    assert!(first.log_text().contains("became the leader"));
    assert!(
        !second.log_text().contains("became the leader"),
        "only one scheduler leads"
    );
    assert_eq!(leader_lock_holders(&env).await, 1);

    first.kill();
    let killed_at = Instant::now();
    wait_until(Duration::from_millis(5 * TICK_MS), || async {
        second.log_text().contains("became the leader")
    })
    .await
    .map_err(|_| anyhow::anyhow!("the standby never took over"))?;
    let takeover = killed_at.elapsed();
    assert!(
        takeover <= Duration::from_millis(2 * TICK_MS + 200),
        "takeover took {takeover:?}"
    );

    env.wait_completed(&[campaign], Duration::from_secs(90))
        .await?;
    assert_eq!(
        env.states(campaign).await?.get("sent"),
        Some(&(total as i64))
    );
    let stats = env.simulator_stats().await?;
    assert_eq!(stats["duplicates"], 0, "no recipient sent twice: {stats}");
    assert_eq!(stats["requests"], total, "one request per recipient");
    let _ = second.wait(Duration::from_millis(1)).await;
    Ok(())
}

/// SIGTERM in the middle of a tick: the scheduler carries the tick to its end (it claims and
/// publishes what it planned), starts no other pass (a campaign started after the SIGTERM
/// stays scheduled), then exits 0 and releases leadership; what the tick published is sent
/// with no scheduler left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_scheduler_finishes_its_tick_before_exiting() -> Result<()> {
    let env = TestEnv::new(&[]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let tenant = env.tenant("acme", 1).await?;
    let total = 50;
    let campaign = env
        .campaign(tenant, provider, "c", &numbers("+1555960", total), 100)
        .await?;
    let later = env
        .campaign(tenant, provider, "later", &numbers("+1555961", 10), 100)
        .await?;
    // A worker first: a scheduler publishes nothing into a lane no live worker may send to.
    let _worker = env.worker(&[])?;
    env.wait_live_worker(&provider.to_string()).await?;
    // Started, and made running, while no scheduler listens: its wake is lost, and the
    // first tick takes it up.
    env.start(campaign).await?;
    sqlx::query(
        "UPDATE campaigns SET status = 'running', started_at = coalesce(started_at, start_at)
         WHERE id = $1",
    )
    .bind(campaign)
    .execute(&env.pool)
    .await?;

    // The campaign's row held: the tick's claim, which locks the campaign's cursor, waits
    // for it (activation would not: it skips a row someone holds).
    let mut hold = env.pool.begin().await?;
    let holder: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *hold)
        .await?;
    sqlx::query("SELECT id FROM campaigns WHERE id = $1 FOR UPDATE")
        .bind(campaign)
        .fetch_one(&mut *hold)
        .await?;

    let mut scheduler = env.scheduler(500, &[])?;
    wait_until(Duration::from_secs(15), || async {
        waiting_on(&env, holder, "AS p(campaign_id, n, retries)").await >= 1
    })
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "the scheduler's tick never waited on the held campaign row; log:\n{}",
            scheduler.log_text()
        )
    })?;
    assert_eq!(leader_lock_holders(&env).await, 1, "the scheduler leads");

    scheduler.terminate();
    // Mid-tick: it does not exit while its tick cannot finish.
    let early = scheduler.wait(Duration::from_secs(2)).await;
    assert!(
        early.is_none(),
        "exited with its tick unfinished ({early:?}); log:\n{}",
        scheduler.log_text()
    );
    assert!(
        scheduler.log_text().contains("SIGTERM received"),
        "the signal arrived during the tick; log:\n{}",
        scheduler.log_text()
    );
    let requests = env.simulator_stats().await?["requests"]
        .as_u64()
        .unwrap_or(u64::MAX);
    assert_eq!(requests, 0, "nothing was dispatched before the SIGTERM");
    // Due after the SIGTERM, with a wake: a tick or a wake-up after the one in progress
    // would start it (the tick in progress read the campaigns before it was started).
    env.start(later).await?;

    let released = Instant::now();
    hold.rollback().await?;
    let status = scheduler
        .wait(Duration::from_secs(15))
        .await
        .unwrap_or_else(|| {
            panic!(
                "the scheduler did not exit after its tick; log:\n{}",
                scheduler.log_text()
            )
        });
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM exits 0; log:\n{}",
        scheduler.log_text()
    );
    eprintln!("exited {:?} after its tick could go on", released.elapsed());
    assert!(scheduler.log_text().contains("scheduler stopped"));
    assert_eq!(leader_lock_holders(&env).await, 0, "leadership released");

    // The tick went to its end after the SIGTERM: it claimed the campaign's recipients and
    // published them, so the worker sends every one with no scheduler left (a claim left
    // unpublished would wait for a scheduler's stale-claim sweep).
    assert_eq!(env.campaign_status(campaign).await?, "running");
    assert_eq!(
        env.campaign_status(later).await?,
        "scheduled",
        "a pass started after the SIGTERM; log:\n{}",
        scheduler.log_text()
    );
    let done = wait_until(Duration::from_secs(20), || async {
        sent(&env).await == total as i64
    })
    .await;
    let count = sent(&env).await;
    anyhow::ensure!(
        done.is_ok(),
        "{count} of {total} sent: the terminated scheduler did not publish its tick's claim"
    );
    let stats = env.simulator_stats().await?;
    assert_eq!(
        stats["requests"], total,
        "one request per recipient: {stats}"
    );
    assert_eq!(stats["duplicates"], 0, "{stats}");
    Ok(())
}

/// A worker whose broker is out of reach still holds requests in flight: it keeps beating
/// the fleet's heartbeat with them (so the others do not share out its room while they
/// last), and a SIGTERM then drains them as it would with the broker there: their outcomes
/// are written before it exits, none left mid-send for the sweeper to guess at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_from_the_broker_keeps_its_place_and_drains_on_sigterm() -> Result<()> {
    // Requests last 15 s: all of them are still in flight at the checks below.
    let Busy {
        env,
        proxy,
        mut worker,
        campaign,
        in_flight,
        _scheduler,
    } = a_worker_behind_a_proxy_with_requests_in_flight(15_000).await?;

    proxy.set(herald_tests::proxy::Mode::Down);
    let cut = Instant::now();
    wait_until(Duration::from_secs(5), || async {
        worker.log_text().contains("broker connection lost")
    })
    .await
    .map_err(|_| anyhow::anyhow!("the worker never saw the broker go"))?;
    // Past the fleet's 6 s: a worker not heard from for that long counts as gone.
    tokio::time::sleep(Duration::from_secs(7).saturating_sub(cut.elapsed())).await;
    let (fresh, held): (bool, i64) = sqlx::query_as(
        "SELECT seen_at > now() - interval '6 seconds',
                (SELECT coalesce(sum(value::int8), 0)::int8 FROM jsonb_each_text(caps))
         FROM workers",
    )
    .fetch_one(&env.pool)
    .await?;
    assert!(fresh, "the heartbeat went on without the broker");
    assert!(
        held >= in_flight,
        "it holds {held} of its {in_flight} requests"
    );
    assert!(
        sending(&env).await >= in_flight,
        "its requests are still in flight"
    );
    // A worker that never reached the broker has nothing in flight: it takes no place in
    // the fleet (which would shrink every other worker's share).
    let mut stranger = env.worker(&[("HERALD_WORKER_PREFETCH", "40")])?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM workers")
        .fetch_one(&env.pool)
        .await?;
    stranger.kill();
    assert_eq!(
        rows, 1,
        "a worker that never had a session joined the fleet"
    );

    worker.terminate();
    exits_drained(&env, &mut worker, campaign, in_flight).await?;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM workers")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(left, 0, "it left the fleet");
    Ok(())
}

/// A worker whose broker stops answering without closing the connection (a cut network)
/// still drains on SIGTERM: it waits only briefly for the broker to confirm its consumers'
/// cancel (the confirmation would come only when the broker's heartbeat is missed, a minute
/// or more), so its requests' outcomes are written within the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_broker_goes_silent_drains_on_sigterm() -> Result<()> {
    // Requests last 10 s: all of them are still in flight at the SIGTERM.
    let Busy {
        env,
        proxy,
        mut worker,
        campaign,
        in_flight,
        _scheduler,
    } = a_worker_behind_a_proxy_with_requests_in_flight(10_000).await?;

    proxy.set(herald_tests::proxy::Mode::Cut);
    let asked = Instant::now();
    worker.terminate();
    exits_drained(&env, &mut worker, campaign, in_flight).await?;
    // 5 s for the cancel, what is left of the 10 s requests, 5 s for the close.
    assert!(
        asked.elapsed() < Duration::from_secs(25),
        "drained once its requests were answered, not at the drain timeout: {:?}",
        asked.elapsed()
    );
    assert!(
        worker
            .log_text()
            .contains("did not confirm the consumers' cancel"),
        "{}",
        worker.log_text()
    );
    Ok(())
}

/// A worker, its broker reached through a proxy, with at least 20 requests in flight to a
/// provider answering in `latency_ms`.
struct Busy {
    env: TestEnv,
    proxy: herald_tests::proxy::Proxy,
    worker: herald_tests::Service,
    campaign: uuid::Uuid,
    in_flight: i64,
    _scheduler: herald_tests::Service,
}

async fn a_worker_behind_a_proxy_with_requests_in_flight(latency_ms: u64) -> Result<Busy> {
    let mut env = TestEnv::new(&["--latency", &format!("fixed:{latency_ms}")]).await?;
    let mut provider = env.provider();
    provider.timeout_ms = 30_000;
    let provider = env.create_provider(&provider).await?;
    let tenant = env.tenant("acme", 1).await?;
    let campaign = env
        .campaign(tenant, provider, "c", &numbers("+1555970", 100), 100)
        .await?;
    let scheduler = env.scheduler(250, &[])?;
    let proxy = route_broker_through_a_proxy(&mut env).await?;
    let worker = env.worker(&[("HERALD_WORKER_PREFETCH", "40")])?;
    env.start(campaign).await?;
    wait_until(Duration::from_secs(20), || async {
        sending(&env).await >= 20
    })
    .await
    .map_err(|_| anyhow::anyhow!("no requests in flight"))?;
    let in_flight = sending(&env).await;
    Ok(Busy {
        env,
        proxy,
        worker,
        campaign,
        in_flight,
        _scheduler: scheduler,
    })
}

/// `worker`, sent SIGTERM, exits 0 within the orchestrators' grace period (45 s for 30 s
/// of drain, docs/operations.md) after draining: the outcomes of its `in_flight` requests
/// are written, none left mid-send.
async fn exits_drained(
    env: &TestEnv,
    worker: &mut herald_tests::Service,
    campaign: uuid::Uuid,
    in_flight: i64,
) -> Result<()> {
    let status = worker
        .wait(Duration::from_secs(30))
        .await
        .unwrap_or_else(|| {
            panic!(
                "the worker exits after SIGTERM; log:\n{}",
                worker.log_text()
            )
        });
    assert_eq!(status.code(), Some(0), "{}", worker.log_text());
    assert!(
        worker.log_text().contains("draining"),
        "{}",
        worker.log_text()
    );
    assert_eq!(sending(env).await, 0, "outcomes written before it exited");
    let states = env.states(campaign).await?;
    assert!(
        states.get("sent").is_some_and(|&n| n >= in_flight),
        "{states:?}"
    );
    Ok(())
}

async fn sending(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM recipients WHERE state = 'sending'")
        .fetch_one(&env.pool)
        .await
        .unwrap_or(0)
}

/// Routes the processes `env` starts from now on to RabbitMQ through a proxy the test
/// controls.
async fn route_broker_through_a_proxy(env: &mut TestEnv) -> Result<herald_tests::proxy::Proxy> {
    let proxy = proxy_to(&env.amqp_url, 5672).await?;
    env.route(None, Some(proxy.url(&env.amqp_url)));
    Ok(proxy)
}

/// Routes the processes `env` starts from now on to PostgreSQL through a proxy the test
/// controls; the test's own pool stays direct.
async fn route_database_through_a_proxy(env: &mut TestEnv) -> Result<herald_tests::proxy::Proxy> {
    let proxy = proxy_to(&env.database_url, 5432).await?;
    env.route(Some(proxy.url(&env.database_url)), None);
    Ok(proxy)
}

/// A proxy to the service `url` names (`default_port` if it names none).
async fn proxy_to(url: &str, default_port: u16) -> Result<herald_tests::proxy::Proxy> {
    let url = url::Url::parse(url)?;
    let host = url.host_str().unwrap_or("127.0.0.1");
    let upstream = tokio::net::lookup_host((host, url.port().unwrap_or(default_port)))
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{host} has no address"))?;
    Ok(herald_tests::proxy::Proxy::start(upstream).await?)
}

/// A worker's writes held up by a lock for longer than the database deadline (2 s here):
/// PostgreSQL cancels each at its statement timeout (four fifths of the deadline) before the
/// worker gives it up, and the worker tries again until the lock goes. Given up by the
/// worker alone, a lease went on waiting at the server and was taken once the lock went,
/// after the worker had moved on: its retry found the recipient taken, and the recipient
/// waited out its lease and was judged like a lost answer (an attempt spent, no request
/// ever made: without the statement timeout, 3 of 600 were still waiting 90 s later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_held_up_past_the_deadline_are_cancelled_not_taken_late() -> Result<()> {
    // About 100 msg/s (20 in flight, 200 ms each): leases and outcomes are being written
    // when the lock is taken.
    let env = TestEnv::new(&["--latency", "fixed:200"]).await?;
    let mut provider = env.provider();
    provider.timeout_ms = 2_000;
    provider.unknown_window_ms = 2_000;
    let provider = env.create_provider(&provider).await?;
    let tenant = env.tenant("acme", 1).await?;
    let total = 600;
    let campaign = env
        .campaign(tenant, provider, "c", &numbers("+1555910", total), 1_000)
        .await?;
    let _scheduler = env.scheduler(250, &[])?;
    let worker = env.worker(&[
        ("HERALD_DB_DEADLINE_MS", "2000"),
        ("HERALD_WORKER_PREFETCH", "20"),
        ("HERALD_WORKER_LEASE_GRACE_MS", "1000"),
    ])?;
    env.start(campaign).await?;
    wait_until(Duration::from_secs(30), || async {
        sent(&env).await >= 100
    })
    .await
    .map_err(|_| anyhow::anyhow!("no progress"))?;

    let mut hold = env.pool.begin().await?;
    sqlx::query("LOCK TABLE recipients IN EXCLUSIVE MODE")
        .execute(&mut *hold)
        .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    hold.rollback().await?;

    let all_sent = wait_until(Duration::from_secs(90), || async {
        sent(&env).await >= total as i64
    })
    .await;
    let states = env.states(campaign).await?;
    all_sent.map_err(|_| anyhow::anyhow!("not all sent: {:?}", states))?;
    let log = worker.log_text();
    assert!(
        log.contains("canceling statement due to statement timeout"),
        "the lock held a write up past its statement timeout\n{log}"
    );
    let (more_than_one, judged_lost): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE attempts - throttles <> 1),
                count(*) FILTER (WHERE outcome_unknown_at IS NOT NULL)
         FROM recipients WHERE campaign_id = $1",
    )
    .bind(campaign)
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(
        (more_than_one, judged_lost),
        (0, 0),
        "recipients that took more than one attempt, or were judged like a lost answer"
    );
    let accepted = env.simulator_accepted().await?;
    assert_eq!(
        accepted.len(),
        total,
        "every recipient reached the provider"
    );
    assert!(
        accepted.values().all(|&n| n == 1),
        "a recipient was sent twice"
    );
    Ok(())
}

/// A scheduler's wake-up listener only reads, so a failover (its connection leading nowhere,
/// nothing telling it so) would stop wake-ups until TCP gave up, about 15 minutes, every
/// start and transactional message waiting for a tick meanwhile. It pings its connection
/// after a silence and listens again on a new one: a campaign started after the failover is
/// sent at once, not at the next tick (30 s here; 25 s after its start without the pings).
/// Nor does the pass it wakes ping each of the pool's stranded connections in turn, 2 s each
/// (6.3 s after the start when it did).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_ups_are_heard_again_after_a_failover() -> Result<()> {
    const TICK: Duration = Duration::from_secs(30);
    let mut env = TestEnv::new(&[]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let tenant = env.tenant("acme", 1).await?;
    let before = env
        .campaign(tenant, provider, "before", &numbers("+1555920", 10), 100)
        .await?;
    let after = env
        .campaign(tenant, provider, "after", &numbers("+1555921", 10), 100)
        .await?;
    // The worker straight to the database: only the scheduler's connections fail over.
    let _worker = env.worker(&[])?;
    env.wait_live_worker(&provider.to_string()).await?;
    let proxy = route_database_through_a_proxy(&mut env).await?;
    let scheduler = env.scheduler(TICK.as_millis() as u64, &[])?;
    wait_until(Duration::from_secs(10), || async {
        leader_lock_holders(&env).await == 1
    })
    .await
    .map_err(|_| anyhow::anyhow!("no leader"))?;
    // Not before it listens: a start it could not hear yet would wait for the tick (as once
    // on a loaded machine, 30 s).
    wait_until(Duration::from_secs(10), || async {
        scheduler.log_text().contains("listening for wake-ups")
    })
    .await
    .map_err(|_| anyhow::anyhow!("the scheduler does not listen for wake-ups"))?;

    let first_send = async |campaign| -> Result<Duration> {
        let started = Instant::now();
        env.start(campaign).await?;
        wait_until(TICK, || async {
            env.states(campaign)
                .await
                .is_ok_and(|states| states.contains_key("sent"))
        })
        .await
        .map_err(|_| anyhow::anyhow!("nothing sent within a tick"))?;
        Ok(started.elapsed())
    };
    // Heard while the connection leads somewhere.
    let heard = first_send(before).await?;
    assert!(
        heard < Duration::from_secs(5),
        "before the failover: {heard:?}"
    );

    proxy.fail_over();
    // The next tick finds the leadership's connection lost (a check of 5 s) and steps down;
    // a wake-up after it contends again on a new connection.
    wait_until(TICK + Duration::from_secs(10), || async {
        scheduler.log_text().contains("no longer the leader")
    })
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "the failover went unnoticed; log:\n{}",
            scheduler.log_text()
        )
    })?;
    let heard = first_send(after).await?;
    eprintln!("after the failover, the first send {heard:?} after the start");
    assert!(
        heard < Duration::from_secs(5),
        "after the failover, sent {heard:?} after its start (a tick is {TICK:?}); log:\n{}",
        scheduler.log_text()
    );
    Ok(())
}

/// The sweeper takes back a recipient whose lease ran out while its worker's outcome could
/// not be written (a lock, a slow database): the outcome, written after, still lands, since
/// what the worker learnt is newer than the sweeper's guess. Written while the sweeper's
/// change was being committed, it was dropped: the statement judged the state it read
/// under lock (the sweeper's `unknown`) but updated only a row whose state its snapshot
/// held the same (`sending`), so it updated none, and the recipient, sent, went on as a
/// lost answer (at a provider without receipts, never sent and never settled). Here the
/// test plays the sweeper, its change held open until the worker's outcome waits on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_written_as_the_sweeper_takes_its_recipient_back_still_lands() -> Result<()> {
    let env = TestEnv::new(&["--latency", "fixed:1000"]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let tenant = env.tenant("acme", 1).await?;
    let campaign = env
        .campaign(tenant, provider, "c", &numbers("+1555930", 1), 100)
        .await?;
    let _scheduler = env.scheduler(250, &[])?;
    let worker = env.worker(&[])?;
    env.start(campaign).await?;
    wait_until(Duration::from_secs(20), || async {
        sending(&env).await == 1
    })
    .await
    .map_err(|_| anyhow::anyhow!("never leased"))?;

    let mut sweeper = env.pool.begin().await?;
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *sweeper)
        .await?;
    // What `recover_expired_leases` makes of it (its window an hour, so that nothing but
    // the worker's outcome moves it on).
    let taken = sqlx::query(
        "UPDATE recipients SET state = 'unknown', lease_until = NULL,
                outcome_unknown_at = attempted_at, unknown_via = sent_via,
                next_attempt_at = now() + interval '1 hour',
                last_error = 'worker lease expired during attempt 1 (outcome unknown)'
         WHERE campaign_id = $1 AND state = 'sending'",
    )
    .bind(campaign)
    .execute(&mut *sweeper)
    .await?
    .rows_affected();
    assert_eq!(taken, 1, "the request was still in flight");
    wait_until(Duration::from_secs(10), || async {
        waiting_on(&env, pid, "AS o(id, seq, state").await == 1
    })
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "the worker's outcome never waited on the sweeper's change; log:\n{}",
            worker.log_text()
        )
    })?;
    sweeper.commit().await?;

    let settled = wait_until(Duration::from_secs(10), || async { sent(&env).await == 1 }).await;
    let (state, message_id, unknown): (String, Option<String>, bool) = sqlx::query_as(
        "SELECT state, provider_message_id, outcome_unknown_at IS NOT NULL
         FROM recipients WHERE campaign_id = $1",
    )
    .bind(campaign)
    .fetch_one(&env.pool)
    .await?;
    anyhow::ensure!(
        settled.is_ok(),
        "the worker's outcome was dropped: {state}, message id {message_id:?}"
    );
    assert!(message_id.is_some(), "the provider's message id is kept");
    assert!(!unknown, "no longer taken for a lost answer");
    assert_eq!(env.simulator_stats().await?["requests"], 1);
    Ok(())
}

/// While PostgreSQL is out of reach (down: connections refused; cut: nothing answers), the
/// admin's API answers 503 with `Retry-After` (the caller's cue to try again), never a 500
/// nor a wait longer than the database deadline, and it serves again once the database is
/// back, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_answers_503_with_retry_after_while_postgresql_is_out_of_reach() -> Result<()> {
    use herald_tests::proxy::Mode;
    use reqwest::Method;
    let mut env = TestEnv::new(&[]).await?;
    let proxy = route_database_through_a_proxy(&mut env).await?;
    let admin = env.admin().await?;
    let key = admin.operator_key.clone();
    let answer = async |method: Method, path: &str| -> Result<(u16, Option<String>, String)> {
        let body = (method == Method::POST).then(|| serde_json::json!({"name": "acme"}));
        let response = admin.send(&key, method, path, body).await?;
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let status = response.status().as_u16();
        Ok((status, retry_after, response.text().await?))
    };
    for mode in [Mode::Down, Mode::Cut] {
        let (status, _, text) = answer(Method::GET, "/tenants").await?;
        assert_eq!(status, 200, "before {mode:?}: {text}");
        proxy.set(mode);
        for (method, path) in [(Method::GET, "/tenants"), (Method::POST, "/tenants")] {
            let asked = Instant::now();
            let (status, retry_after, text) = answer(method.clone(), path).await?;
            let took = asked.elapsed();
            eprintln!("{method} {path} with the database {mode:?}: {status} after {took:?}");
            assert_eq!(
                status,
                503,
                "{method} {path} with the database {mode:?}: {text}; log:\n{}",
                admin.log_text()
            );
            assert!(
                retry_after.is_some_and(|s| s.parse::<u32>().is_ok()),
                "{method} {path} with the database {mode:?}: no Retry-After"
            );
            assert!(
                !text.contains("5432") && !text.to_lowercase().contains("postgres"),
                "the answer names the database: {text}"
            );
            assert!(
                took < Duration::from_secs(10),
                "{method} {path} with the database {mode:?} answered after {took:?}"
            );
        }
        proxy.set(Mode::Open);
        wait_until(Duration::from_secs(20), || async {
            answer(Method::GET, "/tenants")
                .await
                .is_ok_and(|(status, _, _)| status == 200)
        })
        .await
        .map_err(|_| anyhow::anyhow!("the admin did not serve again after {mode:?}"))?;
    }
    Ok(())
}

/// A request whose statement is on its way when the network to PostgreSQL is cut waits on
/// a connection that will never answer (the kernel gives up on it after about 15 minutes):
/// the admin answers it 503 with `Retry-After` at its deadline
/// (`HERALD_ADMIN_REQUEST_TIMEOUT_MS`), and serves again once the network is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_request_caught_by_a_cut_is_answered_503_at_its_deadline() -> Result<()> {
    use herald_tests::proxy::Mode;
    let mut env = TestEnv::new(&[]).await?;
    let proxy = route_database_through_a_proxy(&mut env).await?;
    let admin = env
        .admin_with(&[("HERALD_ADMIN_REQUEST_TIMEOUT_MS", "4000")])
        .await?;
    let list = || admin.send(&admin.operator_key, reqwest::Method::GET, "/tenants", None);
    assert_eq!(list().await?.status(), 200);

    // The tenants held, so that the request's statement waits on PostgreSQL's side; then
    // the cut.
    let mut hold = env.pool.begin().await?;
    let holder: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *hold)
        .await?;
    sqlx::query("LOCK TABLE tenants IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *hold)
        .await?;
    let asked = Instant::now();
    let cut = async {
        wait_until(Duration::from_secs(5), || async {
            waiting_on(&env, holder, "FROM tenants").await >= 1
        })
        .await
        .map_err(|_| anyhow::anyhow!("the request never reached PostgreSQL"))?;
        proxy.set(Mode::Cut);
        hold.commit().await?;
        Ok::<_, anyhow::Error>(())
    };
    let (answer, cut) = tokio::join!(tokio::time::timeout(Duration::from_secs(40), list()), cut);
    cut?;
    let answer = answer.map_err(|_| {
        anyhow::anyhow!(
            "the request was not answered within 40 s; log:\n{}",
            admin.log_text()
        )
    })??;
    let took = asked.elapsed();
    eprintln!("answered {} after {took:?}", answer.status());
    assert_eq!(answer.status(), 503, "{}", admin.log_text());
    assert!(answer.headers().contains_key(reqwest::header::RETRY_AFTER));
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(8),
        "answered after {took:?}, its deadline 4 s"
    );

    proxy.set(Mode::Open);
    wait_until(Duration::from_secs(20), || async {
        list().await.is_ok_and(|answer| answer.status() == 200)
    })
    .await
    .map_err(|_| anyhow::anyhow!("the admin did not serve again after the cut"))?;
    Ok(())
}

/// A leader that cannot reach the broker (here a URL where none listens; as well a route
/// to it lost while its database session lives) steps down after three failed checks, and
/// stops contending, so a standby that can publish leads. Before, it kept the lock for as
/// long as its database session lived, every tick failing, and nothing was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_reach_the_broker_leaves_the_lead_to_one_that_can() -> Result<()> {
    const TICK_MS: u64 = 500;
    let env = TestEnv::new(&[]).await?;
    let provider = env.create_provider(&env.provider()).await?;
    let tenant = env.tenant("acme", 1).await?;
    let campaign = env
        .campaign(tenant, provider, "c", &numbers("+1555951", 200), 100)
        .await?;
    let cut_off = env.scheduler(TICK_MS, &[("HERALD_AMQP_URL", "amqp://127.0.0.1:1/%2f")])?;
    wait_until(Duration::from_secs(10), || async {
        leader_lock_holders(&env).await == 1
    })
    .await
    .map_err(|_| anyhow::anyhow!("no leader"))?;
    assert!(cut_off.log_text().contains("became the leader"));
    let able = env.scheduler(TICK_MS, &[])?;
    let _worker = env.worker(&[])?;
    env.start(campaign).await?;
    env.wait_completed(&[campaign], Duration::from_secs(30))
        .await
        .map_err(|e| anyhow::anyhow!("{e}; the cut-off scheduler:\n{}", cut_off.log_text()))?;
    assert!(able.log_text().contains("became the leader"));
    assert!(
        cut_off
            .log_text()
            .contains("cannot reach the broker; stepping down")
    );
    assert!(
        cut_off.log_text().matches("became the leader").count() == 1,
        "the cut-off scheduler did not contend again"
    );
    assert_eq!(env.simulator_stats().await?["duplicates"], 0);
    Ok(())
}
