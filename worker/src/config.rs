//! The worker's settings, from flags or `HERALD_*` environment variables.

use herald_shared::config::{Broker, Connections, CredentialKeys};
use herald_shared::ops::OpsConfig;
use herald_shared::public_address::{Networks, parse_networks};
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct WorkerConfig {
    #[command(flatten)]
    pub connections: Connections,

    #[command(flatten)]
    pub broker: Broker,

    #[command(flatten)]
    pub ops: OpsConfig,

    #[command(flatten)]
    pub credential_keys: CredentialKeys,

    /// Networks a tenant's provider, and a tenant's status webhook, may reach besides public
    /// addresses, comma-separated CIDRs, checked on every connection (the admin's setting of
    /// the same name checks the endpoint when it is given). Default: none. Operators' shared providers are not
    /// restricted.
    #[arg(long, env = "HERALD_PROVIDER_ALLOWED_NETWORKS", value_parser = parse_networks)]
    pub provider_allowed_networks: Option<Networks>,

    /// Provider requests this worker keeps in flight at once per provider lane: its
    /// concurrency per provider (a provider's fleet-wide in-flight cap, shared among the live
    /// workers, may lower it). The lane's AMQP prefetch follows from it: messages carry
    /// batches of up to 20 recipients (an eighth of the smallest worker's share), each acked
    /// once its recipients are leased, and the worker holds a quarter of this in them, plus
    /// a batch, waiting for room. One worker sends at most
    /// prefetch ÷ latency to a provider (2,000 ÷ 2 s = 1,000 msg/s); each request in flight
    /// costs about 40 KiB of memory (mostly its HTTP/1.1 connection).
    #[arg(long, env = "HERALD_WORKER_PREFETCH", default_value_t = 2000, value_parser = clap::value_parser!(u16).range(1..=10_000))]
    pub prefetch: u16,

    /// How long (ms) a new connection to a provider may take (TCP and TLS) before the
    /// request counts as not sent (retried, the provider's breaker told). Past a provider's
    /// own timeout a request counts as possibly sent, so a connection that hangs at a
    /// provider whose timeout is shorter than this is treated as a lost answer (looked up,
    /// or waited on for its receipt).
    #[arg(long, env = "HERALD_WORKER_CONNECT_TIMEOUT_MS", default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub connect_timeout_ms: u64,

    /// Threads of the worker's async runtime. Default: one per CPU the worker may use (its
    /// CPU limit and affinity count). Replicas sharing a machine's CPUs without a limit each
    /// take all of them and contend: give each its share (on two cores shared with everything
    /// else, two workers of one thread each sent 5–7% more at 200 ms than two of the default
    /// two threads, and as much within the noise at 0 ms; BENCHMARKS.md).
    #[arg(long, env = "HERALD_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,

    /// On SIGTERM, how long (ms) in-flight work may take to finish before the worker exits
    /// anyway (deliveries still waiting for room go back to the queue; leased recipients whose outcome is not written by then are the sweeper's when their leases run out).
    #[arg(long, env = "HERALD_WORKER_DRAIN_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub drain_timeout_ms: u64,

    /// Added to a provider's timeout to form the lease on a recipient being sent (ms). Past
    /// the lease the scheduler assumes the worker died and dispatches the recipient again.
    #[arg(long, env = "HERALD_WORKER_LEASE_GRACE_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1_000..=3_600_000))]
    pub lease_grace_ms: u64,

    /// How long (s) a recipient's provider may put it off in a row, no attempt spent (503s,
    /// 429s, its breaker open, lookups it does not answer, a provider that cannot be read),
    /// before it ends `failed` at its next deferral. The run is timed from its first
    /// deferral, quiet hours between included (keep this well above a night); Herald's own
    /// holding back (quiet hours begun, no send slot in time) neither ends it nor counts as
    /// a deferral, and a resume of its campaign starts the run afresh. A provider that never
    /// takes a message again would otherwise keep its recipients waiting, and their campaign
    /// running, for ever.
    #[arg(long, env = "HERALD_WORKER_MAX_DEFERRAL_S", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..=2_592_000))]
    pub max_deferral_s: u64,

    /// The receipt receiver's public URL (what providers reach, e.g.
    /// https://hooks.example.com): requests of APIs that take a callback per request (Twilio,
    /// generic providers with a webhook secret) name it, so every receipt maps to its
    /// recipient. Unset: no receipts are asked for.
    #[arg(long, env = "HERALD_RECEIVER_URL", value_parser = herald_shared::config::parse_public_url)]
    pub receiver_url: Option<String>,
}

impl WorkerConfig {
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
}
