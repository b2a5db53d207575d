//! Liveness and readiness: what the orchestrator asks before sending work or traffic.
//!
//! A service names its checks (the database, the broker) when it starts; each stays failing
//! until first reported healthy. Readiness is false while any check fails or while the
//! process drains after SIGTERM; a standby scheduler is ready, and says "standby".

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// What this process does in its fleet, where that differs from one replica to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Leader,
    Standby,
}

/// The readiness answer (the body of `/readyz`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    #[serde(skip)]
    pub ready: bool,
    /// `ready`, `standby`, `draining` or `not ready`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Each check's failure, `null` when it passes.
    pub checks: BTreeMap<&'static str, Option<String>>,
}

/// The decision, apart from how the facts were gathered.
pub fn readiness(
    checks: &BTreeMap<&'static str, Option<String>>,
    draining: bool,
    role: Option<Role>,
) -> Readiness {
    let failing = checks.values().any(Option::is_some);
    let (ready, status) = if draining {
        (false, "draining")
    } else if failing {
        (false, "not ready")
    } else if role == Some(Role::Standby) {
        (true, "standby")
    } else {
        (true, "ready")
    };
    Readiness {
        ready,
        status,
        role,
        checks: checks.clone(),
    }
}

#[derive(Debug, Default)]
struct State {
    checks: BTreeMap<&'static str, Option<String>>,
    draining: bool,
    role: Option<Role>,
}

/// The process's health, shared by the tasks that know it and the ops listener.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Mutex<State>>);

impl Health {
    /// A health with these checks, each failing until reported.
    pub fn new(checks: &[&'static str]) -> Self {
        let state = State {
            checks: checks
                .iter()
                .map(|&name| (name, Some("not checked yet".to_owned())))
                .collect(),
            ..State::default()
        };
        Self(Arc::new(Mutex::new(state)))
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let result = f(&mut state);
        let ready = readiness(&state.checks, state.draining, state.role).ready;
        metrics::gauge!(super::metrics::READY).set(if ready { 1.0 } else { 0.0 });
        result
    }

    /// Reports a check: `Ok` passes, `Err` says why it fails.
    pub fn report(&self, check: &'static str, result: Result<(), String>) {
        self.with(|state| {
            let now = result.err();
            let before = state.checks.insert(check, now.clone());
            if before.as_ref().map(Option::is_some) != Some(now.is_some()) {
                match &now {
                    None => tracing::info!(check, "health check passes"),
                    Some(error) => tracing::warn!(check, %error, "health check fails"),
                }
            }
        });
    }

    /// After SIGTERM: not ready any more, whatever the checks say.
    pub fn drain(&self) {
        self.with(|state| state.draining = true);
    }

    pub fn set_role(&self, role: Role) {
        self.with(|state| state.role = Some(role));
    }

    pub fn readiness(&self) -> Readiness {
        self.with(|state| readiness(&state.checks, state.draining, state.role))
    }

    /// Why `check` fails now (`None`: it passes, or is no check of this process's).
    pub fn failing(&self, check: &str) -> Option<String> {
        self.with(|state| state.checks.get(check).cloned().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_fails_until_reported_and_draining_overrides_everything() {
        let health = Health::new(&["database", "broker"]);
        assert!(!health.readiness().ready);
        health.report("database", Ok(()));
        assert_eq!(health.readiness().status, "not ready");
        health.report("broker", Ok(()));
        assert_eq!(health.readiness().status, "ready");
        health.report("broker", Err("connection refused".into()));
        let now = health.readiness();
        assert!(!now.ready);
        assert_eq!(now.checks["broker"].as_deref(), Some("connection refused"));
        health.report("broker", Ok(()));
        health.drain();
        assert_eq!(health.readiness().status, "draining");
        assert!(!health.readiness().ready);
    }

    #[test]
    fn a_healthy_standby_is_ready_and_says_so() {
        let health = Health::new(&["database"]);
        health.report("database", Ok(()));
        health.set_role(Role::Standby);
        let now = health.readiness();
        assert!(now.ready);
        assert_eq!(now.status, "standby");
        health.set_role(Role::Leader);
        assert_eq!(health.readiness().status, "ready");
        health.report("database", Err("timed out".into()));
        assert_eq!(health.readiness().status, "not ready");
    }
}
