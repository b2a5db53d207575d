//! Where a bench's CPU time goes: user + system time per part of the system (Herald's
//! processes by pid, PostgreSQL and RabbitMQ by the user they run as), taken before and
//! after the measured sends, so each figure shows its cost per message.
//!
//! A process's own time plus that of its children it has waited for: PostgreSQL's backends
//! that exited meanwhile are counted in the postmaster's.

use anyhow::{Context, bail};
use std::collections::BTreeMap;

/// The parts of the system a bench reports the CPU time of.
#[derive(Debug, Clone, clap::Args)]
pub struct Parts {
    /// Parts of the system whose CPU time to report, per message: NAME=PID[,PID…] or
    /// NAME=uid:N (every process of that user); repeat for each part.
    #[arg(long = "cpu", value_name = "NAME=WHO")]
    pub parts: Vec<Part>,
}

/// What to measure: `name=pid[,pid…]` for processes, `name=uid:N` for every process of user N.
#[derive(Debug, Clone)]
pub struct Part {
    name: String,
    who: Who,
}

#[derive(Debug, Clone)]
enum Who {
    Pids(Vec<i32>),
    Uid(u32),
}

impl std::str::FromStr for Part {
    type Err = anyhow::Error;

    fn from_str(spec: &str) -> anyhow::Result<Self> {
        let (name, who) = spec
            .split_once('=')
            .context("expected NAME=PID[,PID…] or NAME=uid:N")?;
        if name.is_empty() {
            bail!("`{spec}`: the part needs a name");
        }
        let who = match who.strip_prefix("uid:") {
            Some(uid) => Who::Uid(
                uid.parse()
                    .with_context(|| format!("`{uid}` is not a uid"))?,
            ),
            None => Who::Pids(
                who.split(',')
                    .map(|pid| pid.parse().with_context(|| format!("`{pid}` is not a pid")))
                    .collect::<anyhow::Result<_>>()?,
            ),
        };
        Ok(Self {
            name: name.to_owned(),
            who,
        })
    }
}

/// CPU seconds used so far, per part.
#[derive(Debug, Clone, Default)]
pub struct Snapshot(BTreeMap<String, f64>);

impl Snapshot {
    pub fn take(parts: &[Part]) -> Self {
        let ticks = procfs::ticks_per_second() as f64;
        let seconds = |process: &procfs::process::Process| {
            process.stat().map_or(0.0, |s| {
                (s.utime + s.stime) as f64 + (s.cutime + s.cstime).max(0) as f64
            }) / ticks
        };
        let everyone: Vec<procfs::process::Process> =
            if parts.iter().any(|p| matches!(p.who, Who::Uid(_))) {
                procfs::process::all_processes()
                    .map(|all| all.filter_map(Result::ok).collect())
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
        Self(
            parts
                .iter()
                .map(|part| {
                    let used = match &part.who {
                        Who::Pids(pids) => pids
                            .iter()
                            .filter_map(|&pid| procfs::process::Process::new(pid).ok())
                            .map(|p| seconds(&p))
                            .sum(),
                        Who::Uid(uid) => everyone
                            .iter()
                            .filter(|p| p.uid().ok() == Some(*uid))
                            .map(seconds)
                            .sum(),
                    };
                    (part.name.clone(), used)
                })
                .collect(),
        )
    }

    /// One line: each part's CPU seconds since `before`, the total, and per message.
    pub fn report(&self, before: &Snapshot, messages: i64) -> String {
        let spent: Vec<(&String, f64)> = self
            .0
            .iter()
            .map(|(name, &now)| (name, now - before.0.get(name).copied().unwrap_or(0.0)))
            .collect();
        let total: f64 = spent.iter().map(|(_, s)| s).sum();
        let per_message = |s: f64| s * 1000.0 / messages.max(1) as f64;
        let parts: Vec<String> = spent
            .iter()
            .map(|(name, s)| format!("{name} {s:.1} s ({:.3} ms/msg)", per_message(*s)))
            .collect();
        format!(
            "CPU: {}; total {total:.1} s = {:.3} ms per message",
            parts.join(", "),
            per_message(total)
        )
    }
}

/// One line: the peak resident memory (`VmHWM`) of each part named by pids, summed over its
/// processes; parts named by user (PostgreSQL, RabbitMQ) are left out, their memory is
/// mostly shared buffers. `None` when no part is named by pids.
pub fn peak_memory(parts: &[Part]) -> Option<String> {
    let shown: Vec<String> = parts
        .iter()
        .filter_map(|part| match &part.who {
            Who::Pids(pids) => {
                let kib: u64 = pids
                    .iter()
                    .filter_map(|&pid| procfs::process::Process::new(pid).ok())
                    .filter_map(|p| p.status().ok()?.vmhwm)
                    .sum();
                Some(format!("{} {:.0} MiB", part.name, kib as f64 / 1024.0))
            }
            Who::Uid(_) => None,
        })
        .collect();
    (!shown.is_empty()).then(|| format!("peak RSS: {}", shown.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_read_from_their_specs() {
        let pids: Part = "worker=12,34".parse().unwrap();
        assert!(matches!(pids.who, Who::Pids(ref p) if p == &[12, 34]));
        let user: Part = "postgres=uid:105".parse().unwrap();
        assert!(matches!(user.who, Who::Uid(105)));
        assert!("worker".parse::<Part>().is_err());
        assert!("=12".parse::<Part>().is_err());
        assert!("worker=x".parse::<Part>().is_err());
    }

    #[test]
    fn a_report_shows_each_part_and_the_cost_per_message() {
        let before = Snapshot([("a".to_owned(), 1.0), ("b".to_owned(), 0.5)].into());
        let after = Snapshot([("a".to_owned(), 3.0), ("b".to_owned(), 1.5)].into());
        assert_eq!(
            after.report(&before, 1000),
            "CPU: a 2.0 s (2.000 ms/msg), b 1.0 s (1.000 ms/msg); total 3.0 s = 3.000 ms per message"
        );
    }

    #[test]
    fn this_process_is_seen_spending() {
        let me: Part = format!("me={}", std::process::id()).parse().unwrap();
        let before = Snapshot::take(std::slice::from_ref(&me));
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = Snapshot::take(std::slice::from_ref(&me));
        assert!(after.0["me"] > before.0["me"], "{after:?} after {before:?}");
        let memory = peak_memory(&[me]).unwrap();
        assert!(memory.starts_with("peak RSS: me "), "{memory}");
        assert!(!memory.contains(" 0 MiB"), "{memory}");
    }
}
