use clap::Parser;
use herald_receiver::config::ReceiverConfig;
use tokio_util::sync::CancellationToken;

/// Herald's receipt receiver: the webhooks Twilio, the WhatsApp Cloud API and generic
/// providers call with the fate of each message and call.
#[derive(Debug, Parser)]
#[command(name = "herald-receiver", version)]
struct Cli {
    #[command(flatten)]
    config: ReceiverConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = herald_shared::config::parse();
    herald_shared::telemetry::init("herald-receiver");
    let shutdown = CancellationToken::new();
    tokio::spawn(herald_shared::shutdown::on_signal(shutdown.clone()));
    herald_receiver::serve(cli.config, shutdown).await?;
    Ok(())
}
