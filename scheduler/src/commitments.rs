//! Committed volumes: a provider may carry a commitment (messages per calendar month) that
//! the operator has agreed to send through it. Between a campaign's (or a message stream's)
//! primary and overflow providers, the one further behind its commitment's even pace is
//! planned first; what it cannot take this pass goes to the other. A provider on or ahead of
//! its pace, or with no commitment, counts as not behind, so with no commitments routing is
//! as before: the primary first, the overflow only for what the primary cannot take.

use herald_store::campaigns::ActiveCampaign;
use std::collections::BTreeMap;
use uuid::Uuid;

/// A provider's commitment and how far into it this month is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Commitment {
    /// Messages agreed for the month.
    pub monthly: i64,
    /// Sent through the provider so far this month.
    pub sent: i64,
    /// Share of the month gone by, 0–1.
    pub elapsed: f64,
}

impl From<herald_store::providers::CommitmentRow> for Commitment {
    fn from(row: herald_store::providers::CommitmentRow) -> Self {
        Self {
            monthly: i64::from(row.monthly_commitment),
            sent: row.sent_this_month,
            elapsed: row.month_elapsed,
        }
    }
}

impl Commitment {
    /// Share of the whole month's commitment that an even pace would have sent by now and
    /// that has not been sent; 0 when on or ahead of pace.
    pub fn shortfall(&self) -> f64 {
        if self.monthly <= 0 {
            return 0.0;
        }
        let due = self.monthly as f64 * self.elapsed.clamp(0.0, 1.0);
        ((due - self.sent as f64) / self.monthly as f64).max(0.0)
    }
}

/// Whether the overflow should be planned before the primary: it is further behind its
/// commitment than the primary is (ties keep the primary first).
pub fn prefer_overflow(primary: Option<&Commitment>, overflow: Option<&Commitment>) -> bool {
    let behind = |c: Option<&Commitment>| c.map_or(0.0, Commitment::shortfall);
    behind(overflow) > behind(primary)
}

/// Puts each campaign's overflow first where its commitment asks for it and both breakers
/// are closed: the campaign is then planned in the overflow's lane, with its primary taking
/// the rest. (With the primary's breaker open there is no choice to make: everything goes to
/// the overflow already.)
pub fn apply(campaigns: &mut [ActiveCampaign], commitments: &BTreeMap<Uuid, Commitment>) {
    if commitments.is_empty() {
        return;
    }
    for campaign in campaigns {
        let Some(overflow) = campaign.overflow_provider_id else {
            continue;
        };
        if campaign.primary_open
            || campaign.overflow_open
            || !prefer_overflow(
                commitments.get(&campaign.provider_id),
                commitments.get(&overflow),
            )
        {
            continue;
        }
        campaign.overflow_provider_id = Some(campaign.provider_id);
        campaign.provider_id = overflow;
        std::mem::swap(&mut campaign.primary_open, &mut campaign.overflow_open);
        campaign.overflow_first = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commitment(monthly: i64, sent: i64, elapsed: f64) -> Commitment {
        Commitment {
            monthly,
            sent,
            elapsed,
        }
    }

    #[test]
    fn shortfall_is_the_unsent_part_of_an_even_pace() {
        assert_eq!(commitment(1000, 200, 0.5).shortfall(), 0.3);
        assert_eq!(commitment(1000, 600, 0.5).shortfall(), 0.0);
        assert_eq!(commitment(1000, 0, 1.5).shortfall(), 1.0);
        assert_eq!(commitment(0, 0, 0.5).shortfall(), 0.0);
    }

    #[test]
    fn the_provider_further_behind_goes_first_and_ties_keep_the_primary() {
        let behind = commitment(1000, 100, 0.5);
        let on_pace = commitment(1000, 500, 0.5);
        assert!(prefer_overflow(None, Some(&behind)));
        assert!(prefer_overflow(Some(&on_pace), Some(&behind)));
        assert!(!prefer_overflow(Some(&behind), Some(&on_pace)));
        assert!(!prefer_overflow(Some(&behind), Some(&behind)));
        assert!(!prefer_overflow(None, None));
        assert!(!prefer_overflow(None, Some(&on_pace)));
        // Measured against each provider's own commitment, not in messages.
        assert!(prefer_overflow(
            Some(&commitment(1_000_000, 400_000, 0.5)),
            Some(&commitment(1000, 200, 0.5))
        ));
    }

    fn campaign(provider: u128, overflow: Option<u128>) -> ActiveCampaign {
        crate::routing::tests::campaign(1, provider, overflow, 10)
    }

    #[test]
    fn a_campaign_whose_overflow_is_behind_is_planned_there_first_unless_its_breaker_is_open() {
        let commitments = BTreeMap::from([(Uuid::from_u128(30), commitment(1000, 0, 0.5))]);
        let mut campaigns = vec![
            campaign(10, Some(30)),
            campaign(10, None),
            {
                let mut open = campaign(10, Some(30));
                open.overflow_open = true;
                open
            },
            {
                let mut open = campaign(10, Some(30));
                open.primary_open = true;
                open
            },
        ];
        apply(&mut campaigns, &commitments);
        assert_eq!(campaigns[0].provider_id, Uuid::from_u128(30));
        assert_eq!(campaigns[0].overflow_provider_id, Some(Uuid::from_u128(10)));
        assert!(campaigns[0].overflow_first);
        assert_eq!(campaigns[1].provider_id, Uuid::from_u128(10));
        assert!(!campaigns[1].overflow_first);
        assert_eq!(campaigns[2].provider_id, Uuid::from_u128(10));
        assert!(!campaigns[2].overflow_first);
        // Its primary's breaker open: left as it is, all of it goes to the overflow anyway.
        assert_eq!(campaigns[3].provider_id, Uuid::from_u128(10));
        assert!(!campaigns[3].overflow_first);
    }
}
