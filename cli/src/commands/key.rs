//! `herald key`: list, revoke and rotate API keys (new keys: `herald tenant key`).

use clap::Subcommand;
use uuid::Uuid;

use super::{CliError, Ctx, note};
use crate::output;

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List the keys this key may manage (a tenant key: its tenant's); secrets are never shown
    List,
    /// Revoke a key: it stops working at once
    #[command(after_help = "Example:\n  herald key revoke 5f0c…")]
    Revoke {
        /// Key id (see `herald key list`)
        id: Uuid,
    },
    /// Replace a key by a new one with the same name and print the new secret (shown only
    /// this once); the old key stops working at once, or after --grace
    #[command(
        after_help = "Example:\n  NEW_KEY=$(herald key rotate 5f0c… --grace 3600)   # the old key works one more hour"
    )]
    Rotate {
        /// Key id (see `herald key list`)
        id: Uuid,
        /// Seconds the old key keeps working, up to 604800 (a week)
        #[arg(long, value_name = "SECONDS", default_value_t = 0,
              value_parser = clap::value_parser!(u64).range(0..=604_800))]
        grace: u64,
    },
}

pub async fn run(ctx: &Ctx, command: KeyCommand) -> Result<(), CliError> {
    match command {
        KeyCommand::List => {
            let reply = ctx.client.list_keys().await?;
            ctx.show(&reply, |list| output::keys(list))
        }
        KeyCommand::Revoke { id } => {
            let reply = ctx.client.revoke_key(id).await?;
            ctx.show(&reply, output::key)
        }
        KeyCommand::Rotate { id, grace } => {
            let reply = ctx.client.rotate_key(id, grace).await?;
            ctx.show(&reply, output::rotated_key)?;
            if !ctx.json
                && let Ok(rotated) = reply.parse()
            {
                note(&format!(
                    "key `{}` rotated: new key {}; the old key {} {}; store the new key now, it cannot be shown again",
                    rotated.name,
                    rotated.id,
                    rotated.replaced.id,
                    if grace == 0 {
                        "no longer works".to_owned()
                    } else {
                        format!("works for {grace} more seconds")
                    }
                ));
            }
            Ok(())
        }
    }
}
