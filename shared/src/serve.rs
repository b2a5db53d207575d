//! Serving an axum app over HTTP/1.1 with a limit `axum::serve` does not set: a client must
//! send each request's head within a deadline. Without it (axum gives hyper no timer), a
//! connection that opens and says nothing, or trickles its headers a byte at a time, holds
//! a socket and a task for as long as the client likes: enough of them and the listener
//! runs out of file descriptors for the callers it is there for.
//!
//! The deadline runs from the end of the previous answer too, so it is also how long an
//! idle keep-alive connection is kept: a proxy in front must close its idle upstream
//! connections sooner, or it will now and then send a request on one being closed.
//! Everything after the head (the body, the handler) is the app's to bound.

use crate::ops::metrics::HTTP_REFUSED;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::io::ErrorKind;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// How long, after `shutdown`, the requests in progress may take to finish: within an
/// orchestrator's grace period (Kubernetes' 30 s less a 5 s pre-stop pause in the
/// manifests; compose's 30 s), so that the process exits on its own rather than being
/// killed. An admin request may be allowed longer (`HERALD_ADMIN_REQUEST_TIMEOUT_MS`, an
/// upload as long as it streams): cut here, its transaction rolls back, as at a kill.
pub const DRAIN_WITHIN: Duration = Duration::from_secs(20);

/// Serves `app` on `listener` until `shutdown` is cancelled; then stops accepting, lets each
/// connection finish the request it is answering (its keep-alive ended) and returns once
/// all have, or after [`DRAIN_WITHIN`]. A connection whose next request head is not in
/// within `head_timeout` is closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    head_timeout: Duration,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // The client gave up before it was accepted: nothing to do.
                Err(error) if matches!(
                    error.kind(),
                    ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
                ) => continue,
                Err(error) => {
                    // Out of file descriptors, say: wait for some to be closed rather than
                    // spin (as axum::serve does).
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let (app, shutdown) = (app.clone(), shutdown.clone());
        connections.spawn(async move {
            // A connection that has served a request and then times out was kept alive
            // idle, not refused.
            let served = Arc::new(AtomicBool::new(false));
            let service = hyper::service::service_fn({
                let served = served.clone();
                move |request: hyper::Request<Incoming>| {
                    served.store(true, Ordering::Relaxed);
                    let app = app.clone();
                    async move {
                        Ok::<_, Infallible>(
                            app.oneshot(request).await.unwrap_or_else(|e| match e {}),
                        )
                    }
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(head_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            match ended {
                Err(error) if error.is_timeout() && !served.load(Ordering::Relaxed) => {
                    metrics::counter!(HTTP_REFUSED, "reason" => "head_timeout").increment(1);
                    tracing::debug!("closed a connection that sent no request head in time");
                }
                Err(error) => tracing::debug!(%error, "connection ended"),
                Ok(()) => {}
            }
        });
    }
    // New connections are refused at once rather than left in the backlog until the last
    // answer is given.
    drop(listener);
    connections.close();
    if tokio::time::timeout(DRAIN_WITHIN, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = connections.len(),
            "requests still in progress after the drain: cut short"
        );
    }
}
