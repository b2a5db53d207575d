//! Coalescing many small database requests into one statement.
//!
//! Hundreds of deliveries in flight each need a write before and after their provider call.
//! One statement per delivery would make PostgreSQL commits the bottleneck; a batcher takes
//! whatever requests have queued up while the previous statement ran and answers each one.
//! By default it sets no timer, so an idle worker adds no latency; a batcher whose callers
//! can afford to wait ([`Batcher::spawn_lingering`]) waits a little for a fuller batch, so a
//! slow trickle of requests does not cost a statement each.

use std::future::Future;
use std::time::Duration;
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
        Self::spawn_lingering(max_batch, lanes, Duration::ZERO, handle)
    }

    /// Like [`spawn_parallel`](Self::spawn_parallel), and a batch that is not full when its
    /// first request arrives waits up to `linger` for more. Only for requests whose callers
    /// hold nothing scarce while they wait. Gathering is one lane at a time, so a batcher
    /// whose batches stay short of `max_batch` runs at most one statement per `linger`.
    pub fn spawn_lingering<F, Fut>(
        max_batch: usize,
        lanes: usize,
        linger: Duration,
        handle: F,
    ) -> Self
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
                    if gather(&mut *receiver.lock().await, &mut jobs, max_batch, linger).await == 0
                    {
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

/// Waits for at least one job, then takes what else has queued, after lingering up to
/// `linger` while that is not a full batch; 0 once every sender is gone. The linger checks
/// the queue four times, not at every arriving job: at high rates jobs arrive by the hundred
/// within it, and a batch that fills sooner goes sooner.
async fn gather<T>(
    receiver: &mut mpsc::Receiver<T>,
    jobs: &mut Vec<T>,
    max_batch: usize,
    linger: Duration,
) -> usize {
    if receiver.recv_many(jobs, max_batch).await == 0 {
        return 0;
    }
    let deadline = tokio::time::Instant::now() + linger;
    while !linger.is_zero() && jobs.len() + receiver.len() < max_batch {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep((deadline - now).min(linger / 4)).await;
    }
    if jobs.len() < max_batch && !receiver.is_empty() {
        let room = max_batch - jobs.len();
        receiver.recv_many(jobs, room).await;
    }
    jobs.len()
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

    #[tokio::test(start_paused = true)]
    async fn a_lingering_batcher_waits_for_a_trickle_but_not_past_its_linger() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let batcher = Batcher::spawn_lingering(
            10,
            1,
            Duration::from_millis(20),
            move |requests: Vec<u32>| {
                seen.lock().unwrap().push(requests.len());
                async move { requests }
            },
        );
        // One request every 2 ms: without the linger, each would be a statement of its own.
        let calls: Vec<_> = (0..25u32)
            .map(|n| {
                let b = batcher.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(2 * u64::from(n))).await;
                    b.call(n).await.unwrap()
                })
            })
            .collect();
        for (n, call) in calls.into_iter().enumerate() {
            assert_eq!(call.await.unwrap(), n as u32);
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 25);
        assert!(sizes.len() <= 4, "25 trickling requests took {sizes:?}");
        // A lone request is answered once the linger is over.
        let started = tokio::time::Instant::now();
        batcher.call(99).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_millis(20));
        // A batch that fills during the linger goes at the next look, not at its end.
        let started = tokio::time::Instant::now();
        let calls: Vec<_> = (0..10u32)
            .map(|n| {
                let b = batcher.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(u64::from(n.min(1)))).await;
                    b.call(n).await.unwrap()
                })
            })
            .collect();
        for call in calls {
            call.await.unwrap();
        }
        assert_eq!(started.elapsed(), Duration::from_millis(5));
    }
}
