//! `herald provider …`.

use std::path::Path;

use clap::Subcommand;
use serde_json::Value;
use uuid::Uuid;

use super::{CliError, Ctx};
use crate::model::NewProvider;
use crate::output;

#[derive(Debug, Subcommand)]
pub enum ProviderCommand {
    /// Register an HTTP provider that campaigns send through
    #[command(after_help = "Examples:
  herald provider create twilio-eu --endpoint https://sms.example/send --credentials @creds.json
  herald provider create shared-sms --endpoint https://sms.example/send --timeout-ms 5000 --max-in-flight 200

Without --tenant an operator key creates a shared provider every tenant may use.")]
    Create {
        /// Provider name
        name: String,
        /// The provider's send URL (http or https)
        #[arg(long, value_name = "URL")]
        endpoint: String,
        /// Owning tenant (operator key only; a tenant key always creates its own)
        #[arg(long, value_name = "ID")]
        tenant: Option<Uuid>,
        /// Secrets for the provider's API: a JSON object, or @FILE to read one (keeps them
        /// out of shell history). Never shown again.
        #[arg(long, value_name = "JSON|@FILE")]
        credentials: Option<String>,
        /// Request timeout in milliseconds
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        timeout_ms: Option<u32>,
        /// Requests one worker keeps in flight to this provider at most
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        max_in_flight: Option<u32>,
        /// Attempts in all (the first included) before a transient failure becomes final
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        max_attempts: Option<u32>,
        /// First retry delay in milliseconds (doubles up to --retry-max-ms)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        retry_base_ms: Option<u32>,
        /// Longest retry delay in milliseconds
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        retry_max_ms: Option<u32>,
        /// Requests allowed per --rate-window-ms across all workers (default: no limit)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        rate_limit: Option<u32>,
        /// The rate limit's window in milliseconds (default 1000)
        #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u32).range(1..=86_400_000))]
        rate_window_ms: Option<u32>,
    },
    /// List providers
    List,
    /// Show one provider (credentials are never shown)
    Show {
        /// Provider id
        id: Uuid,
    },
}

pub async fn run(ctx: &Ctx, command: ProviderCommand) -> Result<(), CliError> {
    match command {
        ProviderCommand::Create {
            name,
            endpoint,
            tenant,
            credentials,
            timeout_ms,
            max_in_flight,
            max_attempts,
            retry_base_ms,
            retry_max_ms,
            rate_limit,
            rate_window_ms,
        } => {
            let credentials = credentials.map(|arg| read_credentials(&arg)).transpose()?;
            let body = NewProvider {
                tenant_id: tenant,
                name,
                kind: "http",
                endpoint,
                credentials,
                timeout_ms,
                max_in_flight,
                max_attempts,
                retry_base_ms,
                retry_max_ms,
                rate_limit,
                rate_window_ms,
            };
            let reply = ctx.client.create_provider(&body).await?;
            ctx.show(&reply, output::provider)
        }
        ProviderCommand::List => {
            let reply = ctx.client.list_providers().await?;
            ctx.show(&reply, |list| output::providers(list))
        }
        ProviderCommand::Show { id } => {
            let reply = ctx.client.get_provider(id).await?;
            ctx.show(&reply, output::provider)
        }
    }
}

/// `--credentials`: inline JSON, or `@FILE`.
fn read_credentials(arg: &str) -> Result<Value, CliError> {
    let (text, origin) = match arg.strip_prefix('@') {
        Some(path) => {
            let text = std::fs::read_to_string(Path::new(path))
                .map_err(|e| CliError::Input(format!("cannot read {path}: {e}")))?;
            (text, path.to_owned())
        }
        None => (arg.to_owned(), "--credentials".to_owned()),
    };
    parse_credentials(&text).map_err(|reason| CliError::Input(format!("{origin}: {reason}")))
}

fn parse_credentials(text: &str) -> Result<Value, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err("credentials must be a JSON object".to_owned()),
        // serde's message has the line and column, which is what one needs to fix it.
        Err(e) => Err(format!("not valid JSON ({e})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_a_json_object() {
        assert_eq!(
            parse_credentials(r#"{"token": "s3cr3t"}"#).unwrap(),
            serde_json::json!({"token": "s3cr3t"})
        );
        assert_eq!(
            parse_credentials("[1]").unwrap_err(),
            "credentials must be a JSON object"
        );
        assert!(
            parse_credentials("{token:")
                .unwrap_err()
                .starts_with("not valid JSON")
        );
    }

    #[test]
    fn credentials_can_come_from_a_file() {
        let dir = std::env::temp_dir().join(format!("herald-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("creds.json");
        std::fs::write(&path, r#"{"user": "u", "password": "p"}"#).unwrap();
        let value = read_credentials(&format!("@{}", path.display())).unwrap();
        assert_eq!(value["user"], "u");
        let missing = read_credentials("@/nonexistent/creds.json").unwrap_err();
        assert!(matches!(missing, CliError::Input(m) if m.starts_with("cannot read /nonexistent")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
