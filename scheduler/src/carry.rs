//! What a top-up plans from: the campaigns the last full measure found due, less what the
//! passes since have claimed of them, instead of measuring every running campaign again.
//!
//! Measuring is per campaign (a due count or bound each, `store::campaigns::dispatchable`),
//! while a top-up refills one dry lane with a few hundred campaigns' worth: with 10,000
//! running campaigns a top-up's measure took 34–66 ms, and 3–11 ms planned from what is
//! carried (BENCHMARKS.md, 2026-12-14). Between two ticks (a tick measures again) nothing a
//! top-up needs changes unseen except in ways that are safe to see late:
//!
//! - a campaign's first attempts are bounded from its row, and only this scheduler's claims
//!   move its cursor forward, so the due count less what was claimed is the measure's own
//!   answer (a claim that finds fewer than it asked for has read all there are: nothing is
//!   left until the next tick);
//! - retries that come due, and cursors the sweeper rewinds, wait for the next tick;
//! - a campaign started, resumed, paused or cancelled, a stream given a transactional
//!   message or resumed by new credentials: each wakes the scheduler, and a wake drops what
//!   is carried (the next top-up measures again);
//! - a campaign that expires, enters its quiet hours or is paused by its provider's refusal
//!   wakes nothing: until the next tick, what top-ups claim for it is held at its lease as
//!   ever (`herald_may_send`: parked, its cursor moved back, or ended `expired`), never
//!   sent;
//! - a voice campaign's due count is cut to its part of its tenant's free lines when
//!   measured ([`crate::tenant_lines`]); lines taken meanwhile make a worker defer the
//!   calls beyond them, as within any pass;
//! - a circuit breaker that opens or closes changes which lanes a campaign's work goes to:
//!   the set of open breakers is read at every top-up (one row per open breaker), and a
//!   change means a full measure.

use herald_store::campaigns::ActiveCampaign;
use std::collections::BTreeMap;
use uuid::Uuid;

/// The campaigns of the last full measure, as the measure returned them (before any
/// commitment is applied: each pass applies its own).
#[derive(Debug, Clone)]
pub struct Carried {
    campaigns: Vec<ActiveCampaign>,
    /// The providers whose breaker was open when they were measured, sorted.
    open_breakers: Vec<Uuid>,
}

/// The providers whose breaker is open, as a set to compare: from what
/// `herald_store::pacing::open_breakers` reads.
pub fn open_breakers(rows: impl IntoIterator<Item = (Uuid, f64)>) -> Vec<Uuid> {
    let mut open: Vec<Uuid> = rows.into_iter().map(|(provider, _)| provider).collect();
    open.sort_unstable();
    open.dedup();
    open
}

/// Per campaign, what one pass's claims asked for and found, over all its lanes.
#[derive(Debug, Default, Clone)]
pub struct Claims(BTreeMap<Uuid, (u64, u64)>);

impl Claims {
    pub fn add(&mut self, campaign: Uuid, asked: u64, found: u64) {
        let entry = self.0.entry(campaign).or_default();
        entry.0 += asked;
        entry.1 += found;
    }
}

impl Carried {
    /// `open_breakers` as read before the measure ([`open_breakers`]).
    pub fn new(campaigns: Vec<ActiveCampaign>, open_breakers: Vec<Uuid>) -> Self {
        Self {
            campaigns,
            open_breakers,
        }
    }

    /// Whether the breakers open now (sorted, as [`open_breakers`] gives them) are those the
    /// campaigns were measured with: if not, a campaign's work may belong in another lane.
    pub fn fits(&self, open_breakers: &[Uuid]) -> bool {
        open_breakers == self.open_breakers
    }

    pub fn campaigns(&self) -> &[ActiveCampaign] {
        &self.campaigns
    }

    /// After a pass whose claims all went out: each campaign's due count less what was
    /// claimed of it, and none left for one whose claims found fewer than they asked for.
    /// Campaigns left with nothing due are dropped (their lanes are then not hungry).
    pub fn after(&mut self, claims: &Claims) {
        for campaign in &mut self.campaigns {
            if let Some(&(asked, found)) = claims.0.get(&campaign.id) {
                campaign.due = due_after(campaign.due, campaign.more_due, asked, found);
                campaign.more_due &= campaign.due > 0;
            }
        }
        self.campaigns.retain(|campaign| campaign.due > 0);
    }
}

/// A campaign's due count after claims that asked for `asked` of it and found `found`.
/// A count that was a whole batch (`more_due`: the campaign has more than one pass gives)
/// stays one; otherwise what was found is taken off. A claim finding fewer than it asked
/// for read all there were.
pub fn due_after(due: i64, more_due: bool, asked: u64, found: u64) -> i64 {
    if found < asked {
        return 0;
    }
    if more_due {
        return due;
    }
    (due - i64::try_from(found).unwrap_or(i64::MAX)).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn campaign(id: u128, due: i64, more_due: bool) -> ActiveCampaign {
        ActiveCampaign {
            more_due,
            ..crate::routing::tests::campaign(id, 7, None, due)
        }
    }

    #[test]
    fn what_was_claimed_is_taken_off_a_campaigns_due_count() {
        assert_eq!(due_after(20, false, 10, 10), 10);
        assert_eq!(due_after(20, false, 20, 20), 0);
        // Not asked for at all this pass (its turn had not come): unchanged.
        assert_eq!(due_after(20, false, 0, 0), 20);
    }

    #[test]
    fn a_claim_that_found_fewer_than_it_asked_for_leaves_nothing_due() {
        assert_eq!(due_after(20, false, 10, 4), 0);
        assert_eq!(due_after(1000, true, 1000, 999), 0);
    }

    #[test]
    fn a_whole_batch_stays_a_whole_batch_while_claims_find_all_they_ask_for() {
        assert_eq!(due_after(1000, true, 1000, 1000), 1000);
        assert_eq!(due_after(1000, true, 300, 300), 1000);
    }

    #[test]
    fn campaigns_with_nothing_left_are_dropped_and_the_rest_carried() {
        let mut carried = Carried::new(
            vec![
                campaign(1, 20, false),
                campaign(2, 20, false),
                campaign(3, 1000, true),
                campaign(4, 1000, true),
                campaign(5, 20, false),
            ],
            vec![],
        );
        let mut claims = Claims::default();
        claims.add(Uuid::from_u128(1), 10, 10);
        claims.add(Uuid::from_u128(2), 10, 3);
        claims.add(Uuid::from_u128(3), 1000, 1000);
        // Campaign 4 in its primary lane and what spilled into its overflow, found short
        // in the second.
        claims.add(Uuid::from_u128(4), 600, 600);
        claims.add(Uuid::from_u128(4), 400, 100);
        carried.after(&claims);
        let left: Vec<(u128, i64, bool)> = carried
            .campaigns()
            .iter()
            .map(|c| (c.id.as_u128(), c.due, c.more_due))
            .collect();
        assert_eq!(left, vec![(1, 10, false), (3, 1000, true), (5, 20, false)]);
    }

    #[test]
    fn a_change_of_open_breakers_asks_for_a_new_measure() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let open = |ids: &[Uuid]| open_breakers(ids.iter().map(|&id| (id, 5.0)));
        let carried = Carried::new(vec![campaign(1, 20, false)], open(&[b, a]));
        assert!(carried.fits(&open(&[a, b])));
        assert!(carried.fits(&open(&[b, a, b])));
        assert!(!carried.fits(&open(&[a])));
        assert!(!carried.fits(&open(&[])));
        assert!(!carried.fits(&open(&[a, b, Uuid::from_u128(3)])));
    }
}
