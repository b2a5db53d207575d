//! Which campaigns' first attempts a dispatch pass counts, and what it carries forward for
//! the others.
//!
//! Measuring the lanes counts each campaign's due recipients. With ten thousand running
//! campaigns, counting their first attempts was two thirds of the measuring query (about
//! 120 of 180 ms, BENCHMARKS.md), every pass, though between two passes a campaign's first
//! attempts mostly fall by what the scheduler itself claimed. So each tick and top-up
//! counts a slice of the campaigns (each campaign once in `every` of them; the query picks
//! the slice by a hash of the id, [`CountSlice`]; a wake counts the slice of the pass
//! before it) and carries the others' last counts forward, less what was claimed since.
//!
//! A count that reached its cap (the batch size or the budget) says only "a full batch or
//! more": it is not carried, and the campaign is taken to have a full batch until a claim
//! comes up short or a count finds fewer. So is a campaign not counted yet. A claim short
//! of its plan took every recipient due: the count is then 0 until the next count, and the
//! campaign's turn is given back ([`crate::turns`]). Claims handed back unpublished are
//! added back. What else brings first attempts back (a lost message's recipient handed
//! back by the sweeper, an audience added to a running campaign) waits for the campaign's
//! next count, at most `every` passes; what else takes them away (a cancel, an expiry)
//! makes a claim come up short. Retries are counted every pass (their index holds only
//! retries, so that costs little), and so are transactional streams (their messages must
//! not wait).

use herald_store::campaigns::{ActiveCampaign, CountSlice};
use std::collections::HashMap;
use uuid::Uuid;

#[derive(Debug)]
pub struct Recount {
    every: u32,
    passes: u64,
    /// First attempts due per campaign (up to the measuring cap), as last counted or carried.
    fresh: HashMap<Uuid, i64>,
}

impl Recount {
    /// Counts each campaign every `every` passes (1: every pass, nothing carried).
    pub fn new(every: u32) -> Self {
        Self {
            every: every.max(1),
            passes: 0,
            fresh: HashMap::new(),
        }
    }

    /// Starts a pass: which campaigns it counts. `advance`: a tick or a top-up moves on to
    /// the next slice; a wake (which sees only its lanes' campaigns) counts the same slice
    /// as the pass before, so no campaign's turn to be counted falls on a wake that does
    /// not see it.
    pub fn slice(&mut self, advance: bool) -> CountSlice {
        if advance || self.passes == 0 {
            self.passes += 1;
        }
        CountSlice {
            pass: self.passes,
            every: self.every,
        }
    }

    /// The counts carried for the campaigns a pass does not count.
    pub fn known(&self) -> &HashMap<Uuid, i64> {
        &self.fresh
    }

    /// Takes in what the pass measured. `all`: the campaigns are every dispatchable one (a
    /// tick or a top-up, not a wake's few lanes), so one left out may not send any more:
    /// its count is dropped.
    pub fn measured(&mut self, campaigns: &[ActiveCampaign], all: bool) {
        if self.every == 1 {
            return;
        }
        if all {
            let present: std::collections::HashSet<Uuid> = campaigns.iter().map(|c| c.id).collect();
            self.fresh.retain(|id, _| present.contains(id));
        }
        for campaign in campaigns.iter().filter(|c| c.counted && !c.transactional) {
            if campaign.full {
                self.fresh.remove(&campaign.id);
            } else {
                self.fresh.insert(campaign.id, campaign.fresh);
            }
        }
    }

    /// After a claim that was `planned` recipients of `campaign` and found `claimed`.
    pub fn claimed(&mut self, campaign: Uuid, planned: u32, claimed: usize) {
        if self.every == 1 {
            return;
        }
        let claimed = i64::try_from(claimed).unwrap_or(i64::MAX);
        if claimed < i64::from(planned) {
            // The claim took every recipient due: there are no first attempts left.
            self.fresh.insert(campaign, 0);
        } else if let Some(fresh) = self.fresh.get_mut(&campaign) {
            // Retries claimed are taken from it too (which they were is not known): a count
            // too low is corrected at the campaign's next count.
            *fresh = (*fresh - claimed).max(0);
        }
    }

    /// `n` recipients of `campaign` claimed this pass went back to pending unpublished.
    pub fn released(&mut self, campaign: Uuid, n: u32) {
        if let Some(fresh) = self.fresh.get_mut(&campaign) {
            *fresh += i64::from(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn campaign(n: u128, fresh: i64, counted: bool) -> ActiveCampaign {
        let mut c = crate::routing::tests::campaign(n, 10, None, fresh);
        c.fresh = fresh;
        c.counted = counted;
        c
    }

    #[test]
    fn ticks_and_top_ups_move_on_to_the_next_slice_and_wakes_do_not() {
        let mut recount = Recount::new(5);
        assert_eq!(recount.slice(false), CountSlice { pass: 1, every: 5 });
        assert_eq!(recount.slice(true), CountSlice { pass: 2, every: 5 });
        assert_eq!(recount.slice(false), CountSlice { pass: 2, every: 5 });
        assert_eq!(recount.slice(true), CountSlice { pass: 3, every: 5 });
        assert_eq!(Recount::new(0).slice(true).every, 1);
    }

    #[test]
    fn a_count_that_reached_its_cap_is_not_carried() {
        let mut big = campaign(1, 1_000, true);
        big.full = true;
        let mut recount = Recount::new(5);
        recount.measured(&[campaign(1, 30, true)], true);
        recount.measured(std::slice::from_ref(&big), true);
        // Unknown again: taken as a full batch each pass, not carried down to nothing.
        assert!(recount.known().is_empty());
        recount.claimed(big.id, 1_000, 1_000);
        assert!(recount.known().is_empty());
    }

    #[test]
    fn claims_handed_back_unpublished_are_added_back() {
        let mut recount = Recount::new(5);
        recount.measured(&[campaign(1, 30, true)], true);
        recount.claimed(Uuid::from_u128(1), 10, 10);
        recount.released(Uuid::from_u128(1), 4);
        recount.released(Uuid::from_u128(2), 4);
        assert_eq!(recount.known(), &HashMap::from([(Uuid::from_u128(1), 24)]));
    }

    #[test]
    fn a_count_is_carried_less_what_was_claimed_and_is_zero_after_a_short_claim() {
        let (a, b, c) = (
            campaign(1, 30, true),
            campaign(2, 30, true),
            campaign(3, 5, true),
        );
        let mut recount = Recount::new(5);
        recount.measured(&[a.clone(), b.clone(), c.clone()], true);
        recount.claimed(a.id, 10, 10);
        recount.claimed(b.id, 10, 4);
        recount.claimed(c.id, 5, 5);
        // A campaign not counted yet and claimed in full stays unknown.
        recount.claimed(Uuid::from_u128(4), 10, 10);
        assert_eq!(
            recount.known(),
            &HashMap::from([(a.id, 20), (b.id, 0), (c.id, 0)])
        );
    }

    #[test]
    fn an_uncounted_campaign_keeps_its_carried_count_and_one_gone_is_forgotten_by_a_full_pass() {
        let mut recount = Recount::new(5);
        recount.measured(&[campaign(1, 30, true), campaign(2, 30, true)], true);
        recount.claimed(Uuid::from_u128(1), 10, 10);
        // Not counted this pass: the store filled in the carried 20; it is kept as it is.
        recount.measured(&[campaign(1, 20, false)], false);
        assert_eq!(recount.known().len(), 2, "a wake sees only its lanes");
        recount.measured(&[campaign(1, 20, false)], true);
        assert_eq!(recount.known(), &HashMap::from([(Uuid::from_u128(1), 20)]));
    }

    #[test]
    fn transactional_streams_and_every_pass_counting_carry_nothing() {
        let mut stream = campaign(1, 30, true);
        stream.transactional = true;
        let mut recount = Recount::new(5);
        recount.measured(&[stream, campaign(2, 30, true)], true);
        assert_eq!(recount.known(), &HashMap::from([(Uuid::from_u128(2), 30)]));
        let mut every = Recount::new(1);
        every.measured(&[campaign(2, 30, true)], true);
        every.claimed(Uuid::from_u128(2), 10, 2);
        assert!(every.known().is_empty());
    }
}
