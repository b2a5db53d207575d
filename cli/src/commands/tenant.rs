//! `herald tenant …` (operator key; a tenant's `full` key for its own tenant's keys).

use clap::{Subcommand, ValueEnum};
use uuid::Uuid;

use super::campaign::Channel;
use super::{CliError, Ctx, PageArgs, note, show_pages};
use crate::client::Filters;
use crate::model::NewTenant;
use crate::output;

/// What a tenant's key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Access {
    /// Everything of the tenant: campaigns, contacts, providers, keys, messages
    Full,
    /// Only the messages API: send, read and cancel messages
    Send,
}

impl Access {
    fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Send => "send",
        }
    }
}

/// `herald tenant update`'s settings: only those given change.
#[derive(Debug, clap::Args)]
pub struct TenantChanges {
    /// Tenant id
    id: Uuid,
    /// A new name (unique)
    #[arg(long)]
    name: Option<String>,
    /// Share of dispatch capacity relative to other tenants, 1–1000
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    weight: Option<u32>,
    /// IANA zone of its day, and of the quiet hours of campaigns and messages made from now
    /// on (the day's message count carries over)
    #[arg(long, value_name = "TZ")]
    time_zone: Option<String>,
    /// Calls it may have live at once, 1–100000, or `none`
    #[arg(long, value_name = "N|none", value_parser = count_or_none(100_000))]
    max_live_calls: Option<OrNone<u32>>,
    /// Region of uploaded numbers written without a country code, or `none`
    #[arg(long, value_name = "CC|none", value_parser = text_or_none)]
    default_region: Option<OrNone<String>>,
    /// Transactional messages accepted and not yet finished at once, 1–10000000
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    max_queued_messages: Option<u32>,
    /// Transactional messages it may send a day, 1–100000000, or `none`
    #[arg(long, value_name = "N|none", value_parser = count_or_none(100_000_000))]
    max_messages_per_day: Option<OrNone<u32>>,
}

impl TenantChanges {
    /// The body of the change: the settings given, `null` for those given as `none`.
    fn body(self) -> serde_json::Map<String, serde_json::Value> {
        let mut changes = serde_json::Map::new();
        let mut set = |field: &str, value: Option<serde_json::Value>| {
            if let Some(value) = value {
                changes.insert(field.to_owned(), value);
            }
        };
        set("name", self.name.map(Into::into));
        set("weight", self.weight.map(Into::into));
        set("time_zone", self.time_zone.map(Into::into));
        set("max_live_calls", self.max_live_calls.map(|v| v.0.into()));
        set("default_region", self.default_region.map(|v| v.0.into()));
        set(
            "max_queued_messages",
            self.max_queued_messages.map(Into::into),
        );
        set(
            "max_messages_per_day",
            self.max_messages_per_day.map(|v| v.0.into()),
        );
        changes
    }
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant (operator key)
    #[command(
        after_help = "Example:\n  herald tenant create acme --weight 2 --time-zone Europe/Paris"
    )]
    Create {
        /// Tenant name (unique)
        name: String,
        /// Share of dispatch capacity relative to other tenants, 1–1000 [server default: 1]
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
        weight: Option<u32>,
        /// IANA zone of its day (what --max-messages-per-day counts) and of the quiet hours
        /// of its campaigns and messages [server default: UTC]
        #[arg(long, value_name = "TZ")]
        time_zone: Option<String>,
        /// Calls the tenant may have live at once across its providers (default: no cap)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
        max_live_calls: Option<u32>,
        /// Region of uploaded numbers written without a country code (ISO 3166-1, e.g. FR):
        /// `06 12 34 56 78` is then +33612345678 [default: none, numbers need their +code]
        #[arg(long, value_name = "CC")]
        default_region: Option<String>,
        /// Transactional messages accepted and not yet finished at once; past it sends are
        /// refused with 429 [server default: 10000]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
        max_queued_messages: Option<u32>,
        /// Transactional messages it may send a day, in its time zone [default: no cap]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000_000))]
        max_messages_per_day: Option<u32>,
    },
    /// Change a tenant's settings (operator key): only those given change
    #[command(after_help = "Examples:
  herald tenant update $TENANT_ID --weight 5                      # its share from the next tick
  herald tenant update $TENANT_ID --max-messages-per-day none     # no daily cap")]
    Update(TenantChanges),
    /// List tenants (a tenant key sees only its own)
    List,
    /// Show one tenant
    Show {
        /// Tenant id
        id: Uuid,
    },
    /// Create an API key for a tenant and print it (it is shown only this once)
    #[command(
        after_help = "Examples:\n  TENANT_KEY=$(herald tenant key \"$TENANT_ID\" --name ci)\n  SEND_KEY=$(herald tenant key \"$TENANT_ID\" --name checkout --access send)   # for a service that sends"
    )]
    Key {
        /// Tenant id
        tenant_id: Uuid,
        /// A label to tell keys apart
        #[arg(long)]
        name: String,
        /// What the key may do
        #[arg(long, value_enum, default_value_t = Access::Full)]
        access: Access,
    },
    /// Set, show or remove the provider a tenant's messages of a channel use when they name
    /// none
    #[command(after_help = "Examples:
  herald tenant default-provider $TENANT_ID --channel sms --provider $PROVIDER --overflow-provider $BACKUP
  herald tenant default-provider $TENANT_ID                   # list them
  herald tenant default-provider $TENANT_ID --channel sms --remove")]
    DefaultProvider {
        /// Tenant id
        tenant_id: Uuid,
        #[arg(long, value_enum)]
        channel: Option<Channel>,
        /// Provider id
        #[arg(long, value_name = "ID", requires = "channel")]
        provider: Option<Uuid>,
        /// Provider that takes what --provider has no room for
        #[arg(long, value_name = "ID", requires = "provider")]
        overflow_provider: Option<Uuid>,
        /// Remove the channel's default
        #[arg(long, requires = "channel", conflicts_with = "provider")]
        remove: bool,
    },
    /// Set, show or remove the URL a tenant's transactional messages' status events are
    /// posted to (setting it the first time, or with --rotate-secret, prints a new signing
    /// secret, shown once; otherwise the webhook's state), post again the events given up,
    /// or post a test event
    #[command(after_help = "Examples:
  herald tenant webhook $TENANT_ID --set https://hooks.example.com/herald   # the first time: prints the secret
  herald tenant webhook $TENANT_ID --set https://hooks.example.com/herald --rotate-secret
  herald tenant webhook $TENANT_ID                                          # its URL and backlog
  herald tenant webhook $TENANT_ID --remove
  herald tenant webhook $TENANT_ID --recover-since 2026-12-01T00:00:00Z    # post again what was given up
  herald tenant webhook $TENANT_ID --test                                   # post a test event")]
    Webhook {
        /// Tenant id
        tenant_id: Uuid,
        /// Where to post events (https, a public address); the first time, prints the
        /// signing secret. Set again (the same URL too), a webhook disabled after its
        /// endpoint answered `410 Gone` is enabled, and a failing endpoint is tried at once
        #[arg(long = "set", value_name = "URL")]
        set: Option<String>,
        /// With --set: issue a new secret (printed); the one replaced still signs beside it
        /// for --grace-seconds
        #[arg(long, requires = "set")]
        rotate_secret: bool,
        /// How long a replaced secret still signs, 0–604800
        #[arg(long, value_name = "S", default_value_t = 86_400, requires = "rotate_secret",
              value_parser = clap::value_parser!(i64).range(0..=604_800))]
        grace_seconds: i64,
        /// Remove the webhook, and the events still waiting for it
        #[arg(long, conflicts_with = "set")]
        remove: bool,
        /// Post again the events given up that happened since then (RFC 3339)
        #[arg(long, value_name = "RFC3339", value_parser = super::campaign::parse_time,
              conflicts_with_all = ["set", "remove"])]
        recover_since: Option<chrono::DateTime<chrono::FixedOffset>>,
        /// Post a test event (`webhook.test`), signed and retried as status events are (one
        /// each 10 s; refused while the webhook is disabled): `herald tenant
        /// webhook-events` shows how its posts go
        #[arg(long, conflicts_with_all = ["set", "remove", "recover_since"])]
        test: bool,
    },
    /// List a tenant's webhook events, newest first, with how their posts went (kept as
    /// long as receipts are)
    #[command(after_help = "Examples:
  herald tenant webhook-events $TENANT_ID
  herald tenant webhook-events $TENANT_ID --delivery abandoned --all
  herald tenant webhook-events $TENANT_ID --type webhook.test --limit 1   # the last test event")]
    WebhookEvents {
        /// Tenant id
        tenant_id: Uuid,
        /// Only events standing here
        #[arg(long, value_enum)]
        delivery: Option<EventDelivery>,
        /// Only events of this type
        #[arg(long = "type", value_name = "TYPE", value_parser = ["message.status", "webhook.test"])]
        kind: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
}

/// Where a webhook event's posting stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventDelivery {
    /// Not delivered yet
    Waiting,
    Delivered,
    /// Given up: not delivered within a day
    Abandoned,
}

impl EventDelivery {
    fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Delivered => "delivered",
            Self::Abandoned => "abandoned",
        }
    }
}

pub async fn run(ctx: &Ctx, command: TenantCommand) -> Result<(), CliError> {
    match command {
        TenantCommand::Create {
            name,
            weight,
            time_zone,
            max_live_calls,
            default_region,
            max_queued_messages,
            max_messages_per_day,
        } => {
            let body = NewTenant {
                name,
                weight,
                time_zone,
                max_live_calls,
                default_region,
                max_queued_messages,
                max_messages_per_day,
            };
            let reply = ctx.client.create_tenant(&body).await?;
            ctx.show(&reply, output::tenant)
        }
        TenantCommand::Update(changes) => {
            let id = changes.id;
            let changes = changes.body();
            if changes.is_empty() {
                return Err(CliError::Input(
                    "nothing to change: give at least one setting (see --help)".into(),
                ));
            }
            let reply = ctx.client.update_tenant(id, &changes.into()).await?;
            ctx.show(&reply, output::tenant)
        }
        TenantCommand::List => {
            let reply = ctx.client.list_tenants().await?;
            ctx.show(&reply, |list| output::tenants(list))
        }
        TenantCommand::Show { id } => {
            let reply = ctx.client.get_tenant(id).await?;
            ctx.show(&reply, output::tenant)
        }
        TenantCommand::Key {
            tenant_id,
            name,
            access,
        } => {
            let reply = ctx
                .client
                .create_tenant_key(tenant_id, &name, access.as_str())
                .await?;
            ctx.show(&reply, output::new_key)?;
            if !ctx.json
                && let Ok(key) = reply.parse()
            {
                note(&format!(
                    "created key `{}` ({}, access {}) for tenant {tenant_id}; store it now, it cannot be shown again",
                    key.name,
                    key.id,
                    access.as_str()
                ));
            }
            Ok(())
        }
        TenantCommand::DefaultProvider {
            tenant_id,
            channel,
            provider,
            overflow_provider,
            remove,
        } => match (channel, provider) {
            (Some(channel), Some(provider)) => {
                ctx.client
                    .set_default_provider(tenant_id, channel.as_str(), provider, overflow_provider)
                    .await?;
                let reply = ctx.client.list_default_providers(tenant_id).await?;
                ctx.show(&reply, |list| output::default_providers(list))
            }
            (Some(channel), None) if remove => {
                ctx.client
                    .remove_default_provider(tenant_id, channel.as_str())
                    .await?;
                let reply = ctx.client.list_default_providers(tenant_id).await?;
                ctx.show(&reply, |list| output::default_providers(list))
            }
            (Some(_), None) => Err(CliError::Input(
                "give --provider to set the channel's default, or --remove".into(),
            )),
            (None, _) => {
                let reply = ctx.client.list_default_providers(tenant_id).await?;
                ctx.show(&reply, |list| output::default_providers(list))
            }
        },
        TenantCommand::Webhook {
            tenant_id,
            set: Some(url),
            rotate_secret,
            grace_seconds,
            ..
        } => {
            let reply = ctx
                .client
                .set_webhook(tenant_id, &url, rotate_secret, grace_seconds)
                .await?;
            let parsed = reply.parse()?;
            let Some(secret) = parsed.secret.clone() else {
                // The secret kept: what the webhook is now.
                return ctx.show(&reply, output::webhook);
            };
            // The secret alone on stdout, as a new key is, so that it can be captured.
            ctx.show(&reply, |_| format!("{secret}\n"))?;
            if !ctx.json {
                note(&format!(
                    "status events of tenant {tenant_id} go to {}, signed with this secret; store it now, it cannot be shown again",
                    parsed.url.unwrap_or_default()
                ));
            }
            Ok(())
        }
        TenantCommand::Webhook {
            tenant_id,
            recover_since: Some(since),
            ..
        } => {
            let reply = ctx
                .client
                .recover_webhook_events(tenant_id, since.with_timezone(&chrono::Utc))
                .await?;
            ctx.show(&reply, |recovered| {
                let more = if recovered["more"].as_bool() == Some(true) {
                    "; more are left: run this again"
                } else {
                    ""
                };
                format!(
                    "{} events given up are posted again (given up again a day from now if still not delivered){more}\n",
                    recovered["recovered"].as_u64().unwrap_or(0)
                )
            })
        }
        TenantCommand::Webhook {
            tenant_id,
            test: true,
            ..
        } => {
            let reply = ctx.client.test_webhook(tenant_id).await?;
            ctx.show(&reply, |queued| {
                format!(
                    "test event {} queued: it is posted after the events already due (while the endpoint is failing, after one probe of each event due before it, or at once when it answers again); `herald tenant webhook-events {tenant_id} --type webhook.test` shows how its posts go\n",
                    queued["id"].as_str().unwrap_or_default()
                )
            })
        }
        TenantCommand::Webhook {
            tenant_id,
            remove: true,
            ..
        } => {
            let reply = ctx.client.remove_webhook(tenant_id).await?;
            ctx.show(&reply, |_| {
                format!("the webhook of tenant {tenant_id} is removed\n")
            })
        }
        TenantCommand::Webhook { tenant_id, .. } => {
            let reply = ctx.client.get_webhook(tenant_id).await?;
            ctx.show(&reply, output::webhook)
        }
        TenantCommand::WebhookEvents {
            tenant_id,
            delivery,
            kind,
            page,
        } => {
            let mut filters = Filters::new();
            filters.extend(delivery.map(|d| ("delivery", d.as_str().to_owned())));
            filters.extend(kind.map(|k| ("type", k)));
            show_pages(
                ctx,
                page,
                async |at| {
                    ctx.client
                        .list_webhook_events(tenant_id, &filters, at)
                        .await
                },
                output::webhook_events,
            )
            .await
        }
    }
}

/// A setting's new value, or `none` (`OrNone(None)`): it is removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrNone<T>(pub Option<T>);

/// `none`, or a whole number from 1 to `max`.
fn count_or_none(max: u32) -> impl Fn(&str) -> Result<OrNone<u32>, String> + Clone {
    move |arg| match arg {
        "none" => Ok(OrNone(None)),
        _ => match arg.parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) => Ok(OrNone(Some(n))),
            _ => Err(format!("expected `none` or a number from 1 to {max}")),
        },
    }
}

/// `none`, or the text given.
fn text_or_none(arg: &str) -> Result<OrNone<String>, String> {
    Ok(OrNone((arg != "none").then(|| arg.to_owned())))
}
