//! Coalescing many small database requests into one statement.
//!
//! Hundreds of deliveries in flight each need a write before and after their provider call.
//! One statement per delivery would make PostgreSQL commits the bottleneck; a batcher takes
//! whatever requests have queued up while the previous statement ran (no timer, so an idle
//! worker adds no latency) and answers each one.

use std::future::Future;
use tokio::sync::{mpsc, oneshot};

type Job<Req, Resp> = (Req, oneshot::Sender<Resp>);

/// A handle to a batching task.
pub struct Batcher<Req, Resp> {
    sender: mpsc::Sender<Job<Req, Resp>>,
}

impl<Req, Resp> Clone for Batcher<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the batcher has stopped")]
pub struct Stopped;

impl<Req: Send + 'static, Resp: Send + 'static> Batcher<Req, Resp> {
    /// Spawns the task. `handle` gets up to `max_batch` requests and returns one answer per
    /// request, in order.
    pub fn spawn<F, Fut>(max_batch: usize, handle: F) -> Self
    where
        F: FnMut(Vec<Req>) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Vec<Resp>> + Send,
    {
        Self::spawn_parallel(max_batch, 1, handle)
    }

    /// Like [`spawn`](Self::spawn), with up to `lanes` batches in progress at once: while one
    /// statement runs, the next batch gathers and can start on another connection, so a
    /// database with more than one core is not left waiting on a single statement.
    pub fn spawn_parallel<F, Fut>(max_batch: usize, lanes: usize, handle: F) -> Self
    where
        F: FnMut(Vec<Req>) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Vec<Resp>> + Send,
    {
        let (sender, receiver) = mpsc::channel::<Job<Req, Resp>>(max_batch * 4);
        let receiver = std::sync::Arc::new(tokio::sync::Mutex::new(receiver));
        for _ in 0..lanes.max(1) {
            let receiver = receiver.clone();
            let mut handle = handle.clone();
            tokio::spawn(async move {
                let mut jobs = Vec::with_capacity(max_batch);
                loop {
                    // Only gathering is exclusive; the statements of different lanes overlap.
                    let got = receiver.lock().await.recv_many(&mut jobs, max_batch).await;
                    if got == 0 {
                        return;
                    }
                    let (requests, replies): (Vec<Req>, Vec<oneshot::Sender<Resp>>) =
                        jobs.drain(..).unzip();
                    let answers = handle(requests).await;
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        // The caller may have gone away (shutdown); nothing to do then.
                        let _ = reply.send(answer);
                    }
                }
            });
        }
        Self { sender }
    }

    /// Submits one request and waits for its answer.
    pub async fn call(&self, request: Req) -> Result<Resp, Stopped> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send((request, reply))
            .await
            .map_err(|_| Stopped)?;
        answer.await.map_err(|_| Stopped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn answers_each_request_and_coalesces_concurrent_ones() {
        let statements = Arc::new(AtomicUsize::new(0));
        let counter = statements.clone();
        let batcher = Batcher::spawn(64, move |requests: Vec<u32>| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                requests.into_iter().map(|n| n * 2).collect()
            }
        });
        let calls: Vec<_> = (0..200u32)
            .map(|n| {
                let b = batcher.clone();
                tokio::spawn(async move { (n, b.call(n).await.unwrap()) })
            })
            .collect();
        for call in calls {
            let (n, doubled) = call.await.unwrap();
            assert_eq!(doubled, n * 2);
        }
        let used = statements.load(Ordering::SeqCst);
        assert!(used < 200, "200 requests took {used} statements");
    }

    #[tokio::test]
    async fn parallel_lanes_overlap_statements_and_answer_each_request() {
        let running = Arc::new(AtomicUsize::new(0));
        let overlapped = Arc::new(AtomicUsize::new(0));
        let (r, o) = (running.clone(), overlapped.clone());
        let batcher = Batcher::spawn_parallel(8, 2, move |requests: Vec<u32>| {
            let (r, o) = (r.clone(), o.clone());
            async move {
                if r.fetch_add(1, Ordering::SeqCst) > 0 {
                    o.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                r.fetch_sub(1, Ordering::SeqCst);
                requests.into_iter().map(|n| n + 1).collect()
            }
        });
        let calls: Vec<_> = (0..100u32)
            .map(|n| {
                let b = batcher.clone();
                tokio::spawn(async move { (n, b.call(n).await.unwrap()) })
            })
            .collect();
        for call in calls {
            let (n, answer) = call.await.unwrap();
            assert_eq!(answer, n + 1);
        }
        assert!(
            overlapped.load(Ordering::SeqCst) > 0,
            "two batches ran at once"
        );
    }
}
