//! `herald contact …`: the tenant's address book that segments select from.

use std::path::PathBuf;

use clap::Subcommand;
use uuid::Uuid;

use super::{CliError, Ctx, PageArgs, open_upload, show_pages};
use crate::client::Filters;
use crate::model::NewErasure;
use crate::output;
use crate::upload::Format;

#[derive(Debug, Subcommand)]
pub enum ContactCommand {
    /// Upload contacts (upsert by address), streamed; all rows or none
    #[command(
        after_help = "Same formats as `herald campaign upload`; in CSV every column other than `address`
becomes an attribute (a number becomes a JSON number unless JSON would write it
otherwise: 007 and 19.90 stay text). The format comes from the extension (.csv,
.ndjson/.jsonl, .json) unless --format is given; `-` reads stdin as CSV.

Example:
  herald contact upload customers.csv"
    )]
    Upload {
        /// File to upload, or `-` for stdin
        file: PathBuf,
        /// Tenant the contacts belong to (operator key only)
        #[arg(long, value_name = "ID")]
        tenant: Option<Uuid>,
        /// Override the format the extension implies
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// List contacts, by id
    #[command(after_help = "Examples:
  herald contact list --limit 50
  herald contact list --address +33612345678
  herald --json contact list --all > contacts.json")]
    List {
        /// Only this tenant's contacts (operator key)
        #[arg(long, value_name = "ID")]
        tenant: Option<Uuid>,
        /// Only the contact with this address (a phone number in any spelling; without its country code, in the tenant's default region)
        #[arg(long)]
        address: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Delete a contact (segments no longer pick it; campaigns started before keep it: `erase`
    /// takes those copies too)
    #[command(after_help = "Example:
  herald contact delete $(herald --json contact list --address +33612345678 | jq '.items[0].id')")]
    Delete {
        /// The contact's id (see `herald contact list`)
        id: i64,
    },
    /// Erase an address from the tenant's data (a person asking to be forgotten): its
    /// contact, and its copies in every campaign and message
    #[command(
        after_help = "The contact and a recorded START are deleted; messages to the address still waiting end
`cancelled` unsent; messages that have ended keep their state, counts and receipts but lose
the address, their variables and the number inside their errors. Messages in flight (a
request leased, its outcome not yet known) are not sent again and are erased by the
scheduler once they have ended: run this again to see how many are left. The suppression
list keeps the address's opt-outs (see `herald suppression list --address`). What is not
reached (webhook events, receipts, dead letters) is listed in admin/API.md.

Example:
  herald contact erase +33612345678"
    )]
    Erase {
        /// A phone number, with its country code (or in the tenant's default region)
        address: String,
        /// Owning tenant (operator key only)
        #[arg(long, value_name = "ID")]
        tenant: Option<Uuid>,
    },
}

pub async fn run(ctx: &Ctx, command: ContactCommand) -> Result<(), CliError> {
    match command {
        ContactCommand::Upload {
            file,
            tenant,
            format,
        } => {
            let upload = open_upload(&file, format).await?;
            let result = ctx
                .client
                .upload_contacts(tenant, upload.format.content_type(), upload.body)
                .await;
            upload.bar.finish_and_clear();
            ctx.show(&result?, output::upload_summary)
        }
        ContactCommand::List {
            tenant,
            address,
            page,
        } => {
            let mut filters = Filters::new();
            filters.extend(tenant.map(|t| ("tenant_id", t.to_string())));
            filters.extend(address.map(|a| ("address", a)));
            show_pages(
                ctx,
                page,
                async |at| ctx.client.list_contacts(&filters, at).await,
                output::contacts,
            )
            .await
        }
        ContactCommand::Erase { address, tenant } => {
            let body = NewErasure {
                tenant_id: tenant,
                address,
            };
            let reply = ctx.client.erase(&body).await?;
            ctx.show(&reply, output::erasure)
        }
        ContactCommand::Delete { id } => {
            let reply = ctx.client.delete_contact(id).await?;
            ctx.show(&reply, |_| format!("contact {id} deleted\n"))
        }
    }
}
