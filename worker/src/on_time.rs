//! Requests to rate-limited providers leave on their send slots from a thread of their own.
//!
//! A slot is only worth something if the request goes out within a few milliseconds of it
//! (see [`LATE`]). On the worker's main runtime a timer fires only when a runtime thread
//! gets round to it, and a busy lane beside the paced one (an overflow provider taking
//! hundreds of requests a second) made one paced request in four miss its slot by 10-75 ms,
//! so the paced provider ran at 60% of its limit. This thread does nothing but wait for
//! slots and make those requests, with its own HTTP client (a connection is served by the
//! runtime that opened it), so the operating system wakes it on time.

use crate::egress::Egress;
use crate::outcome::CallResult;
use crate::provider_call;
use crate::providers::Provider;
use herald_shared::public_address::Networks;
use herald_shared::queue::message::DispatchMessage;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio_util::task::AbortOnDropHandle;

/// A request that would leave more than this after its slot is not sent: late requests
/// would bunch with the next ones and break the limit in some window. Well under the 3.6%
/// of a window that Herald's pace leaves free (`herald_shared::rate_limit`).
pub const LATE: Duration = Duration::from_millis(10);

/// The thread for paced requests; it ends when the last clone is dropped.
#[derive(Clone)]
pub struct OnTime {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: tokio::runtime::Handle,
    egress: Egress,
    /// Dropped with the last clone, which lets the thread's runtime stop.
    _stop: oneshot::Sender<()>,
}

impl OnTime {
    pub fn start(
        client: impl Fn() -> reqwest::ClientBuilder,
        allowed: Networks,
    ) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("herald-paced".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        let egress = {
            // The clients' connections must belong to the paced runtime.
            let _guard = handle.enter();
            Egress::build(client, allowed).map_err(std::io::Error::other)?
        };
        Ok(Self {
            inner: Arc::new(Inner {
                runtime: handle,
                egress,
                _stop: stop,
            }),
        })
    }

    /// Waits for `slot` and makes the request then, on the paced thread. `None` if the slot
    /// was missed by more than [`LATE`]: nothing was sent, and a new slot is needed.
    pub async fn send_at(
        &self,
        slot: Instant,
        provider: Arc<Provider>,
        message: DispatchMessage,
    ) -> Option<CallResult> {
        let egress = self.inner.egress.clone();
        // Should the delivery give up waiting, the request must not go out behind its back.
        let task = AbortOnDropHandle::new(self.inner.runtime.spawn(async move {
            tokio::time::sleep_until(slot.into()).await;
            if Instant::now() > slot + LATE {
                return None;
            }
            Some(provider_call::send(&egress, &provider, &message).await)
        }));
        match task.await {
            Ok(result) => result,
            // The task may have died after its request was written: not a reason to send
            // again blindly.
            Err(error) => Some(CallResult::Unknown {
                reason: format!("the paced request did not finish: {error}"),
                retry_after: None,
            }),
        }
    }
}
