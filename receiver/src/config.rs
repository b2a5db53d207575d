//! The receiver's settings, from `HERALD_*` environment variables or flags.

use herald_shared::config::{Connections, CredentialKeys};
use herald_shared::ops::OpsConfig;
use std::net::SocketAddr;

#[derive(Debug, Clone, clap::Args)]
pub struct ReceiverConfig {
    #[command(flatten)]
    pub connections: Connections,

    #[command(flatten)]
    pub ops: OpsConfig,

    #[command(flatten)]
    pub credential_keys: CredentialKeys,

    /// Address the HTTP server listens on.
    #[arg(long, env = "HERALD_RECEIVER_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,

    /// The URL providers reach this receiver at (scheme, host, port and any path prefix a
    /// proxy adds), e.g. https://hooks.example.com. Twilio signs the full URL it requested,
    /// so it must be exactly what the workers give Twilio (they read the same variable).
    /// Default: http:// and the listen address.
    #[arg(long, env = "HERALD_RECEIVER_URL", value_parser = herald_shared::config::parse_public_url)]
    pub public_url: Option<String>,
}

impl ReceiverConfig {
    /// The public URL, without a trailing slash.
    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
    }
}
