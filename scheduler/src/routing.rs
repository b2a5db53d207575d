//! Which lane a campaign's due work is claimed into: its primary provider's, or its
//! overflow provider's. Pure decisions; the tick does the claiming between them.
//!
//! A campaign is planned in its primary's lane first. Only if that lane's budget ran out with
//! the campaign's due work left over, and it was the primary's rate limit that set the budget
//! (not workers draining the lane slowly), does the rest go to the overflow's lane, after that
//! lane's own campaigns; if the primary's breaker is open, all of it does. The pace is the
//! configured rate limit, so one 429 does not send traffic to the costlier provider. Where
//! the overflow is further behind its committed volume than the primary, `commitments` swaps
//! the two first: the campaign is planned in the overflow's lane, and the primary takes the
//! rest.

use herald_store::campaigns::ActiveCampaign;
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

/// Campaigns grouped by the lane each is planned in first.
#[derive(Debug, Default)]
pub struct Routes {
    /// Per primary provider (its breaker closed), its campaigns in the order given.
    pub primaries: BTreeMap<Uuid, Vec<ActiveCampaign>>,
    /// Every lane this dispatch may publish into: primaries and overflows alike.
    pub involved: BTreeSet<Uuid>,
}

pub fn routes(campaigns: &[ActiveCampaign]) -> Routes {
    let mut routes = Routes::default();
    for campaign in campaigns {
        if !campaign.primary_open {
            routes.involved.insert(campaign.provider_id);
            routes
                .primaries
                .entry(campaign.provider_id)
                .or_default()
                .push(campaign.clone());
        }
        routes.involved.extend(campaign.overflow_provider_id);
    }
    routes
}

/// The work that goes to overflow lanes, per overflow provider, in the order it was added.
#[derive(Debug, Default)]
pub struct Spill {
    pub lanes: BTreeMap<Uuid, Vec<ActiveCampaign>>,
}

impl Spill {
    /// After a primary lane was claimed: `used` of its `budget` went out, `placed` per
    /// campaign. If the lane is saturated at its provider's pace, each of its campaigns with
    /// an overflow sends what it could not place there (a campaign planned in its overflow
    /// first does so whatever saturated the lane).
    pub fn after_primary(
        &mut self,
        lane_campaigns: &[ActiveCampaign],
        budget: u32,
        used: usize,
        at_pace: bool,
        placed: &BTreeMap<Uuid, i64>,
    ) {
        if used < budget as usize {
            return;
        }
        for campaign in lane_campaigns {
            let Some(overflow) = campaign.overflow_provider_id else {
                continue;
            };
            // A campaign planned in its overflow's lane first (a commitment) falls back to
            // its primary whatever filled the lane: the primary is its usual provider.
            if !at_pace && !campaign.overflow_first {
                continue;
            }
            // Nothing goes into a lane whose breaker is open.
            if campaign.overflow_open {
                continue;
            }
            let placed = placed.get(&campaign.id).copied().unwrap_or(0);
            if campaign.due > placed {
                let mut rest = campaign.clone();
                rest.due = campaign.due - placed;
                self.lanes.entry(overflow).or_default().push(rest);
            }
        }
    }

    /// Campaigns whose primary's breaker is open send all their due work to the overflow.
    pub fn open_primaries(&mut self, campaigns: &[ActiveCampaign]) {
        for campaign in campaigns.iter().filter(|c| c.primary_open) {
            if let Some(overflow) = campaign.overflow_provider_id {
                self.lanes
                    .entry(overflow)
                    .or_default()
                    .push(campaign.clone());
            }
        }
    }
}

/// What an overflow lane may still take after its own campaigns used `used` of `budget`.
pub fn left_in_lane(budget: u32, used: usize) -> u32 {
    budget.saturating_sub(u32::try_from(used).unwrap_or(u32::MAX))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    /// Campaign `n` of its own tenant, in `provider`'s lane, with `due` recipients.
    pub(crate) fn campaign(
        n: u128,
        provider: u128,
        overflow: Option<u128>,
        due: i64,
    ) -> ActiveCampaign {
        ActiveCampaign {
            id: id(n),
            tenant_id: id(1000 + n),
            tenant_weight: 1,
            campaign_weight: 1,
            provider_id: id(provider),
            overflow_provider_id: overflow.map(id),
            primary_open: false,
            overflow_open: false,
            overflow_first: false,
            channel: "sms".into(),
            template: "hi".into(),
            expires_at: None,
            due,
            retries: false,
            more_due: false,
            transactional: false,
            tenant_free_lines: None,
        }
    }

    #[test]
    fn campaigns_are_planned_in_their_primary_lane_and_overflows_are_involved() {
        let mut open = campaign(3, 20, Some(30), 5);
        open.primary_open = true;
        let routes = routes(&[campaign(1, 10, None, 5), campaign(2, 10, Some(30), 5), open]);
        assert_eq!(routes.primaries.len(), 1);
        let lane: Vec<Uuid> = routes.primaries[&id(10)].iter().map(|c| c.id).collect();
        assert_eq!(lane, [id(1), id(2)]);
        // The open primary is not planned, but its overflow is.
        assert_eq!(routes.involved, BTreeSet::from([id(10), id(30)]));
    }

    #[test]
    fn a_lane_at_its_pace_spills_what_its_campaigns_could_not_place() {
        let lane = [
            campaign(1, 10, Some(30), 50),
            campaign(2, 10, None, 50),
            campaign(3, 10, Some(30), 10),
        ];
        let placed = BTreeMap::from([(id(1), 20), (id(2), 20), (id(3), 10)]);
        let mut spill = Spill::default();
        spill.after_primary(&lane, 50, 50, true, &placed);
        let rest: Vec<(Uuid, i64)> = spill.lanes[&id(30)].iter().map(|c| (c.id, c.due)).collect();
        // Campaign 2 has no overflow; campaign 3 placed all it had.
        assert_eq!(rest, [(id(1), 30)]);
    }

    #[test]
    fn a_lane_with_budget_left_or_drained_slowly_spills_nothing() {
        let lane = [campaign(1, 10, Some(30), 50)];
        let placed = BTreeMap::from([(id(1), 20)]);
        let mut spill = Spill::default();
        // Budget not used up: the primary took all it was offered.
        spill.after_primary(&lane, 50, 20, true, &placed);
        // Used up, but the budget was set by slow workers, not the rate limit: a 429 or a
        // slow lane does not send traffic to the costlier provider.
        spill.after_primary(&lane, 20, 20, false, &placed);
        assert!(spill.lanes.is_empty());
        // Planned in its overflow first (a commitment): its primary takes the rest even so.
        let mut first = campaign(1, 30, Some(10), 50);
        first.overflow_first = true;
        spill.after_primary(&[first], 20, 20, false, &placed);
        assert_eq!(spill.lanes[&id(10)][0].due, 30);
        // Never into a lane whose breaker is open.
        let mut shut = campaign(1, 10, Some(40), 50);
        shut.overflow_open = true;
        spill.after_primary(&[shut], 20, 20, true, &placed);
        assert!(!spill.lanes.contains_key(&id(40)));
    }

    #[test]
    fn an_open_breaker_sends_everything_to_the_overflow_after_the_lanes_spill() {
        let mut open = campaign(2, 20, Some(30), 7);
        open.primary_open = true;
        let mut spill = Spill::default();
        spill.after_primary(
            &[campaign(1, 10, Some(30), 9)],
            4,
            4,
            true,
            &BTreeMap::from([(id(1), 4)]),
        );
        spill.open_primaries(&[campaign(3, 20, None, 5), open]);
        let rest: Vec<(Uuid, i64)> = spill.lanes[&id(30)].iter().map(|c| (c.id, c.due)).collect();
        assert_eq!(rest, [(id(1), 5), (id(2), 7)]);
    }

    #[test]
    fn an_overflow_lane_takes_only_what_its_own_campaigns_left() {
        assert_eq!(left_in_lane(100, 30), 70);
        assert_eq!(left_in_lane(100, 130), 0);
        assert_eq!(left_in_lane(0, 0), 0);
    }
}
