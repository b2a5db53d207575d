//! `herald contact …`: the tenant's address book that segments select from.

use std::path::PathBuf;

use clap::Subcommand;
use uuid::Uuid;

use super::{CliError, Ctx, note, open_upload};
use crate::output;
use crate::upload::Format;

#[derive(Debug, Subcommand)]
pub enum ContactCommand {
    /// Upload contacts (upsert by address), streamed; all rows or none
    #[command(
        after_help = "Same formats as `herald campaign upload`; in CSV every column other than `address`
becomes an attribute (numbers stay numbers). The format comes from the extension (.csv,
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
    #[command(after_help = "Example:\n  herald contact list --limit 50 --after-id 1200")]
    List {
        /// Continue after this contact id (paging)
        #[arg(long, value_name = "ID")]
        after_id: Option<i64>,
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: u32,
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
        ContactCommand::List { after_id, limit } => {
            let reply = ctx.client.list_contacts(after_id, Some(limit)).await?;
            ctx.show(&reply, |list| output::contacts(list))?;
            if !ctx.json
                && let Ok(list) = reply.parse()
                && list.len() >= limit as usize
                && let Some(last) = list.last()
            {
                note(&format!("more: --after-id {}", last.id));
            }
            Ok(())
        }
    }
}
