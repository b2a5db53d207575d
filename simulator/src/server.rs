//! Serving connections one by one (rather than with `axum::serve`), so that a handler can
//! drop its own connection without answering: what a client sees when a provider took a
//! request and the answer was lost on the way back.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// The connection a request came on, in its extensions.
#[derive(Clone)]
pub struct Connection(CancellationToken);

impl Connection {
    /// Closes the connection at once, whatever is being answered on it.
    pub fn drop_without_answer(&self) {
        self.0.cancel();
    }
}

/// Serves `app` until `shutdown` completes, then gives answers in progress up to 2 s.
pub async fn serve(listener: TcpListener, app: Router, shutdown: impl Future<Output = ()>) {
    let connections = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        connections.spawn(async move {
            let token = CancellationToken::new();
            let this = Connection(token.clone());
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(this.clone());
                    let app = app.clone();
                    async move {
                        Ok::<_, Infallible>(
                            app.oneshot(request).await.unwrap_or_else(|e| match e {}),
                        )
                    }
                });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                () = token.cancelled() => {}
            }
        });
    }
    connections.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), connections.wait()).await;
}
