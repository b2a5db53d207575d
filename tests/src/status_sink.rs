//! A tenant's own endpoint for status events: a real HTTP server on loopback that answers
//! the first `failing` posts 500 (or another status; with a NUL and a terminal escape in the
//! answer, which Herald must still be able to record) and the others 200, and keeps every
//! post it got.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use herald_shared::status_event::StatusEvent;
use std::sync::{Arc, Mutex};

/// One post as received.
#[derive(Debug, Clone)]
pub struct Post {
    pub signature: Option<String>,
    pub body: Bytes,
    /// What it was answered.
    pub answered: u16,
}

impl Post {
    pub fn event(&self) -> crate::Result<StatusEvent> {
        Ok(serde_json::from_slice(&self.body)?)
    }
}

#[derive(Default)]
struct Kept {
    posts: Vec<Post>,
    failing: usize,
    /// What the failing posts are answered.
    failure: StatusCode,
}

/// The endpoint, served until dropped.
pub struct StatusSink {
    pub url: String,
    kept: Arc<Mutex<Kept>>,
    server: tokio::task::JoinHandle<()>,
}

impl StatusSink {
    /// Serves on a free loopback port; the first `failing` posts are answered 500.
    pub async fn start(failing: usize) -> crate::Result<Self> {
        Self::start_answering(failing, StatusCode::INTERNAL_SERVER_ERROR).await
    }

    /// Serves on a free loopback port; the first `failing` posts are answered `failure`.
    pub async fn start_answering(failing: usize, failure: StatusCode) -> crate::Result<Self> {
        let kept = Arc::new(Mutex::new(Kept {
            posts: Vec::new(),
            failing,
            failure,
        }));
        let app = Router::new()
            .route("/events", post(take))
            .with_state(kept.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/events", listener.local_addr()?);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, kept, server })
    }

    /// Every post so far, in the order received.
    pub fn posts(&self) -> Vec<Post> {
        self.kept
            .lock()
            .map(|k| k.posts.clone())
            .unwrap_or_default()
    }

    /// The ids of the events posted so far (each once, however often it was posted).
    pub fn event_ids(&self) -> std::collections::BTreeSet<uuid::Uuid> {
        self.posts()
            .iter()
            .filter_map(|p| p.event().ok().map(|e| e.id))
            .collect()
    }
}

impl Drop for StatusSink {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn take(
    State(kept): State<Arc<Mutex<Kept>>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let Ok(mut kept) = kept.lock() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "");
    };
    let answered = if kept.failing > 0 {
        kept.failing -= 1;
        kept.failure
    } else {
        StatusCode::OK
    };
    kept.posts.push(Post {
        signature: headers
            .get(herald_shared::signature::EVENT_SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body,
        answered: answered.as_u16(),
    });
    let text = if answered.is_success() {
        ""
    } else {
        "down\0 \x1b[31mfor maintenance"
    };
    (answered, text)
}
