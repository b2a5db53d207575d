use clap::{Parser, Subcommand};
use herald_scheduler::config::SchedulerConfig;
use tokio_util::sync::CancellationToken;

/// Herald's scheduler: each tick it publishes one fair batch per running campaign into the
/// dispatch queue, and tops up between ticks the lanes workers empty. Run several for
/// availability; one leads at a time.
#[derive(Debug, Parser)]
#[command(name = "herald-scheduler", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: SchedulerConfig,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the scheduler (the default).
    Run,
    /// Apply the database migrations and exit (idempotent).
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = herald_shared::config::parse();
    herald_shared::telemetry::init("herald-scheduler");
    herald_shared::shutdown::exit_on_panic("herald-scheduler");
    match cli.command.unwrap_or(Command::Run) {
        Command::Migrate => {
            let connections = &cli.config.connections;
            let pool = herald_shared::db::connect(
                connections.database_url.expose(),
                2,
                &connections.tls(),
            )
            .await?;
            herald_shared::db::migrate(&pool).await?;
            tracing::info!("migrations applied");
        }
        Command::Run => {
            let shutdown = CancellationToken::new();
            tokio::spawn(herald_shared::shutdown::on_signal(shutdown.clone()));
            herald_scheduler::run(cli.config, shutdown).await?;
        }
    }
    Ok(())
}
