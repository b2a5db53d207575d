//! `herald segment …`: saved filters over contacts, usable as a campaign's audience.

use clap::Subcommand;
use uuid::Uuid;

use super::{CliError, Ctx};
use crate::model::NewSegment;
use crate::output;

#[derive(Debug, Subcommand)]
pub enum SegmentCommand {
    /// Save a filter over contact attributes
    #[command(after_help = "Example:
  herald segment create big-spenders --filter 'lifetime_value > 10000 and last_purchase > 365 days ago'")]
    Create {
        /// Segment name
        name: String,
        /// The filter expression (checked by the server, which points at the error's position)
        #[arg(long, value_name = "TEXT")]
        filter: String,
        /// Owning tenant (operator key only)
        #[arg(long, value_name = "ID")]
        tenant: Option<Uuid>,
    },
    /// List segments
    List,
    /// Show one segment
    Show {
        /// Segment id
        id: Uuid,
    },
    /// Count the contacts a segment selects now
    Count {
        /// Segment id
        id: Uuid,
    },
    /// Delete a segment no draft campaign waits to be started with (campaigns started with
    /// it keep their recipients)
    Delete {
        /// Segment id
        id: Uuid,
    },
}

pub async fn run(ctx: &Ctx, command: SegmentCommand) -> Result<(), CliError> {
    match command {
        SegmentCommand::Create {
            name,
            filter,
            tenant,
        } => {
            let body = NewSegment {
                tenant_id: tenant,
                name,
                filter,
            };
            let reply = ctx.client.create_segment(&body).await?;
            ctx.show(&reply, output::segment)
        }
        SegmentCommand::List => {
            let reply = ctx.client.list_segments().await?;
            ctx.show(&reply, |list| output::segments(list))
        }
        SegmentCommand::Show { id } => {
            let reply = ctx.client.get_segment(id).await?;
            ctx.show(&reply, output::segment)
        }
        SegmentCommand::Count { id } => {
            let reply = ctx.client.segment_count(id).await?;
            ctx.show(&reply, output::segment_count)
        }
        SegmentCommand::Delete { id } => {
            let reply = ctx.client.delete_segment(id).await?;
            ctx.show(&reply, |_| format!("segment {id} deleted\n"))
        }
    }
}
