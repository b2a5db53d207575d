//! The admin server's settings, from `HERALD_*` environment variables or flags.

use herald_shared::config::Connections;
use herald_shared::ops::OpsConfig;
use std::net::SocketAddr;

#[derive(Debug, Clone, clap::Args)]
pub struct AdminConfig {
    #[command(flatten)]
    pub connections: Connections,

    #[command(flatten)]
    pub ops: OpsConfig,

    /// Address the HTTP server listens on.
    #[arg(long, env = "HERALD_ADMIN_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
}
