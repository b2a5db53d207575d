//! `herald`: the command-line client of Herald's admin API (`admin/API.md`).
#![allow(clippy::print_stdout)]

mod client;
mod commands;
mod model;
mod output;
mod upload;

use std::io::{ErrorKind, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use reqwest::Url;

use client::Client;
use commands::campaign::CampaignCommand;
use commands::contact::ContactCommand;
use commands::key::KeyCommand;
use commands::message::MessageCommand;
use commands::provider::ProviderCommand;
use commands::segment::SegmentCommand;
use commands::suppression::SuppressionCommand;
use commands::tenant::TenantCommand;
use commands::{CliError, Ctx};

/// The API refused the request (4xx).
const EXIT_REFUSED: u8 = 1;
/// Bad usage or local input (clap exits with the same code for its own checks).
const EXIT_USAGE: u8 = 2;
/// Heading of the options every subcommand takes, so they stand apart from its own.
const GLOBAL: &str = "Global options";

/// `progress --watch`: `--timeout` passed, or `--exit-status` and not every recipient sent.
const EXIT_NOT_DONE: u8 = 4;
/// Ctrl-C, as shells report a process ended by SIGINT.
const EXIT_INTERRUPTED: u8 = 130;

#[derive(Debug, Parser)]
#[command(
    name = "herald",
    version,
    about = "Manage Herald tenants, providers, campaigns, messages, contacts, segments and suppression lists",
    propagate_version = true,
    after_help = "Examples:
  export HERALD_ADMIN_URL=http://127.0.0.1:8080 HERALD_API_KEY=…
  herald campaign list --status running
  herald campaign progress $CAMPAIGN --watch
  herald --json campaign show $CAMPAIGN | jq .progress

Exit codes: 0 success, 1 the API refused the request (4xx), 2 usage or input error,
3 server unreachable, failing or asking to try again later (network, 5xx, 429), 4
`progress --watch` ended by --timeout or --exit-status, 130 interrupted."
)]
struct Cli {
    /// Admin server URL
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "HERALD_ADMIN_URL",
        default_value = "http://127.0.0.1:8080",
        value_parser = parse_base_url
    )]
    url: Url,

    /// API key, operator's or tenant's (the variable keeps it out of `ps`)
    // Not `required`: clap forbids required global args, and `--help` must work without it.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "HERALD_API_KEY",
        hide_env_values = true
    )]
    key: Option<String>,

    /// Print the API's JSON response (pretty) instead of tables, for scripts
    #[arg(long, global = true, help_heading = GLOBAL)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Tenants: create and change them (operator key); a tenant's own keys, status webhook
    /// and default providers (its own full key too)
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// API keys: list, revoke, rotate
    #[command(subcommand)]
    Key(KeyCommand),
    /// Providers that messages are sent through (Twilio SMS or voice, WhatsApp, HTTP)
    #[command(subcommand)]
    Provider(ProviderCommand),
    /// Campaigns: create, upload the audience, start, follow
    #[command(subcommand)]
    Campaign(CampaignCommand),
    /// Transactional messages: send one now, follow it
    #[command(subcommand)]
    Message(MessageCommand),
    /// The address book that segments select from
    #[command(subcommand)]
    Contact(ContactCommand),
    /// Saved contact filters, usable as a campaign's audience
    #[command(subcommand)]
    Segment(SegmentCommand),
    /// Addresses a tenant's messages must not reach on a channel (opt-outs)
    #[command(subcommand)]
    Suppression(SuppressionCommand),
    /// Check a Herald service's health endpoint: exit 0 if it answers 2xx within 2 s, 1
    /// otherwise (container healthchecks; needs no API key)
    Probe {
        /// e.g. http://127.0.0.1:9410/readyz
        #[arg(value_parser = parse_base_url)]
        url: Url,
    },
}

fn parse_base_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("{e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err("expected an http:// or https:// URL".to_owned());
    }
    Ok(url)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let (code, message) = report(&error);
            if let Some(message) = message {
                // An error may quote what a tenant wrote (a template the server refused).
                let message = output::terminal_safe(&message);
                let _ = std::io::stderr().lock().write_all(message.as_bytes());
            }
            ExitCode::from(code)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // One request at a time (or a poll loop): a single thread is plenty.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(dispatch(cli))?;
    Ok(())
}

async fn dispatch(cli: Cli) -> Result<(), CliError> {
    if let Command::Probe { url } = &cli.command {
        return commands::probe::run(url).await;
    }
    // A key read from a file keeps its line ending (`$(cat key.txt)` of a CRLF file): one
    // that is still no header value is the user's to fix, not a server that cannot be
    // reached.
    let key = cli
        .key
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty())
        .ok_or_else(|| CliError::Input("no API key: pass --key or set HERALD_API_KEY".into()))?;
    if reqwest::header::HeaderValue::from_str(&key).is_err() {
        return Err(CliError::Input(
            "the API key has characters no HTTP header takes (control characters?)".into(),
        ));
    }
    let ctx = Ctx {
        client: Client::new(cli.url, key)?,
        json: cli.json,
    };
    match cli.command {
        Command::Tenant(command) => commands::tenant::run(&ctx, command).await,
        Command::Key(command) => commands::key::run(&ctx, command).await,
        Command::Provider(command) => commands::provider::run(&ctx, command).await,
        Command::Campaign(command) => commands::campaign::run(&ctx, command).await,
        Command::Contact(command) => commands::contact::run(&ctx, command).await,
        Command::Message(command) => commands::message::run(&ctx, command).await,
        Command::Segment(command) => commands::segment::run(&ctx, command).await,
        Command::Suppression(command) => commands::suppression::run(&ctx, command).await,
        Command::Probe { .. } => unreachable!("answered above"),
    }
}

/// The exit code for `error` and what to tell the user, if anything.
fn report(error: &anyhow::Error) -> (u8, Option<String>) {
    let Some(error) = error.downcast_ref::<CliError>() else {
        // Only the runtime failing to start lands here: nothing was sent.
        return (EXIT_REFUSED, Some(format!("error: {error:#}\n")));
    };
    match error {
        CliError::Api(api) => (api.exit_code(), Some(output::render_error(api))),
        CliError::Input(message) => (EXIT_USAGE, Some(format!("error: {message}\n"))),
        CliError::Interrupted => (EXIT_INTERRUPTED, None),
        CliError::NotDone(message) => (EXIT_NOT_DONE, Some(format!("{message}\n"))),
        CliError::Unhealthy(_) => (EXIT_REFUSED, Some(format!("{error}\n"))),
        // The reader went away (`herald … | head`): that is how pipes end, not a failure.
        CliError::Output(e) if e.kind() == ErrorKind::BrokenPipe => (0, None),
        CliError::Output(_) => (EXIT_REFUSED, Some(format!("error: {error}\n"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn urls_must_be_http() {
        assert!(parse_base_url("http://127.0.0.1:8080").is_ok());
        assert!(parse_base_url("https://ops.example/herald/").is_ok());
        assert!(parse_base_url("ftp://x").is_err());
        assert!(parse_base_url("127.0.0.1:8080").is_err());
    }

    #[test]
    fn arguments_parse_where_documented() {
        let cli = Cli::try_parse_from([
            "herald",
            "campaign",
            "create",
            "spring",
            "--provider",
            "6f1c2a9e-4d1b-4c55-9a57-1d0b3e6f9a21",
            "--channel",
            "sms",
            "--template",
            "Hi",
            "--quiet-hours",
            "21:00-07:00",
            "--time-zone",
            "Europe/Paris",
            "--json",
            "--key",
            "k",
        ])
        .unwrap();
        assert!(cli.json);
        assert_eq!(cli.key.as_deref(), Some("k"));

        // A zone without a window means nothing: refuse rather than drop it.
        let err = Cli::try_parse_from([
            "herald",
            "campaign",
            "create",
            "spring",
            "--provider",
            "6f1c2a9e-4d1b-4c55-9a57-1d0b3e6f9a21",
            "--channel",
            "sms",
            "--template",
            "Hi",
            "--time-zone",
            "Europe/Paris",
        ])
        .unwrap_err();
        assert_eq!(err.exit_code(), 2);

        let err = Cli::try_parse_from(["herald", "campaign", "show", "not-a-uuid"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = Cli::try_parse_from(["herald", "tenant", "create", "acme", "--weight", "0"])
            .unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn message_flags_are_checked_like_campaigns() {
        let err =
            Cli::try_parse_from(["herald", "message", "list", "--state", "sentt"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("possible values"), "{err}");
        let err =
            Cli::try_parse_from(["herald", "message", "list", "--since", "yesterday"]).unwrap_err();
        assert!(
            err.to_string().contains("like 2026-11-22T10:00:00Z"),
            "{err}"
        );
        // As `campaign create` spells it; `--overflow` still works.
        for flag in ["--overflow-provider", "--overflow"] {
            Cli::try_parse_from([
                "herald",
                "message",
                "send",
                "--to",
                "+15550000001",
                "--channel",
                "sms",
                "--text",
                "hi",
                flag,
                "7d3c8a2e-0000-4000-8000-000000000001",
            ])
            .unwrap();
        }
    }

    #[test]
    fn exit_codes_follow_the_kind_of_failure() {
        let code = |e: CliError| report(&anyhow::Error::new(e)).0;
        let refused = client::ApiError::Refused {
            status: 409,
            body: model::ErrorBody::default(),
            retry_after: None,
        };
        assert_eq!(code(CliError::Api(refused)), 1);
        let unreachable = client::ApiError::Unreachable {
            url: "http://x/".into(),
            reason: "refused".into(),
        };
        assert_eq!(code(CliError::Api(unreachable)), 3);
        let server = client::ApiError::Server {
            status: 503,
            message: "down".into(),
            retry_after: None,
        };
        assert_eq!(code(CliError::Api(server)), 3);
        assert_eq!(code(CliError::Input("bad".into())), 2);
        assert_eq!(code(CliError::Interrupted), 130);
        assert_eq!(code(CliError::NotDone("still running".into())), 4);
        let pipe = std::io::Error::from(ErrorKind::BrokenPipe);
        assert_eq!(
            report(&anyhow::Error::new(CliError::Output(pipe))),
            (0, None)
        );
    }
}
