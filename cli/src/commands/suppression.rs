//! `herald suppression …`: the addresses a tenant's messages must not reach on a channel.

use clap::Subcommand;
use uuid::Uuid;

use super::campaign::Channel;
use super::{CliError, Ctx, PageArgs, show_pages};
use crate::client::Filters;
use crate::model::NewSuppressions;
use crate::output;

#[derive(Debug, Subcommand)]
pub enum SuppressionCommand {
    /// Put addresses on the suppression list: no message reaches them on this channel,
    /// through any provider, until they are removed
    #[command(
        after_help = "Addresses a provider refused because the recipient opted out (Twilio 21610),
and STOP replies to a tenant's own Twilio number that sends its incoming messages to the
receiver, are added by Herald itself; a START takes those off, not the ones added here (an
address added here is the tenant's from then on). Up to 1,000 addresses a call.

Example:
  herald suppression add --channel sms --reason 'asked by email' +15551230001 +15551230002"
    )]
    Add {
        /// Phone numbers, with their country code (or in the tenant's default region)
        #[arg(required = true, value_name = "ADDRESS")]
        addresses: Vec<String>,
        #[arg(long, value_enum)]
        channel: Channel,
        /// Why (shown with each entry)
        #[arg(long)]
        reason: Option<String>,
        /// Owning tenant (operator key only)
        #[arg(long, value_name = "ID")]
        tenant: Option<Uuid>,
    },
    /// List the suppression list, by id
    #[command(after_help = "Examples:
  herald suppression list --channel sms
  herald suppression list --address +15551230001")]
    List {
        /// Only this tenant's (operator key)
        #[arg(long, value_name = "ID")]
        tenant: Option<Uuid>,
        #[arg(long, value_enum)]
        channel: Option<Channel>,
        /// Only this address (a phone number in any spelling; without its country code, in the tenant's default region)
        #[arg(long)]
        address: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Take an address off the list (it opted in again): its next message is sent
    Remove {
        /// The entry's id (see `herald suppression list`)
        id: i64,
    },
}

pub async fn run(ctx: &Ctx, command: SuppressionCommand) -> Result<(), CliError> {
    match command {
        SuppressionCommand::Add {
            addresses,
            channel,
            reason,
            tenant,
        } => {
            let body = NewSuppressions {
                tenant_id: tenant,
                channel: channel.as_str().to_owned(),
                addresses,
                reason,
            };
            let reply = ctx.client.add_suppressions(&body).await?;
            ctx.show(&reply, output::suppressions_added)
        }
        SuppressionCommand::List {
            tenant,
            channel,
            address,
            page,
        } => {
            let mut filters = Filters::new();
            filters.extend(tenant.map(|t| ("tenant_id", t.to_string())));
            filters.extend(channel.map(|c| ("channel", c.as_str().to_owned())));
            filters.extend(address.map(|a| ("address", a)));
            show_pages(
                ctx,
                page,
                async |at| ctx.client.list_suppressions(&filters, at).await,
                output::suppressions,
            )
            .await
        }
        SuppressionCommand::Remove { id } => {
            let reply = ctx.client.remove_suppression(id).await?;
            ctx.show(&reply, |_| format!("suppression {id} removed\n"))
        }
    }
}
