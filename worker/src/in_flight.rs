//! This worker's cap on requests in flight to each provider: its share of the provider's
//! fleet-wide cap (see [`fleet`](crate::fleet)), resized as workers join and leave.
//!
//! A lane's prefetch follows from the same share, but a new prefetch only applies to
//! deliveries taken after it: when a worker joins and the others' shares shrink, deliveries
//! they already hold would overshoot the cap. The cap is therefore enforced per recipient,
//! by a semaphore taken before its lease and held until its request is answered, which
//! shrinks by retiring permits as requests finish.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

#[derive(Clone, Default)]
pub struct InFlight {
    caps: Arc<Mutex<HashMap<Uuid, Cap>>>,
}

struct Cap {
    semaphore: Arc<Semaphore>,
    size: u32,
    /// Permits still to be taken out of circulation after a shrink: requests in flight
    /// that, as they finish, do not hand their room back.
    owed: Arc<AtomicU32>,
    /// Set by [`InFlight::idle`] (no room here for as long as the fleet's cap says so), and
    /// cleared when the cap grows again: those waiting for room give up, and those who
    /// come ask no more.
    idle: bool,
    /// Told when the cap is idled.
    idled: Arc<Notify>,
}

impl Cap {
    fn new(size: u32) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(size as usize)),
            size,
            owed: Arc::default(),
            idle: false,
            idled: Arc::default(),
        }
    }
}

/// Room for one request; given back (or retired, after a shrink) when dropped.
pub struct Permit {
    permit: Option<OwnedSemaphorePermit>,
    owed: Arc<AtomicU32>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let retire = self
            .owed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        if let (true, Some(permit)) = (retire, self.permit.take()) {
            permit.forget();
        }
    }
}

impl InFlight {
    /// Sets this worker's cap for `provider` to `size` (0: no request until it grows; those
    /// waiting for room go on waiting, as through a database outage, when a delivery handed
    /// back would only come back at once, again and again, until its delivery limit).
    pub fn set(&self, provider: Uuid, size: u32) {
        let mut caps = self.caps.lock().unwrap_or_else(PoisonError::into_inner);
        let cap = caps.entry(provider).or_insert_with(|| Cap::new(size));
        if size > 0 {
            cap.idle = false;
        }
        if size > cap.size {
            // Growing first cancels what a shrink still owed, then adds room.
            // One atomic update: a permit dropped meanwhile may pay off some of the debt,
            // and a separate read and subtract would then wrap it round.
            let mut grow = size - cap.size;
            let owed = cap
                .owed
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    Some(n.saturating_sub(grow))
                })
                .unwrap_or_else(|n| n);
            let cancelled = owed.min(grow);
            grow -= cancelled;
            cap.semaphore.add_permits(grow as usize);
        } else if size < cap.size {
            // Free room goes at once; the rest as requests in flight finish.
            let surplus = (cap.size - size) as usize;
            let owed = surplus - cap.semaphore.forget_permits(surplus);
            cap.owed.fetch_add(owed as u32, Ordering::AcqRel);
        }
        cap.size = size;
    }

    /// Sets the cap for `provider` to zero for as long as the fleet leaves this worker no
    /// room for it (its lane is not consumed meanwhile): those waiting for room give up, so
    /// that their deliveries go to a worker with room rather than wait until the broker's
    /// consumer timeout takes them back (30 minutes, closing the channel).
    pub fn idle(&self, provider: Uuid) {
        self.set(provider, 0);
        let mut caps = self.caps.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cap) = caps.get_mut(&provider) {
            cap.idle = true;
            cap.idled.notify_waiters();
        }
    }

    /// Waits for room to send one request to `provider`. A provider whose cap was never
    /// set gets a cap of one. `None` while the cap is idle, or once it is idled
    /// ([`idle`](Self::idle)): the delivery is another worker's to send.
    pub async fn acquire(&self, provider: Uuid) -> Option<Permit> {
        let idled;
        let (semaphore, owed) = {
            let mut caps = self.caps.lock().unwrap_or_else(PoisonError::into_inner);
            let cap = caps.entry(provider).or_insert_with(|| Cap::new(1));
            if cap.idle {
                return None;
            }
            idled = cap.idled.clone();
            (cap.semaphore.clone(), cap.owed.clone())
        };
        let mut made_idle = std::pin::pin!(idled.notified());
        // Listening before the cap is looked at again: idled from here on is seen.
        made_idle.as_mut().enable();
        if self.is_idle(provider) {
            return None;
        }
        tokio::select! {
            // The semaphore is never closed, so acquiring cannot fail.
            permit = semaphore.acquire_owned() => Some(Permit { permit: permit.ok(), owed }),
            () = made_idle => None,
        }
    }

    fn is_idle(&self, provider: Uuid) -> bool {
        let caps = self.caps.lock().unwrap_or_else(PoisonError::into_inner);
        caps.get(&provider).is_some_and(|cap| cap.idle)
    }

    /// Sets every provider's cap to nothing: no request starts until a cap is set again, and
    /// those running stay counted ([`in_use_at_most`](Self::in_use_at_most)) until they end.
    pub fn give_up_all(&self) {
        let providers: Vec<Uuid> = {
            let caps = self.caps.lock().unwrap_or_else(PoisonError::into_inner);
            caps.keys().copied().collect()
        };
        for provider in providers {
            self.set(provider, 0);
        }
    }

    /// The cap now set for `provider`.
    pub fn size(&self, provider: Uuid) -> Option<u32> {
        let caps = self.caps.lock().unwrap_or_else(PoisonError::into_inner);
        caps.get(&provider).map(|cap| cap.size)
    }

    /// Per provider, the requests this worker may have in flight: its cap, plus requests
    /// still running from a larger cap it has since given up (what the rest of the fleet
    /// must leave it).
    pub fn in_use_at_most(&self) -> HashMap<Uuid, u32> {
        let caps = self.caps.lock().unwrap_or_else(PoisonError::into_inner);
        caps.iter()
            .map(|(provider, cap)| {
                let owed = cap.owed.load(Ordering::Acquire);
                (*provider, cap.size.saturating_add(owed))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn shrinking_waits_for_requests_in_flight() {
        let caps = InFlight::default();
        let provider = Uuid::from_u128(1);
        caps.set(provider, 3);
        let held: Vec<_> = futures::future::join_all((0..3).map(|_| caps.acquire(provider))).await;
        assert!(held.iter().all(Option::is_some));
        caps.set(provider, 1);
        // Two of the three must come back before anyone may start: the cap is now one.
        drop(held);
        let first = caps.acquire(provider).await;
        let second = tokio::time::timeout(Duration::from_millis(50), caps.acquire(provider)).await;
        assert!(
            second.is_err(),
            "a second request started under a cap of one"
        );
        drop(first);
        assert_eq!(caps.size(provider), Some(1));
    }

    #[tokio::test]
    async fn growing_after_a_shrink_cancels_what_was_owed() {
        let caps = InFlight::default();
        let provider = Uuid::from_u128(1);
        caps.set(provider, 2);
        let held = [caps.acquire(provider).await, caps.acquire(provider).await];
        caps.set(provider, 1);
        caps.set(provider, 2);
        drop(held);
        let _both = [caps.acquire(provider).await, caps.acquire(provider).await];
        let third = tokio::time::timeout(Duration::from_millis(50), caps.acquire(provider)).await;
        assert!(third.is_err(), "a cap of two admitted three");
    }

    #[tokio::test]
    async fn what_may_be_in_use_counts_requests_running_past_a_shrink() {
        let caps = InFlight::default();
        let provider = Uuid::from_u128(1);
        caps.set(provider, 4);
        let held: Vec<_> = futures::future::join_all((0..3).map(|_| caps.acquire(provider))).await;
        caps.set(provider, 1);
        // One free permit went at once; two of the three running still owe theirs.
        assert_eq!(caps.in_use_at_most()[&provider], 3);
        drop(held);
        assert_eq!(caps.in_use_at_most()[&provider], 1);
        caps.set(provider, 0);
        assert_eq!(caps.in_use_at_most()[&provider], 0);
        let none = tokio::time::timeout(Duration::from_millis(20), caps.acquire(provider)).await;
        assert!(none.is_err(), "a cap of zero admits nothing");
    }

    /// A cap set to zero (a database outage's give-up) keeps those waiting waiting: handed
    /// back, their deliveries would come back at once, again and again. An idled one (the
    /// fleet leaves this worker no room) lets them go to another worker, and those who come
    /// after are turned away at once; grown again, it admits.
    #[tokio::test]
    async fn those_waiting_give_up_only_when_the_cap_is_idled() {
        let caps = InFlight::default();
        let provider = Uuid::from_u128(1);
        caps.set(provider, 1);
        let held = caps.acquire(provider).await;
        assert!(held.is_some());
        let waiting = tokio::spawn({
            let caps = caps.clone();
            async move { caps.acquire(provider).await.is_some() }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        caps.set(provider, 0);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiting.is_finished(),
            "gave up at a cap merely set to zero"
        );
        caps.idle(provider);
        let got = tokio::time::timeout(Duration::from_secs(1), waiting).await;
        assert!(matches!(got, Ok(Ok(false))), "{got:?}");
        assert!(caps.acquire(provider).await.is_none());
        drop(held);
        caps.set(provider, 1);
        assert!(caps.acquire(provider).await.is_some());
    }

    #[tokio::test]
    async fn growing_admits_more_at_once() {
        let caps = InFlight::default();
        let provider = Uuid::from_u128(1);
        caps.set(provider, 1);
        let _first = caps.acquire(provider).await;
        caps.set(provider, 2);
        let second = tokio::time::timeout(Duration::from_millis(50), caps.acquire(provider)).await;
        assert!(matches!(second, Ok(Some(_))));
    }
}
