//! The admin server's settings, from `HERALD_*` environment variables or flags.

use herald_shared::config::{Connections, CredentialKeys};
use herald_shared::ops::OpsConfig;
use herald_shared::public_address::{Networks, parse_networks as parse_allowed};
use std::net::SocketAddr;

#[derive(Debug, Clone, clap::Args)]
pub struct AdminConfig {
    #[command(flatten)]
    pub connections: Connections,

    #[command(flatten)]
    pub ops: OpsConfig,

    #[command(flatten)]
    pub credential_keys: CredentialKeys,

    /// Address the HTTP server listens on.
    #[arg(long, env = "HERALD_ADMIN_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// A connection that sends no complete request head for this long (ms) is closed, an
    /// idle keep-alive connection too: a proxy in front must close its idle upstream
    /// connections sooner (nginx's upstream keepalive and an AWS load balancer's idle
    /// timeout are 60 s).
    #[arg(long, env = "HERALD_ADMIN_HEAD_TIMEOUT_MS", default_value_t = 75_000, value_parser = clap::value_parser!(u64).range(1_000..=600_000))]
    pub head_timeout_ms: u64,

    /// An upload whose body sends nothing for this long (ms) is ended (408) and its
    /// transaction rolled back; so is a JSON body that stops coming in (408).
    #[arg(long, env = "HERALD_ADMIN_UPLOAD_IDLE_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1_000..=600_000))]
    pub upload_idle_timeout_ms: u64,

    /// The longest an upload may take in all (ms): past it, it is ended (408) and its
    /// transaction rolled back, however steadily its rows come. Each upload holds a slot,
    /// a database connection and its campaign's row while it streams.
    #[arg(long, env = "HERALD_ADMIN_UPLOAD_TIMEOUT_MS", default_value_t = 3_600_000, value_parser = clap::value_parser!(u64).range(10_000..=86_400_000))]
    pub upload_timeout_ms: u64,

    /// Uploads running at once, in all (each holds a database connection while it streams).
    /// Default, and most: the pool's size less two, so other requests always find a
    /// connection (the admin refuses to start otherwise, as with a pool under 3).
    #[arg(long, env = "HERALD_ADMIN_MAX_UPLOADS", value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub max_uploads: Option<u32>,

    /// Uploads one tenant may run at once (operators count as one tenant); past it, 429.
    #[arg(long, env = "HERALD_ADMIN_MAX_UPLOADS_PER_TENANT", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub max_uploads_per_tenant: u32,

    /// Campaigns one tenant may have scheduled, running or paused at once; starting another
    /// is refused (409) until one ends. Each is one more campaign every scheduler tick looks
    /// at: without a bound, one tenant starting tens of thousands of small campaigns would
    /// slow every tenant's ticks. (Transactional streams are bounded apart, at 1,000.)
    #[arg(long, env = "HERALD_ADMIN_MAX_ACTIVE_CAMPAIGNS_PER_TENANT", default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_active_campaigns_per_tenant: u32,

    /// Providers one tenant may have in use (not retired); creating another is refused (409)
    /// until one is retired. Each is a lane every worker consumes (a channel and a consumer
    /// on its broker connection, whose channels are bounded: RabbitMQ's `channel_max`,
    /// 2,047 by default), so one tenant may not add them without bound. Operators' shared
    /// providers are not counted.
    #[arg(long, env = "HERALD_ADMIN_MAX_PROVIDERS_PER_TENANT", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_providers_per_tenant: u32,

    /// Segments one tenant may keep; making another is refused (409) until one is deleted.
    /// Bounds what listing them holds in memory and answers.
    #[arg(long, env = "HERALD_ADMIN_MAX_SEGMENTS_PER_TENANT", default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_segments_per_tenant: u32,

    /// API requests of one tenant run at once (uploads aside: their own limits bound them);
    /// more wait their turn without holding a database connection, within the request
    /// deadline. Default: the pool's size less two, halved, so that other tenants always
    /// find connections; at most the pool's size less two. Operators' requests are not
    /// counted.
    #[arg(long, env = "HERALD_ADMIN_MAX_REQUESTS_PER_TENANT", value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub max_requests_per_tenant: Option<u32>,

    /// PostgreSQL's `statement_timeout` on the admin's connections (ms): no request's
    /// statement holds a connection longer.
    #[arg(long, env = "HERALD_ADMIN_STATEMENT_TIMEOUT_MS", default_value_t = 120_000, value_parser = clap::value_parser!(u64).range(1_000..=3_600_000))]
    pub statement_timeout_ms: u64,

    /// A request (uploads excepted) not answered within this (ms) is answered 503 with
    /// Retry-After: a statement sent on a connection that leads nowhere (a failover to
    /// another host, a network cut) would otherwise wait until the kernel gives up on it,
    /// about 15 minutes. Keep it above what the longest request takes (starting a campaign
    /// from a big segment runs two statements of up to the statement timeout each).
    #[arg(long, env = "HERALD_ADMIN_REQUEST_TIMEOUT_MS", default_value_t = 300_000, value_parser = clap::value_parser!(u64).range(1_000..=3_600_000))]
    pub request_timeout_ms: u64,

    /// Networks a tenant's provider endpoint may reach besides public addresses, comma-
    /// separated CIDRs (e.g. 10.20.0.0/16 for an internal gateway); http is allowed there.
    /// Default: none (public https only). Operators' shared providers are not restricted.
    #[arg(long, env = "HERALD_PROVIDER_ALLOWED_NETWORKS", value_parser = parse_allowed)]
    pub provider_allowed_networks: Option<Networks>,
}

impl AdminConfig {
    /// Settings each valid alone that do not fit together: uploads hold a connection each
    /// while they stream, and other requests (every other tenant's) must still find two.
    pub fn check(&self) -> Result<(), String> {
        let pool = self.connections.db_pool_size;
        if pool < 3 {
            return Err(format!(
                "HERALD_DB_POOL_SIZE ({pool}) must be at least 3 for the admin: uploads hold a \
                 connection each while they stream, and other requests need two"
            ));
        }
        match (self.max_uploads, self.max_requests_per_tenant) {
            (Some(uploads), _) if uploads > pool - 2 => Err(format!(
                "HERALD_ADMIN_MAX_UPLOADS ({uploads}) must leave two of HERALD_DB_POOL_SIZE's \
                 {pool} connections to other requests: at most {}",
                pool - 2
            )),
            (_, Some(requests)) if requests > pool - 2 => Err(format!(
                "HERALD_ADMIN_MAX_REQUESTS_PER_TENANT ({requests}) must leave two of \
                 HERALD_DB_POOL_SIZE's {pool} connections to other tenants: at most {}",
                pool - 2
            )),
            _ => Ok(()),
        }
    }

    pub fn max_requests_per_tenant(&self) -> usize {
        self.max_requests_per_tenant.map_or_else(
            || (self.connections.db_pool_size.saturating_sub(2) / 2).max(1) as usize,
            |n| n as usize,
        )
    }

    pub fn max_uploads(&self) -> usize {
        self.max_uploads.map_or_else(
            || self.connections.db_pool_size.saturating_sub(2).max(1) as usize,
            |n| n as usize,
        )
    }
}
