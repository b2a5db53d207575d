//! The soak: a steady load for `HERALD_SOAK_SECS` (600 by default) through three providers of
//! different speeds, each held to a rate limit, with a few faults (errors, answers lost after
//! acceptance, a worker killed half-way). Checked at the end: every Herald process's memory
//! flat, lane depths bounded, and Herald's counts equal to the providers' own. Ignored by
//! `cargo test`; run by `scripts/soak.sh`.

use crate::suite::ALONE;
use herald_tests::{Result, Service, TestEnv, numbers};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Between samples of memory, lane depths and progress.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// A process's memory at the end may exceed its memory once warm (a fifth into the run) by
/// this factor plus [`RSS_SLACK_KB`], no more.
const RSS_GROWTH: f64 = 1.25;
const RSS_SLACK_KB: u64 = 16 * 1024;
/// No lane ever holds more messages than this: the scheduler publishes about a tick's worth.
const MAX_LANE_DEPTH: i64 = 3_000;

/// Workers as deployed (the default lease grace of 10 s: a recipient of a rate-limited
/// provider may wait up to a tick or two for its send slot), with the fault suite's prefetch.
const WORKER_ENV: [(&str, &str); 1] = [("HERALD_WORKER_PREFETCH", "100")];

/// A provider of the soak: its simulator's arguments and its rate limit (per second).
struct Lane {
    name: &'static str,
    simulator: [&'static str; 4],
    rate: i64,
}

const LANES: [Lane; 3] = [
    Lane {
        name: "fast",
        simulator: ["--latency", "fixed:5", "--error-rate", "0.01"],
        rate: 150,
    },
    Lane {
        name: "medium",
        simulator: ["--latency", "uniform:100-300", "--lose-rate", "0.005"],
        rate: 100,
    },
    Lane {
        name: "slow",
        simulator: ["--latency", "normal:1500,300", "--error-rate", "0.01"],
        rate: 40,
    },
];

fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "ten minutes or more: scripts/soak.sh"]
async fn soak() -> Result<()> {
    let _alone = ALONE.lock().await;
    let seconds: u64 = std::env::var("HERALD_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let mut env = TestEnv::new(&LANES[0].simulator).await?;
    env.receiver().await?;
    let mut simulators = vec![env.simulator_url.clone()];
    for lane in &LANES[1..] {
        simulators.push(env.extra_simulator(&lane.simulator).await?);
    }
    let mut providers = Vec::new();
    let mut campaigns = Vec::new();
    for (i, (lane, url)) in LANES.iter().zip(&simulators).enumerate() {
        let provider = env.twilio_provider_at(lane.name, "twilio_sms", url).await?;
        sqlx::query(
            "UPDATE providers SET rate_limit = $2, rate_window_ms = 1000, timeout_ms = 4000
             WHERE id = $1",
        )
        .bind(provider)
        .bind(lane.rate as i32)
        .execute(&env.pool)
        .await?;
        let tenant = env.tenant(&format!("tenant-{}", lane.name), 1).await?;
        // Enough recipients to outlast the soak at the provider's rate.
        let size = (lane.rate as u64 * seconds * 5 / 4) as usize;
        let addresses = numbers(&format!("+1555{}", 6 + i), size);
        let campaign = env
            .campaign(tenant, provider, lane.name, &addresses, 2_000)
            .await?;
        providers.push(provider);
        campaigns.push(campaign);
    }
    let _schedulers = [env.scheduler(1_000, &[])?, env.scheduler(1_000, &[])?];
    let mut workers: Vec<Service> = (0..3)
        .map(|_| env.worker(&WORKER_ENV))
        .collect::<Result<_>>()?;
    for campaign in &campaigns {
        env.start(*campaign).await?;
    }

    let started = Instant::now();
    let run = Duration::from_secs(seconds);
    let mut rss: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    let mut depths: Vec<(u64, i64)> = Vec::new();
    let mut rates: Vec<f64> = Vec::new();
    let mut last_sent = 0;
    let mut killed = false;
    while started.elapsed() < run {
        tokio::time::sleep(SAMPLE_EVERY).await;
        let at = started.elapsed().as_secs();
        if !killed && started.elapsed() > run / 2 {
            // A fault half-way: a worker SIGKILLed with requests in flight, replaced.
            workers[0].kill();
            workers[0] = env.worker(&WORKER_ENV)?;
            killed = true;
        }
        let processes = _schedulers
            .iter()
            .chain(&workers)
            .map(|s| (s.name.clone(), s.pid()))
            .chain(
                env.receiver_pid()
                    .map(|p| ("herald-receiver".to_owned(), p)),
            );
        for (name, pid) in processes {
            if let Some(kb) = rss_kb(pid) {
                rss.entry(format!("{name}[{pid}]"))
                    .or_default()
                    .push((at, kb));
            }
        }
        let depth = env
            .queue_depths()
            .await?
            .iter()
            .filter(|(name, _)| name.starts_with("herald.dispatch."))
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0);
        depths.push((at, depth));
        let sent = sent(&env).await?;
        rates.push((sent - last_sent) as f64 / SAMPLE_EVERY.as_secs_f64());
        last_sent = sent;
        eprintln!("soak {at:>4}s: sent {sent}, deepest lane {depth}");
    }

    // Stop sending and let what is in flight settle.
    sqlx::query("UPDATE campaigns SET status = 'paused' WHERE id = ANY($1)")
        .bind(&campaigns)
        .execute(&env.pool)
        .await?;
    let settled = herald_tests::wait_until(Duration::from_secs(120), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM recipients WHERE state IN ('queued', 'sending', 'unknown')",
        )
        .fetch_one(&env.pool)
        .await
        .is_ok_and(|n| n == 0)
    })
    .await;
    assert!(settled.is_ok(), "recipients still in flight after the soak");

    // Herald's counts against each provider's.
    let mut per_provider = Vec::new();
    for ((lane, url), provider) in LANES.iter().zip(&simulators).zip(&providers) {
        let stats = env.simulator_stats_at(url).await?;
        let herald: (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state = 'sent'), count(*) FILTER (WHERE state = 'failed')
             FROM recipients r JOIN campaigns c ON c.id = r.campaign_id WHERE c.provider_id = $1",
        )
        .bind(provider)
        .fetch_one(&env.pool)
        .await?;
        // What the admin's progress shows: the counters, folded or not.
        let counted: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(n), 0)::bigint FROM campaign_bucket_counts cc
             JOIN campaigns c ON c.id = cc.campaign_id
             WHERE c.provider_id = $1 AND cc.state = 'sent'",
        )
        .bind(provider)
        .fetch_one(&env.pool)
        .await?;
        per_provider.push(json!({
            "provider": lane.name, "rate_limit": lane.rate, "herald_sent": herald.0,
            "progress_sent": counted,
            "herald_failed": herald.1, "accepted": stats["accepted"],
            "second_messages": stats["duplicates"], "answers_lost": stats["answers_lost"],
            "requests": stats["requests"],
        }));
    }

    let warm = seconds / 5;
    let memory: Vec<_> = rss
        .iter()
        .filter_map(|(process, samples)| {
            let at_warm = samples.iter().find(|(at, _)| *at >= warm)?.1;
            let end = samples.last()?;
            let peak = samples.iter().map(|(_, kb)| *kb).max()?;
            // Only processes that lived from warm to the end are judged.
            (samples.first()?.0 <= warm && end.0 + 2 * SAMPLE_EVERY.as_secs() >= seconds)
                .then(|| json!({"process": process, "warm_kb": at_warm, "end_kb": end.1, "peak_kb": peak}))
        })
        .collect();
    let mut sorted = rates.clone();
    sorted.sort_by(f64::total_cmp);
    let median_rate = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
    let summary = json!({
        "seconds": seconds,
        "sent": sent(&env).await?,
        "rate_per_s": {"median": median_rate, "min": sorted.first(), "max": sorted.last(),
                       "limits_sum": LANES.iter().map(|l| l.rate).sum::<i64>()},
        "deepest_lane": depths.iter().map(|(_, d)| *d).max(),
        "providers": per_provider,
        "memory": memory,
    });
    eprintln!("SOAK {summary}");

    for p in &per_provider {
        assert_eq!(p["herald_sent"], p["accepted"], "{summary}");
        assert_eq!(p["progress_sent"], p["herald_sent"], "{summary}");
        assert_eq!(p["second_messages"], 0, "{summary}");
        assert_eq!(p["herald_failed"], 0, "{summary}");
    }
    assert!(!memory.is_empty(), "{summary}");
    for m in &memory {
        let (warm_kb, end_kb) = (m["warm_kb"].as_u64(), m["end_kb"].as_u64());
        let (Some(warm_kb), Some(end_kb)) = (warm_kb, end_kb) else {
            continue;
        };
        assert!(
            end_kb as f64 <= warm_kb as f64 * RSS_GROWTH + RSS_SLACK_KB as f64,
            "memory grew: {m} ({summary})"
        );
    }
    assert!(
        depths.iter().all(|(_, d)| *d <= MAX_LANE_DEPTH),
        "a lane grew past {MAX_LANE_DEPTH}: {depths:?}"
    );
    // Steady: after the first minute, no sample window without progress.
    assert!(
        rates.iter().skip(6).all(|r| *r > 0.0),
        "dispatch stalled: {rates:?}"
    );
    Ok(())
}

async fn sent(env: &TestEnv) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM recipients WHERE state = 'sent'")
            .fetch_one(&env.pool)
            .await?,
    )
}
