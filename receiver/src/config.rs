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

    /// URLs this receiver was reached at before `HERALD_RECEIVER_URL` changed,
    /// comma-separated: Twilio signs a callback with the URL its request gave, so callbacks
    /// of messages sent before the change (they come for days) are checked against these
    /// too, while the old address still reaches this receiver.
    #[arg(long, env = "HERALD_RECEIVER_PREVIOUS_URLS", value_delimiter = ',', value_parser = |url: &str| herald_shared::config::parse_public_url(url.trim()))]
    pub previous_urls: Vec<String>,

    /// A connection that sends no complete request head for this long (ms) is closed. The
    /// same deadline closes a keep-alive connection left idle that long: a proxy in front
    /// must close its idle upstream connections sooner (nginx's upstream keepalive and an
    /// AWS load balancer's idle timeout are 60 s), or it may send a webhook on a connection
    /// being closed.
    #[arg(long, env = "HERALD_RECEIVER_HEAD_TIMEOUT_MS", default_value_t = 75_000, value_parser = clap::value_parser!(u64).range(1_000..=600_000))]
    pub head_timeout_ms: u64,

    /// A webhook's whole body must come within this (ms) of its head, however it trickles;
    /// 408 after it. At the default, Meta's largest notifications (3 MB) need 600 KB/s.
    #[arg(long, env = "HERALD_RECEIVER_BODY_TIMEOUT_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(500..=60_000))]
    pub body_timeout_ms: u64,

    /// Webhook requests handled at once; more are answered 503 with `Retry-After: 1` at
    /// once. Each may hold a body of up to 4 MiB in memory while it is handled.
    #[arg(long, env = "HERALD_RECEIVER_MAX_REQUESTS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_requests: u32,
}

impl ReceiverConfig {
    pub fn head_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.head_timeout_ms)
    }

    pub fn limits(&self) -> crate::limits::Limits {
        crate::limits::Limits {
            body_timeout: std::time::Duration::from_millis(self.body_timeout_ms),
            max_requests: self.max_requests as usize,
        }
    }

    /// The public URL, without a trailing slash.
    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
    }
}
