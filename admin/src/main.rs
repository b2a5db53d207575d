use clap::{Parser, Subcommand};
use herald_admin::config::AdminConfig;
use herald_shared::config::{Connections, CredentialKeys};
use std::io::Write;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Herald's admin server: the JSON API (/api/v1, OpenAPI at /api/v1/openapi.json) and the web
/// page (/), over Herald's PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "herald-admin", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API and the web page.
    Serve(AdminConfig),
    /// Manage API keys directly in the database (the way to get the first operator key).
    #[command(subcommand)]
    Keys(Keys),
    /// Providers' stored credentials.
    #[command(subcommand)]
    Credentials(Credentials),
}

#[derive(Debug, Subcommand)]
enum Credentials {
    /// Seal every provider's credentials with HERALD_CREDENTIALS_KEY (opening them with it or
    /// HERALD_CREDENTIALS_OLD_KEYS): the middle step of a key rotation, and how credentials
    /// stored before a key was set get sealed. Safe to run again and beside running services.
    ///
    /// Example: HERALD_CREDENTIALS_KEY=<new> HERALD_CREDENTIALS_OLD_KEYS=<old> herald-admin credentials reseal
    Reseal {
        #[command(flatten)]
        connections: Connections,
        #[command(flatten)]
        keys: CredentialKeys,
    },
}

#[derive(Debug, Subcommand)]
enum Keys {
    /// Create a key and print it (it is shown only this once).
    ///
    /// Example: herald-admin keys create --operator --name ops
    Create {
        /// An operator key (manages every tenant).
        #[arg(long, conflicts_with = "tenant", required_unless_present = "tenant")]
        operator: bool,
        /// A key for this tenant only.
        #[arg(long)]
        tenant: Option<Uuid>,
        /// What a tenant's key may do: `full`, or `send` (only the messages API: send, read
        /// and cancel messages). Operator keys are always full.
        #[arg(long, value_enum, default_value_t = KeyAccess::Full)]
        access: KeyAccess,
        /// A label to tell keys apart.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        connections: Connections,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum KeyAccess {
    Full,
    Send,
}

impl From<KeyAccess> for herald_store::keys::Access {
    fn from(access: KeyAccess) -> Self {
        match access {
            KeyAccess::Full => Self::Full,
            KeyAccess::Send => Self::Send,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = herald_shared::config::parse();
    match cli.command {
        Command::Serve(config) => {
            if let Err(problem) = config.check() {
                // As a setting clap refuses: a message naming the variables, exit 2.
                eprintln!("error: {problem}");
                std::process::exit(2);
            }
            herald_shared::telemetry::init("herald-admin");
            let shutdown = CancellationToken::new();
            tokio::spawn(herald_shared::shutdown::on_signal(shutdown.clone()));
            herald_admin::serve(config, shutdown).await?;
        }
        Command::Keys(Keys::Create {
            operator: _,
            tenant,
            access,
            name,
            connections,
        }) => {
            anyhow::ensure!(
                tenant.is_some() || access == KeyAccess::Full,
                "--access send: only a tenant's key may be limited (give --tenant)"
            );
            // Trimmed, as the API stores a key's name.
            let name = name.trim();
            herald_admin::validate::name(name)
                .map_err(|reason| anyhow::anyhow!("--name: {reason}"))?;
            let pool = herald_shared::db::connect(
                connections.database_url.expose(),
                1,
                &connections.tls(),
            )
            .await?;
            let (id, key) = herald_admin::auth::create_key(&pool, tenant, access.into(), name)
                .await
                .map_err(|error| match (&error, tenant) {
                    (sqlx::Error::Database(db), Some(tenant))
                        if db.kind() == sqlx::error::ErrorKind::ForeignKeyViolation =>
                    {
                        anyhow::anyhow!("--tenant: there is no tenant {tenant}")
                    }
                    _ => error.into(),
                })?;
            // The key is shown once, here: a stdout that cannot take it (a closed pipe) is
            // said, with the key's id to revoke, not a panic.
            writeln!(std::io::stdout().lock(), "{key}").map_err(|error| {
                anyhow::anyhow!(
                    "key {id} was created but could not be written out ({error}); revoke it \
                     (POST /api/v1/keys/{id}/revoke) and create another"
                )
            })?;
        }
        Command::Credentials(Credentials::Reseal { connections, keys }) => {
            herald_shared::telemetry::init("herald-admin");
            anyhow::ensure!(
                keys.credentials_key.is_some(),
                "HERALD_CREDENTIALS_KEY is not set: there is no key to seal with"
            );
            let pool = herald_shared::db::connect(
                connections.database_url.expose(),
                1,
                &connections.tls(),
            )
            .await?;
            let keyring = keys.keyring();
            let done = herald_admin::reseal::reseal(&pool, &keyring).await?;
            writeln!(
                std::io::stdout().lock(),
                "{} providers, {} resealed; {} webhook secrets, {} resealed; with key {}",
                done.providers,
                done.resealed,
                done.webhooks,
                done.webhooks_resealed,
                keyring.current_id().unwrap_or("-")
            )
            .map_err(|error| {
                anyhow::anyhow!("resealed, but the summary could not be written out: {error}")
            })?;
        }
    }
    Ok(())
}
