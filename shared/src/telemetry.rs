//! Tracing set-up shared by every binary.
//!
//! Logs go to stderr; `HERALD_LOG` holds an env-filter directive (default below), and
//! `HERALD_LOG_FORMAT=json` switches to one JSON object per line for log shippers. Both are
//! read here rather than by clap (the subscriber must exist before anything else runs), and
//! checked like every other setting: a value that cannot be read names the variable and
//! exits 2, rather than logging at some other level or format than the operator asked.

use tracing_subscriber::{EnvFilter, fmt};

/// `HERALD_LOG` when unset: Herald's own events from `info`, its libraries' from `warn`.
pub const DEFAULT_FILTER: &str =
    "info,sqlx=warn,lapin=warn,amq_protocol=warn,hyper=warn,reqwest=warn";

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// The filter and format `HERALD_LOG` and `HERALD_LOG_FORMAT` ask for (`None`: unset).
pub fn settings(log: Option<&str>, format: Option<&str>) -> Result<(EnvFilter, Format), String> {
    let filter = match log.map(str::trim) {
        None | Some("") => EnvFilter::new(DEFAULT_FILTER),
        Some(directives) => EnvFilter::try_new(directives)
            .map_err(|e| format!("invalid value for HERALD_LOG ({directives:?}): {e}"))?,
    };
    let format = match format.map(|f| f.trim().to_ascii_lowercase()).as_deref() {
        None | Some("" | "text") => Format::Text,
        Some("json") => Format::Json,
        Some(other) => {
            return Err(format!(
                "invalid value for HERALD_LOG_FORMAT ({other:?}): must be `text` or `json`"
            ));
        }
    };
    Ok((filter, format))
}

/// Installs the global subscriber. Call once, first thing in `main`; exits 2 with a message
/// naming the variable when `HERALD_LOG` or `HERALD_LOG_FORMAT` cannot be read.
pub fn init(service: &'static str) {
    let var = |name: &str| std::env::var(name).ok();
    let (filter, format) = match settings(
        var("HERALD_LOG").as_deref(),
        var("HERALD_LOG_FORMAT").as_deref(),
    ) {
        Ok(settings) => settings,
        Err(message) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("error: {message}");
            }
            std::process::exit(2);
        }
    };
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        Format::Json => builder.json().init(),
        Format::Text => builder.init(),
    }
    tracing::debug!(service, "telemetry initialised");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_or_blank_settings_take_the_defaults() {
        for (log, format) in [
            (None, None),
            (Some(""), Some("")),
            (Some(" "), Some("TEXT")),
        ] {
            let (filter, read) = settings(log, format).unwrap();
            assert_eq!(read, Format::Text);
            assert_eq!(
                filter.to_string(),
                EnvFilter::new(DEFAULT_FILTER).to_string()
            );
        }
        assert_eq!(settings(None, Some("Json")).unwrap().1, Format::Json);
        let (filter, _) = settings(Some("debug,sqlx=info"), None).unwrap();
        assert_eq!(
            filter.to_string(),
            EnvFilter::new("debug,sqlx=info").to_string()
        );
    }

    #[test]
    fn unreadable_settings_name_their_variable() {
        let log = settings(Some("herald_worker=loud"), None).unwrap_err();
        assert!(log.contains("HERALD_LOG "), "{log}");
        let format = settings(None, Some("logfmt")).unwrap_err();
        assert!(
            format.contains("HERALD_LOG_FORMAT") && format.contains("logfmt"),
            "{format}"
        );
    }
}
