//! How a process ends: SIGTERM / SIGINT turned into a cancellation every task can watch,
//! and a panic that ends the whole process rather than the one task it happened in.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Cancels `token` at the first SIGTERM or SIGINT.
pub async fn on_signal(token: CancellationToken) {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received; shutting down"),
    }
    token.cancel();
}

/// Makes any panic end the process (exit status 101, as a panic of `main` would), after the
/// usual report. For the services that carry work (the scheduler, the workers): a panic in
/// one of their tasks (a delivery, a batcher's lane, a lane's forwarder) would otherwise end
/// that task alone and leave a process that looks alive but holds deliveries it will never
/// settle, or takes no more of some work. Everything they do is safe to kill at any point,
/// and the orchestrator starts a fresh one. (The admin and the receiver keep the default: a
/// panic there ends one request's task.)
pub fn exit_on_panic(service: &'static str) {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        tracing::error!(service, %info, "panicked; exiting so that a fresh process takes over");
        std::process::exit(101);
    }));
}
