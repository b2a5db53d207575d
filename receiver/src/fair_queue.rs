//! Receipts (and recipients' STOP and START) waiting for their statement, kept per owner and
//! taken in turns.
//!
//! Every tenant's receipts share the receiver's one store statement. Taken in arrival order,
//! a tenant posting 1,000-receipt bodies as fast as it likes (signed with its own provider's
//! secret) put tens of thousands ahead of everyone else's: another provider's receipt then
//! waited past the request's deadline and was answered 503, and Twilio does not send a
//! callback again. Here each batch is shared out among the owners with receipts waiting, so
//! a receipt waits about one statement whatever another owner has queued; and an owner may
//! have at most a bounded number waiting, past which its requests are refused at once (its
//! provider retries), holding neither memory nor a request place.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// A request's items were refused: its owner already has too many waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crowded;

/// Items waiting per owner, and the owners in the order of their turns.
#[derive(Debug)]
pub struct FairQueue<K, T> {
    queues: HashMap<K, VecDeque<T>>,
    /// Owners with items waiting, each once, next turn first.
    turns: VecDeque<K>,
    /// Most items one owner may have waiting.
    per_owner: usize,
    /// Most items waiting in all, before owners are held to an equal part of it.
    total: usize,
    /// Items waiting, in all.
    waiting: usize,
}

impl<K: Hash + Eq + Clone, T> FairQueue<K, T> {
    pub fn new(per_owner: usize, total: usize) -> Self {
        Self {
            queues: HashMap::new(),
            turns: VecDeque::new(),
            per_owner,
            total,
            waiting: 0,
        }
    }

    /// Queues all of `items` for `owner`, or none of them (a request is stored whole or
    /// refused whole) if that would put more than the owner's bound waiting, or, with the
    /// total past its bound, more than an equal part of that bound (many owners each at
    /// their own bound would otherwise hold memory without end, requests that gave up
    /// waiting leaving their items behind; an owner with little waiting still gets in).
    pub fn push(
        &mut self,
        owner: K,
        items: impl ExactSizeIterator<Item = T>,
    ) -> Result<(), Crowded> {
        let waiting = self.queues.get(&owner).map_or(0, VecDeque::len);
        let after = waiting + items.len();
        let owners = self.turns.len() + usize::from(waiting == 0);
        let waiting_after = self.waiting + items.len();
        if after > self.per_owner
            || (waiting_after > self.total && after > self.total / owners.max(1))
            // Each newcomer's equal part adds to the total: twice it bounds them all.
            || waiting_after > 2 * self.total
        {
            return Err(Crowded);
        }
        self.waiting += items.len();
        if items.len() == 0 {
            return Ok(());
        }
        if waiting == 0 {
            self.turns.push_back(owner.clone());
        }
        self.queues.entry(owner).or_default().extend(items);
        Ok(())
    }

    /// Up to `max` items, shared out among the owners with items waiting (see [`shares`]).
    /// Owners left out (more owners than room) keep their turn at the front; an owner served
    /// that still has items waiting goes to the back.
    pub fn take(&mut self, max: usize) -> Vec<T> {
        let waiting: Vec<usize> = self.turns.iter().map(|k| self.queues[k].len()).collect();
        let shares = shares(&waiting, max);
        let mut batch = Vec::with_capacity(shares.iter().sum());
        let (mut left_out, mut served) = (VecDeque::new(), VecDeque::new());
        for (owner, share) in std::mem::take(&mut self.turns).into_iter().zip(shares) {
            let queue = self
                .queues
                .get_mut(&owner)
                .expect("an owner in turn has a queue");
            batch.extend(queue.drain(..share));
            self.waiting -= share;
            if queue.is_empty() {
                self.queues.remove(&owner);
            } else if share == 0 {
                left_out.push_back(owner);
            } else {
                served.push_back(owner);
            }
        }
        left_out.append(&mut served);
        self.turns = left_out;
        batch
    }

    /// Items waiting, in all.
    pub fn len(&self) -> usize {
        self.waiting
    }

    pub fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }
}

/// How many of each owner's `waiting` items (owners in turn order) a batch of at most `max`
/// takes: max-min fair, so an owner with fewer waiting than an equal part gets all of
/// them, and what it leaves is split among the rest. Parts that do not divide evenly go
/// one each in turn order, as does the whole batch when there are more owners than room.
pub fn shares(waiting: &[usize], max: usize) -> Vec<usize> {
    let owners = waiting.len();
    if max < owners {
        return (0..owners).map(|i| usize::from(i < max)).collect();
    }
    // Of owners with as many waiting, the later in turn is given its part first: the
    // rounding it leaves goes to the earlier.
    let mut smallest_first: Vec<usize> = (0..owners).collect();
    smallest_first.sort_by_key(|&i| (waiting[i], std::cmp::Reverse(i)));
    let mut shares = vec![0; owners];
    let mut room = max;
    for (done, &i) in smallest_first.iter().enumerate() {
        shares[i] = waiting[i].min(room / (owners - done));
        room -= shares[i];
    }
    for (share, &waiting) in shares.iter_mut().zip(waiting) {
        if room == 0 {
            break;
        }
        if *share < waiting {
            *share += 1;
            room -= 1;
        }
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners(batch: &[(char, u32)]) -> HashMap<char, usize> {
        let mut count = HashMap::new();
        for (owner, _) in batch {
            *count.entry(*owner).or_default() += 1;
        }
        count
    }

    fn push(q: &mut FairQueue<char, (char, u32)>, owner: char, n: u32) -> Result<(), Crowded> {
        q.push(owner, (0..n).map(|i| (owner, i)))
    }

    #[test]
    fn a_flood_takes_no_more_than_its_share_of_a_batch() {
        let mut q = FairQueue::new(100_000, 1_000_000);
        push(&mut q, 'f', 50_000).unwrap();
        push(&mut q, 't', 1).unwrap();
        push(&mut q, 'g', 300).unwrap();
        let batch = q.take(500);
        let got = owners(&batch);
        assert_eq!(batch.len(), 500);
        // The lone receipt is in the first batch, and the room it left is split evenly.
        assert_eq!(got[&'t'], 1);
        assert_eq!(got[&'g'], 249);
        assert_eq!(got[&'f'], 250);
        // Each owner's items keep their order.
        let floods: Vec<u32> = batch
            .iter()
            .filter(|(o, _)| *o == 'f')
            .map(|x| x.1)
            .collect();
        assert_eq!(floods, (0..250).collect::<Vec<_>>());
    }

    #[test]
    fn room_an_owner_leaves_goes_to_the_others() {
        let mut q = FairQueue::new(10_000, 1_000_000);
        push(&mut q, 'a', 2).unwrap();
        push(&mut q, 'b', 1_000).unwrap();
        let batch = q.take(500);
        assert_eq!(owners(&batch), HashMap::from([('a', 2), ('b', 498)]));
        assert_eq!(q.len(), 502);
        assert_eq!(q.take(1_000).len(), 502);
        assert!(q.is_empty());
        assert!(q.take(10).is_empty());
    }

    #[test]
    fn more_owners_than_room_are_served_in_turns_across_batches() {
        let mut q = FairQueue::new(10, 1_000_000);
        for owner in ['a', 'b', 'c', 'd'] {
            push(&mut q, owner, 2).unwrap();
        }
        let first = q.take(3);
        let second = q.take(3);
        // One each, in turn: the fourth owner is first in the next batch.
        assert_eq!(
            first.iter().map(|x| x.0).collect::<String>(),
            "abc",
            "{first:?}"
        );
        assert_eq!(second.first().map(|x| x.0), Some('d'));
    }

    #[test]
    fn shares_are_max_min_fair_and_fill_the_batch() {
        assert_eq!(shares(&[], 500), Vec::<usize>::new());
        assert_eq!(shares(&[10, 10], 500), [10, 10]);
        assert_eq!(shares(&[1_000, 1_000, 1_000], 500), [167, 167, 166]);
        assert_eq!(shares(&[1_000, 3, 1_000], 500), [249, 3, 248]);
        assert_eq!(shares(&[5, 5, 5, 5], 3), [1, 1, 1, 0]);
    }

    #[test]
    fn past_the_total_owners_are_held_to_an_equal_part_of_it() {
        let mut q = FairQueue::new(6_000, 20_000);
        for owner in ['a', 'b', 'c', 'd'] {
            push(&mut q, owner, 5_000).unwrap();
        }
        assert_eq!(q.len(), 20_000);
        // Full: an owner with little waiting gets in; one with its part waiting does not
        // (under its own bound of 6,000 as each is).
        push(&mut q, 'e', 10).unwrap();
        assert_eq!(push(&mut q, 'e', 4_000), Err(Crowded), "20,000 / 5 owners");
        assert_eq!(push(&mut q, 'a', 1), Err(Crowded));
        // Room made by a batch is room again.
        assert_eq!(q.take(500).len(), 500);
        push(&mut q, 'e', 400).unwrap();
        assert_eq!(q.len(), 19_910);
        // However many newcomers, never past twice the total.
        let mut q = FairQueue::new(6_000, 1_000);
        for owner in 0..100u32 {
            let _ = q.push(owner, 0..100);
        }
        assert!(q.len() <= 2_000, "{}", q.len());
    }

    #[test]
    fn an_owner_past_its_bound_is_refused_whole() {
        let mut q = FairQueue::new(1_000, 1_000_000);
        push(&mut q, 'f', 999).unwrap();
        assert_eq!(push(&mut q, 'f', 2), Err(Crowded));
        assert_eq!(q.len(), 999, "nothing of the refused request was queued");
        // Others are not bound by it.
        push(&mut q, 'g', 1_000).unwrap();
        push(&mut q, 'f', 1).unwrap();
        // Room made by a batch is room again.
        q.take(500);
        push(&mut q, 'f', 200).unwrap();
    }
}
