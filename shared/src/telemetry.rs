//! Tracing set-up shared by every binary.
//!
//! Logs go to stderr; `HERALD_LOG` holds an env-filter directive (default `info`), and
//! `HERALD_LOG_FORMAT=json` switches to one JSON object per line for log shippers.

use tracing_subscriber::{EnvFilter, fmt};

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init(service: &'static str) {
    let filter = EnvFilter::try_from_env("HERALD_LOG").unwrap_or_else(|_| {
        EnvFilter::new("info,sqlx=warn,lapin=warn,amq_protocol=warn,hyper=warn,reqwest=warn")
    });
    let json = std::env::var("HERALD_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    tracing::debug!(service, "telemetry initialised");
}
