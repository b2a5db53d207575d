//! Herald's provider simulator: a configurable stand-in for an SMS/WhatsApp/voice
//! provider's HTTP API, with a control API for tests and benchmarks.

mod apis;
mod behaviour;
mod config;
mod rate_limit;
mod receipts;
mod routes;
mod server;
mod stats;

use std::net::SocketAddr;

use anyhow::Context;
use clap::{CommandFactory, Parser, error::ErrorKind};

use crate::config::{BehaviourConfig, Latency, RateLimit};

/// jemalloc, as the worker's (one arena, `.cargo/config.toml`): the simulator stands in for a
/// provider on the bench's own two cores, and with glibc's malloc more than a quarter of its
/// CPU went to allocating and freeing each request's buffers (BENCHMARKS.md, "2026-12-07").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

// Aliases so that clap treats these as single values with a "none" default rather than
// as optional flags.
type MaybeRateLimit = Option<RateLimit>;
type MaybePrefix = Option<String>;
type MaybeUrl = Option<String>;

/// A simulated messaging provider for Herald's demo, tests and benchmarks.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(
        long,
        env = "HERALD_SIMULATOR_LISTEN",
        default_value = "127.0.0.1:9090"
    )]
    listen: SocketAddr,

    /// Latency before answering, in ms: fixed:MS, uniform:MIN-MAX, normal:MEAN,STDDEV
    /// (clamped at 0) or exp:MEAN.
    #[arg(long, env = "HERALD_SIMULATOR_LATENCY", default_value = "fixed:0",
          value_parser = config::parse_latency)]
    latency: Latency,

    /// Fraction of requests (0.0-1.0) answered 500 with a JSON error.
    #[arg(long, env = "HERALD_SIMULATOR_ERROR_RATE", default_value = "0",
          value_parser = config::parse_rate)]
    error_rate: f64,

    /// Fraction of requests (0.0-1.0) that hang for --timeout-hold-ms, then get 504.
    #[arg(long, env = "HERALD_SIMULATOR_TIMEOUT_RATE", default_value = "0",
          value_parser = config::parse_rate)]
    timeout_rate: f64,

    /// How long a "timed out" request hangs before its 504, in ms (at most 3600000).
    #[arg(long, env = "HERALD_SIMULATOR_TIMEOUT_HOLD_MS", default_value = "60000",
          value_parser = config::parse_hold_ms)]
    timeout_hold_ms: u64,

    /// Rate limit N/WINDOW (e.g. 100/1s, 500/100ms, 10000/1h; units ms, s, m, h) over a
    /// sliding window; excess requests get 429 with Retry-After. "none" disables it.
    #[arg(long, env = "HERALD_SIMULATOR_RATE_LIMIT", default_value = "none",
          value_parser = config::parse_rate_limit)]
    rate_limit: MaybeRateLimit,

    /// For each Idempotency-Key, answer the first N requests with --fail-status.
    #[arg(long, env = "HERALD_SIMULATOR_FAIL_FIRST", default_value = "0",
          value_parser = config::parse_fail_first)]
    fail_first: u32,

    /// Status (400-599) used for the --fail-first answers.
    #[arg(long, env = "HERALD_SIMULATOR_FAIL_STATUS", default_value = "500",
          value_parser = config::parse_fail_status)]
    fail_status: u16,

    /// Answer 400 invalid_number to every `to` starting with this prefix (e.g. +1999).
    /// "none" disables it.
    #[arg(long, env = "HERALD_SIMULATOR_REJECT_PREFIX", default_value = "none",
          value_parser = config::parse_reject_prefix)]
    reject_prefix: MaybePrefix,

    /// Numbers starting with this prefix replied STOP: Twilio's Messages API answers them
    /// 400 with code 21610 (other APIs send to them). "none" disables it.
    #[arg(long, env = "HERALD_SIMULATOR_OPTED_OUT_PREFIX", default_value = "none",
          value_parser = config::parse_reject_prefix)]
    opted_out_prefix: MaybePrefix,

    /// Fraction of requests (0.0-1.0) accepted (sent, receipts and all) whose answer is
    /// lost: the connection is dropped after the latency, without a response.
    #[arg(long, env = "HERALD_SIMULATOR_LOSE_RATE", default_value = "0",
          value_parser = config::parse_rate)]
    lose_rate: f64,

    /// Fraction of requests (0.0-1.0) accepted (sent, receipts and all) that are answered a
    /// 5xx all the same (Twilio 20500, Meta's code 2, a generic 500), as a provider that
    /// failed after taking the message does.
    #[arg(long, env = "HERALD_SIMULATOR_FAIL_AFTER_SEND_RATE", default_value = "0",
          value_parser = config::parse_rate)]
    fail_after_send_rate: f64,

    /// Start down: every request answered 503 until `PUT /control/config {"outage": false}`.
    #[arg(long, env = "HERALD_SIMULATOR_OUTAGE")]
    outage: bool,

    /// Replay the first answer to a repeated idempotency key instead of sending a second
    /// message. Off by default: Twilio and Meta honour no client key.
    #[arg(long, env = "HERALD_SIMULATOR_HONOUR_IDEMPOTENCY_KEYS")]
    honour_idempotency_keys: bool,

    /// Delay before each receipt, in ms (same forms as --latency): after the previous
    /// receipt, or after the send with --receipt-shuffle.
    #[arg(long, env = "HERALD_SIMULATOR_RECEIPT_DELAY", default_value = "fixed:50",
          value_parser = config::parse_latency)]
    receipt_delay: Latency,

    /// Count each receipt's delay from the send, so receipts arrive in any order.
    #[arg(long, env = "HERALD_SIMULATOR_RECEIPT_SHUFFLE")]
    receipt_shuffle: bool,

    /// Fraction of receipts (0.0-1.0) sent twice.
    #[arg(long, env = "HERALD_SIMULATOR_RECEIPT_DUPLICATE_RATE", default_value = "0",
          value_parser = config::parse_rate)]
    receipt_duplicate_rate: f64,

    /// Fraction of sends (0.0-1.0) whose first receipt is delivered before the send is
    /// answered.
    #[arg(long, env = "HERALD_SIMULATOR_RECEIPT_EARLY_RATE", default_value = "0",
          value_parser = config::parse_rate)]
    receipt_early_rate: f64,

    /// Fraction of messages (0.0-1.0) that end undelivered (calls: no-answer).
    #[arg(long, env = "HERALD_SIMULATOR_DELIVERY_FAILURE_RATE", default_value = "0",
          value_parser = config::parse_rate)]
    delivery_failure_rate: f64,

    /// Fraction of delivered WhatsApp messages (0.0-1.0) that are then read.
    #[arg(long, env = "HERALD_SIMULATOR_READ_RATE", default_value = "0",
          value_parser = config::parse_rate)]
    read_rate: f64,

    /// How long an answered call lasts before its final status, in ms.
    #[arg(long, env = "HERALD_SIMULATOR_CALL_DURATION_MS", default_value = "1000",
          value_parser = config::parse_hold_ms)]
    call_duration_ms: u64,

    /// Where WhatsApp status notifications go (a Meta app's webhook URL); "none": nowhere.
    #[arg(long, env = "HERALD_SIMULATOR_WHATSAPP_WEBHOOK_URL", default_value = "none",
          value_parser = config::parse_webhook_url)]
    whatsapp_webhook_url: MaybeUrl,

    /// The Meta app secret that signs WhatsApp notifications.
    #[arg(long, env = "HERALD_SIMULATOR_WHATSAPP_APP_SECRET",
          default_value = config::DEFAULT_APP_SECRET, value_parser = config::parse_secret)]
    whatsapp_app_secret: String,

    /// The Twilio account's auth token: signs the callbacks of requests made with an API key
    /// (SK…), as Twilio does; unset, those get no callbacks
    #[arg(long, env = "HERALD_SIMULATOR_TWILIO_AUTH_TOKEN", value_parser = config::parse_secret)]
    twilio_auth_token: Option<String>,

    /// The secret that signs the generic API's receipts (X-Herald-Signature).
    #[arg(long, env = "HERALD_SIMULATOR_WEBHOOK_SECRET",
          default_value = config::DEFAULT_WEBHOOK_SECRET, value_parser = config::parse_secret)]
    webhook_secret: String,
}

impl Args {
    fn behaviour(&self) -> BehaviourConfig {
        BehaviourConfig {
            latency: self.latency,
            error_rate: self.error_rate,
            timeout_rate: self.timeout_rate,
            timeout_hold_ms: self.timeout_hold_ms,
            rate_limit: self.rate_limit,
            fail_first: self.fail_first,
            fail_status: self.fail_status,
            reject_prefix: self.reject_prefix.clone(),
            opted_out_prefix: self.opted_out_prefix.clone(),
            lose_rate: self.lose_rate,
            fail_after_send_rate: self.fail_after_send_rate,
            outage: self.outage,
            honour_idempotency_keys: self.honour_idempotency_keys,
            receipt_delay: self.receipt_delay,
            receipt_shuffle: self.receipt_shuffle,
            receipt_duplicate_rate: self.receipt_duplicate_rate,
            receipt_early_rate: self.receipt_early_rate,
            delivery_failure_rate: self.delivery_failure_rate,
            read_rate: self.read_rate,
            call_duration_ms: self.call_duration_ms,
            whatsapp_webhook_url: self.whatsapp_webhook_url.clone(),
            whatsapp_app_secret: self.whatsapp_app_secret.clone(),
            webhook_secret: self.webhook_secret.clone(),
            // Set at run time (PUT /control/config), to revoke a credential mid-run.
            revoked_credential: None,
            twilio_auth_token: self.twilio_auth_token.clone(),
            redirect_to: None,
            // Set at run time (PUT /control/config), as a provider's answers change.
            see_other: false,
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let behaviour = args.behaviour();
    if behaviour.validate().is_err() {
        Args::command()
            .error(
                ErrorKind::ArgumentConflict,
                "--error-rate + --timeout-rate + --lose-rate + --fail-after-send-rate must not exceed 1.0",
            )
            .exit();
    }
    herald_shared::telemetry::init("herald-simulator");

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(
        listen = %listener.local_addr().unwrap_or(args.listen),
        latency = %behaviour.latency,
        error_rate = behaviour.error_rate,
        timeout_rate = behaviour.timeout_rate,
        timeout_hold_ms = behaviour.timeout_hold_ms,
        rate_limit = %behaviour.rate_limit.map_or_else(|| "none".to_owned(), |r| r.to_string()),
        fail_first = behaviour.fail_first,
        fail_status = behaviour.fail_status,
        reject_prefix = behaviour.reject_prefix.as_deref().unwrap_or("none"),
        opted_out_prefix = behaviour.opted_out_prefix.as_deref().unwrap_or("none"),
        "provider simulator listening"
    );

    let state = routes::AppState::new(behaviour);
    let app = routes::router(state.clone());
    server::serve(listener, app, async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        state.begin_shutdown();
    })
    .await;
    tracing::info!("stopped");
    Ok(())
}
