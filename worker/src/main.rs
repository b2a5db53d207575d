use clap::Parser;
use herald_worker::config::WorkerConfig;
use tokio_util::sync::CancellationToken;

/// jemalloc, one arena (`narenas:1`, set at build time in `.cargo/config.toml`;
/// `_RJEM_MALLOC_CONF` overrides it at run time): every request allocates and frees its
/// connection's buffers, futures and bodies, and glibc's malloc spent more CPU on that
/// (BENCHMARKS.md, "2026-12-02 (later)").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Herald's worker: consumes the dispatch queue and calls providers, many requests in flight.
/// Stateless; run as many replicas as needed. SIGTERM drains in-flight work, then exits 0.
#[derive(Debug, Parser)]
#[command(name = "herald-worker", version)]
struct Cli {
    #[command(flatten)]
    config: WorkerConfig,
}

fn main() -> anyhow::Result<()> {
    let cli: Cli = herald_shared::config::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.config.threads {
        runtime.worker_threads(usize::from(threads));
    }
    runtime.enable_all().build()?.block_on(serve(cli))
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    herald_shared::telemetry::init("herald-worker");
    herald_shared::shutdown::exit_on_panic("herald-worker");
    // Every request in flight holds a connection (2,000 per lane by default), past the soft
    // limit of 1,024 open files that systemd and some container runtimes set; past it new
    // requests would fail and trip the provider's breaker. The soft limit goes up to the hard.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open files allowed"),
        Err(error) => tracing::warn!(%error, "cannot raise the open-files limit"),
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(herald_shared::shutdown::on_signal(shutdown.clone()));
    herald_worker::run(cli.config, shutdown).await?;
    Ok(())
}
