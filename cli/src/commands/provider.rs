//! `herald provider …`.

use std::path::Path;

use clap::{Subcommand, ValueEnum};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{CliError, Ctx};
use crate::model::NewProvider;
use crate::output;

/// Which API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// A generic HTTP JSON API (body and headers templated by --setting)
    Http,
    /// Twilio Programmable Messaging
    TwilioSms,
    /// Twilio Voice (calls)
    TwilioVoice,
    /// WhatsApp Cloud API
    Whatsapp,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::TwilioSms => "twilio_sms",
            Self::TwilioVoice => "twilio_voice",
            Self::Whatsapp => "whatsapp",
        }
    }
}

/// What a request whose answer never came leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UnknownOutcome {
    /// Wait for a receipt; then look the message up where the API can, and retry (where it
    /// cannot: once receipts for later messages have come)
    AwaitReceipt,
    /// Retry at once (only for a provider that honours the idempotency key)
    Retry,
    /// Wait for a receipt; then fail rather than risk a second message
    Fail,
}

impl UnknownOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::AwaitReceipt => "await_receipt",
            Self::Retry => "retry",
            Self::Fail => "fail",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ProviderCommand {
    /// Register a provider that campaigns send through
    #[command(after_help = "Examples:
  herald provider create acme-http --endpoint https://sms.example/send --credentials @creds.json
  herald provider create twilio-eu --kind twilio-sms --setting from=+15005550006 \
      --credentials '{\"account_sid\": \"AC…\", \"auth_token\": \"…\"}' --rate-limit 100 --cost-per-message 0.0079
  herald provider create wa --kind whatsapp --setting phone_number_id=106540352242922 \
      --credentials @wa.json
  herald provider create shared-sms --endpoint https://sms.example/send --timeout-ms 5000 --max-in-flight 200

Settings and credentials per kind are listed in admin/API.md (Providers). Without --tenant an
operator key creates a shared provider every tenant may use. A tenant has at most
HERALD_ADMIN_MAX_PROVIDERS_PER_TENANT (20) providers in use: retire one to make room.")]
    Create {
        /// Provider name
        name: String,
        /// Which API the provider speaks
        #[arg(long, value_enum, default_value_t = Kind::Http)]
        kind: Kind,
        /// For http: the URL requests are POSTed to (required). For the other kinds: the
        /// API's base URL [default: the real API's]
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
        /// A non-secret setting of the kind, e.g. from=+15005550006 or preview_url=true
        /// (a value that parses as JSON is taken as JSON); repeat for more
        #[arg(long = "setting", value_name = "KEY=VALUE", value_parser = parse_setting)]
        settings: Vec<(String, Value)>,
        /// Owning tenant (operator key only; a tenant key always creates its own)
        #[arg(long, value_name = "ID")]
        tenant: Option<Uuid>,
        /// Secrets for the provider's API: a JSON object, or @FILE to read one (keeps them
        /// out of shell history). Never shown again.
        #[arg(long, value_name = "JSON|@FILE")]
        credentials: Option<String>,
        /// Request timeout in milliseconds, 10–300000 [default: 10000]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(10..=300_000))]
        timeout_ms: Option<u32>,
        /// Requests in flight to this provider at most, across the worker fleet (each live
        /// worker takes its share), 1–100000 [default: 100]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
        max_in_flight: Option<u32>,
        /// Attempts in all (the first included) before a transient failure becomes final,
        /// 1–100 [default: 5]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
        max_attempts: Option<u32>,
        /// First retry delay in milliseconds (doubles up to --retry-max-ms) [default: 1000]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=86_400_000))]
        retry_base_ms: Option<u32>,
        /// Longest retry delay in milliseconds [default: 300000]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=86_400_000))]
        retry_max_ms: Option<u32>,
        /// Requests allowed per --rate-window-ms across all workers (default: no limit)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        rate_limit: Option<u32>,
        /// The rate limit's window in milliseconds (default 1000)
        #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u32).range(1..=86_400_000))]
        rate_window_ms: Option<u32>,
        /// What one message costs through this provider (any currency), for the sends and
        /// cost per provider a campaign shows
        #[arg(long, value_name = "AMOUNT", value_parser = parse_cost)]
        cost_per_message: Option<f64>,
        /// What a request whose answer never came leads to [default: await-receipt]
        #[arg(long, value_enum)]
        unknown_outcome: Option<UnknownOutcome>,
        /// How long such a request waits for a receipt, in milliseconds [default: 120000]
        #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u32).range(1_000..=86_400_000))]
        unknown_window_ms: Option<u32>,
        /// Calls live at once through this provider, fleet-wide (default: no cap)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
        max_live_calls: Option<u32>,
        /// A call without a final status stops holding a line after this many ms
        /// [default: 600000]
        #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u32).range(1_000..=86_400_000))]
        live_call_timeout_ms: Option<u32>,
        /// Messages a calendar month (UTC) agreed with this provider: between a primary and
        /// its overflow, the one further behind its commitment goes first (default: none)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=2_000_000_000))]
        monthly_commitment: Option<u32>,
    },
    /// List providers (those in use; --retired for the retired ones too)
    List {
        /// Also the retired providers
        #[arg(long)]
        retired: bool,
    },
    /// Show one provider (credentials are never shown)
    Show {
        /// Provider id
        id: Uuid,
    },
    /// Replace a provider's credentials (all of them); workers use the new ones from their
    /// next request, and receipts signed with the old ones are still taken for --grace.
    /// Resume any campaign Herald paused because the old ones were refused.
    #[command(
        after_help = "Examples:\n  herald provider rotate-credentials 5f0c… --credentials @new-creds.json\n  herald campaign resume 9a1b…\n  herald provider rotate-credentials 5f0c… --credentials @new-creds.json --grace 0   # the old token leaked"
    )]
    RotateCredentials {
        /// Provider id
        id: Uuid,
        /// The new credentials: inline JSON or @FILE (kept out of shell history)
        #[arg(long, value_name = "JSON|@FILE")]
        credentials: String,
        /// Seconds receipts signed with the old credentials are still taken, up to 604800 (a
        /// week): a provider may sign with the old secret for a while (Twilio, until the
        /// secondary auth token is promoted). 0 for a leaked secret
        #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_GRACE_SECONDS,
              value_parser = clap::value_parser!(u64).range(0..=604_800))]
        grace: u64,
    },
    /// Retire a provider: no new campaign, message or tenant default may name it, and lists
    /// leave it out; it is kept, with its credentials, for what it sent (late receipts,
    /// lookups of lost answers). Refused while a default, a campaign not completed (a
    /// cancelled one until its requests in flight and lost answers settle), or messages not
    /// yet final name it
    #[command(after_help = "Example:\n  herald provider retire 5f0c…")]
    Retire {
        /// Provider id
        id: Uuid,
    },
    /// Set (or with --none remove) a provider's committed monthly volume
    #[command(after_help = "Example:\n  herald provider commitment 5f0c… --per-month 1000000")]
    Commitment {
        /// Provider id
        id: Uuid,
        /// Messages a calendar month (UTC)
        #[arg(long, value_name = "N", required_unless_present = "none",
              value_parser = clap::value_parser!(u32).range(1..=2_000_000_000))]
        per_month: Option<u32>,
        /// Remove the commitment
        #[arg(long, conflicts_with = "per_month")]
        none: bool,
    },
}

/// The admin's default grace for receipts signed with replaced credentials: a day.
const DEFAULT_GRACE_SECONDS: u64 = 86_400;

pub async fn run(ctx: &Ctx, command: ProviderCommand) -> Result<(), CliError> {
    match command {
        ProviderCommand::Create {
            name,
            kind,
            endpoint,
            settings,
            tenant,
            credentials,
            timeout_ms,
            max_in_flight,
            max_attempts,
            retry_base_ms,
            retry_max_ms,
            rate_limit,
            rate_window_ms,
            cost_per_message,
            unknown_outcome,
            unknown_window_ms,
            max_live_calls,
            live_call_timeout_ms,
            monthly_commitment,
        } => {
            let credentials = credentials.map(|arg| read_credentials(&arg)).transpose()?;
            let body = NewProvider {
                tenant_id: tenant,
                name,
                kind: kind.as_str(),
                endpoint,
                settings: settings.into_iter().collect::<Map<String, Value>>(),
                credentials,
                timeout_ms,
                max_in_flight,
                max_attempts,
                retry_base_ms,
                retry_max_ms,
                rate_limit,
                rate_window_ms,
                cost_per_message,
                unknown_outcome: unknown_outcome.map(UnknownOutcome::as_str),
                unknown_window_ms,
                max_live_calls,
                live_call_timeout_ms,
                monthly_commitment,
            };
            let reply = ctx.client.create_provider(&body).await?;
            ctx.show(&reply, output::provider)
        }
        ProviderCommand::List { retired } => {
            let reply = ctx.client.list_providers(retired).await?;
            ctx.show(&reply, |list| output::providers(list))
        }
        ProviderCommand::Show { id } => {
            let reply = ctx.client.get_provider(id).await?;
            ctx.show(&reply, output::provider)
        }
        ProviderCommand::Retire { id } => {
            let reply = ctx.client.retire_provider(id).await?;
            ctx.show(&reply, output::provider)
        }
        ProviderCommand::RotateCredentials {
            id,
            credentials,
            grace,
        } => {
            let credentials = read_credentials(&credentials)?;
            // The server's default is not sent: an older server knows no such field.
            let grace = (grace != DEFAULT_GRACE_SECONDS).then_some(grace);
            let reply = ctx
                .client
                .rotate_provider_credentials(id, &credentials, grace)
                .await?;
            ctx.show(&reply, output::provider)
        }
        ProviderCommand::Commitment { id, per_month, .. } => {
            let reply = ctx.client.set_provider_commitment(id, per_month).await?;
            ctx.show(&reply, output::provider)
        }
    }
}

/// `--setting KEY=VALUE`: `true`, `false`, a JSON object or array as JSON; anything else as
/// text, digits included (no setting is a number, and a WhatsApp phone number id is a
/// string of digits).
fn parse_setting(arg: &str) -> Result<(String, Value), String> {
    let (key, value) = arg
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got `{arg}`"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("the key is empty in `{arg}`"));
    }
    let value = match value.trim_start().chars().next() {
        Some('{' | '[') => {
            serde_json::from_str(value).map_err(|e| format!("{key}: not valid JSON ({e})"))?
        }
        _ if value == "true" => Value::Bool(true),
        _ if value == "false" => Value::Bool(false),
        _ => Value::String(value.to_owned()),
    };
    Ok((key.to_owned(), value))
}

/// `--cost-per-message`: a finite amount of at least 0 (`nan` and `inf` parse as numbers,
/// and JSON would carry them as `null`: no cost at all).
fn parse_cost(arg: &str) -> Result<f64, String> {
    match arg.trim().parse::<f64>() {
        Ok(cost) if cost.is_finite() && cost >= 0.0 => Ok(cost),
        _ => Err(format!("expected an amount of at least 0, got `{arg}`")),
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
    fn a_cost_is_a_finite_amount() {
        assert_eq!(parse_cost("0.0075"), Ok(0.0075));
        assert_eq!(parse_cost("0"), Ok(0.0));
        for refused in ["nan", "inf", "-1", "-0.5", "abc", ""] {
            assert!(parse_cost(refused).is_err(), "{refused}");
        }
    }

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
    fn settings_are_text_unless_they_are_json() {
        assert_eq!(
            parse_setting("from=+15005550006").unwrap(),
            ("from".to_owned(), serde_json::json!("+15005550006"))
        );
        assert_eq!(
            parse_setting("preview_url=true").unwrap().1,
            serde_json::json!(true)
        );
        assert_eq!(
            parse_setting(r#"template={"name": "promo", "language": "en"}"#)
                .unwrap()
                .1["name"],
            "promo"
        );
        // A phone number id is a string of digits, not a number.
        assert_eq!(
            parse_setting("phone_number_id=106540352242922").unwrap().1,
            serde_json::json!("106540352242922")
        );
        assert!(
            parse_setting("template={name:")
                .unwrap_err()
                .starts_with("template: not valid JSON")
        );
        assert!(parse_setting("from").unwrap_err().contains("KEY=VALUE"));
        assert!(parse_setting("=x").unwrap_err().contains("key is empty"));
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
