//! `herald message …`: transactional messages, one at a time, through the campaigns' pipeline.

use chrono::{DateTime, FixedOffset};
use clap::Subcommand;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::campaign::{
    Channel, QuietWindow, RecipientState, parse_quiet_hours, parse_time, quiet_hours_body,
};
use super::{CliError, Ctx, PageArgs, parse_idempotency_key, show_pages};
use crate::client::Filters;
use crate::model::NewMessage;
use crate::output;

#[derive(Debug, Subcommand)]
pub enum MessageCommand {
    /// Send one message now (answered once it is stored; `show` follows it)
    #[command(after_help = "Examples:
  herald message send --to +15551230001 --channel sms --provider $PROVIDER --text 'Your code is 4821'
  herald message send --to +15551230001 --channel sms --provider $PROVIDER \\
      --template 'Hi {{name}}, your code is {{code}}' --var name=Ada --var code=4821 \\
      --idempotency-key otp-ada-4821")]
    Send {
        /// The recipient's phone number (E.164, or national with the tenant's default region)
        #[arg(long)]
        to: String,
        #[arg(long, value_enum)]
        channel: Channel,
        /// Provider id [default: the tenant's default provider for the channel]
        #[arg(long, value_name = "ID")]
        provider: Option<Uuid>,
        /// Provider that takes what `--provider` has no room for
        #[arg(
            long = "overflow-provider",
            visible_alias = "overflow",
            value_name = "ID"
        )]
        overflow: Option<Uuid>,
        /// The message text
        #[arg(
            long,
            conflicts_with = "template",
            required_unless_present = "template"
        )]
        text: Option<String>,
        /// A template whose `{{variable}}`s are filled from `--var`
        #[arg(long)]
        template: Option<String>,
        /// A template variable, `name=value` (repeatable)
        #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var, requires = "template")]
        vars: Vec<(String, String)>,
        /// Not sent after this time (RFC 3339)
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        expires_at: Option<DateTime<FixedOffset>>,
        /// Not sent inside this daily window, e.g. 21:00-07:00 (leave out for one-time codes)
        #[arg(long, value_name = "HH:MM-HH:MM", value_parser = parse_quiet_hours)]
        quiet_hours: Option<QuietWindow>,
        /// IANA zone of --quiet-hours [default: the tenant's]
        #[arg(long, value_name = "TZ", requires = "quiet_hours")]
        time_zone: Option<String>,
        /// Sending again with the same key (within 24 h) sends nothing and shows the first
        #[arg(long, value_name = "KEY", value_parser = parse_idempotency_key)]
        idempotency_key: Option<String>,
        /// Owning tenant (operator key only)
        #[arg(long, value_name = "ID")]
        tenant: Option<Uuid>,
    },
    /// Show one message: its state, delivery, cost and receipts
    Show {
        /// Message id
        id: Uuid,
    },
    /// Withdraw a message still waiting (pending or queued): it is never sent. One in
    /// flight or finished cannot be (exit 1, naming its state)
    Cancel {
        /// Message id
        id: Uuid,
    },
    /// List messages, newest first
    #[command(after_help = "Examples:
  herald message list --to +15551230001        # what was sent to one number
  herald message list --state failed --since 2026-12-01T00:00:00Z --until 2026-12-02T00:00:00Z
  herald message list --tenant $TENANT_ID          # an operator's look at one tenant's")]
    List {
        /// Only messages in this state
        #[arg(long, value_enum)]
        state: Option<RecipientState>,
        /// Only messages to this address (a phone number in any spelling; without its country code, in the tenant's default region)
        #[arg(long, value_name = "ADDRESS")]
        to: Option<String>,
        /// Only messages accepted at or after this time (RFC 3339)
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        since: Option<DateTime<FixedOffset>>,
        /// Only messages accepted before this time (RFC 3339)
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        until: Option<DateTime<FixedOffset>>,
        /// Only this tenant's messages (operator key; a tenant key sees only its own)
        #[arg(long, value_name = "ID")]
        tenant: Option<Uuid>,
        #[command(flatten)]
        page: PageArgs,
    },
}

fn parse_var(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.to_owned()))
        }
        _ => Err("expected NAME=VALUE".to_owned()),
    }
}

pub async fn run(ctx: &Ctx, command: MessageCommand) -> Result<(), CliError> {
    match command {
        MessageCommand::Send {
            to,
            channel,
            provider,
            overflow,
            text,
            template,
            vars,
            expires_at,
            quiet_hours,
            time_zone,
            idempotency_key,
            tenant,
        } => {
            let variables: Map<String, Value> = vars
                .into_iter()
                .map(|(name, value)| (name, Value::String(value)))
                .collect();
            let body = NewMessage {
                tenant_id: tenant,
                to,
                channel: channel.as_str().to_owned(),
                provider_id: provider,
                overflow_provider_id: overflow,
                text,
                template,
                variables,
                expires_at,
                quiet_hours: quiet_hours.map(|w| quiet_hours_body(w, time_zone)),
            };
            let reply = ctx
                .client
                .send_message(&body, idempotency_key.as_deref())
                .await?;
            ctx.show(&reply, output::message)
        }
        MessageCommand::Show { id } => {
            let reply = ctx.client.get_message(id).await?;
            ctx.show(&reply, output::message)
        }
        MessageCommand::Cancel { id } => {
            let reply = ctx.client.cancel_message(id).await?;
            ctx.show(&reply, output::message)
        }
        MessageCommand::List {
            state,
            to,
            since,
            until,
            tenant,
            page,
        } => {
            let mut filters: Filters = Vec::new();
            if let Some(state) = state {
                filters.push(("state", state.as_str().to_owned()));
            }
            filters.extend(to.map(|to| ("to", to)));
            if let Some(since) = since {
                filters.push(("since", since.to_rfc3339()));
            }
            if let Some(until) = until {
                filters.push(("until", until.to_rfc3339()));
            }
            filters.extend(tenant.map(|t| ("tenant_id", t.to_string())));
            show_pages(
                ctx,
                page,
                async |at| ctx.client.list_messages(&filters, at).await,
                output::messages,
            )
            .await
        }
    }
}
