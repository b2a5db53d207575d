//! A tenant's cap on live calls, shared among its voice campaigns.
//!
//! The measure ([`herald_store::campaigns::dispatchable`]) cuts each voice campaign's due
//! count to its tenant's free lines, but each campaign's alone: fifty voice campaigns of a
//! tenant with ten free lines were planned up to 500 calls a pass, and the workers held all
//! but ten back for want of a line, lease after lease. Here the tenant's free lines are
//! split among its voice campaigns: its transactional streams first, then its campaigns, a
//! line each in an order that moves with the pass (so with fewer lines than campaigns the
//! same ones are not always without), then the rest by weight, max-min. What is measured
//! lasts until the next full measure. A wake measures only its lanes' campaigns, so it
//! shares the tenant's lines among those alone, and calls claimed but not yet placed hold
//! no line yet: either can plan a few calls more than there are lines, which a worker then
//! holds back, as before.

use crate::fairness::water_fill;
use herald_store::campaigns::ActiveCampaign;
use std::collections::BTreeMap;
use uuid::Uuid;

/// Shares each capped tenant's free lines among its voice campaigns in `campaigns` (those
/// with `tenant_free_lines`), cutting their due counts to their parts; a campaign left with
/// nothing due is dropped. None of them is a whole batch any more (`more_due`): lines, not
/// batch sizes, hold them back, and what was measured must last until the next measure
/// (a whole batch is planned again at every top-up). `rotation` moves the odd lines round
/// from pass to pass.
pub fn share(campaigns: &mut Vec<ActiveCampaign>, rotation: usize) {
    let mut tenants: BTreeMap<Uuid, (i64, Vec<usize>)> = BTreeMap::new();
    for (i, c) in campaigns.iter().enumerate() {
        if let Some(free) = c.tenant_free_lines {
            let (lines, members) = tenants.entry(c.tenant_id).or_insert((free, Vec::new()));
            // Read in one statement, so the same for all; the least if ever not.
            *lines = (*lines).min(free);
            members.push(i);
        }
    }
    let mut cut = false;
    for (lines, members) in tenants.into_values() {
        let mut left = u64::try_from(lines).unwrap_or(0);
        let (urgent, rest): (Vec<usize>, Vec<usize>) = members
            .into_iter()
            .partition(|&i| campaigns[i].transactional);
        for mut group in [urgent, rest] {
            if group.is_empty() {
                continue;
            }
            let shift = rotation % group.len();
            group.rotate_left(shift);
            let due: Vec<u64> = group
                .iter()
                .map(|&i| u64::try_from(campaigns[i].due).unwrap_or(0))
                .collect();
            let weights: Vec<u64> = group
                .iter()
                .map(|&i| {
                    u64::try_from(campaigns[i].campaign_weight)
                        .unwrap_or(1)
                        .max(1)
                })
                .collect();
            let split = split_lines(&due, &weights, left);
            for (&i, (&n, &asked)) in group.iter().zip(split.iter().zip(&due)) {
                left -= n;
                let c = &mut campaigns[i];
                c.more_due = false;
                if n < asked {
                    c.due = i64::try_from(n).unwrap_or(i64::MAX);
                    cut = true;
                }
            }
        }
    }
    if cut {
        campaigns.retain(|c| c.due > 0);
    }
}

/// `lines` over campaigns due `due` (in the pass's order) of weights `weights`: a line each
/// first, in order (so with fewer lines than campaigns they go round with the order, and a
/// light campaign is not always the one without: weighted, the odd lines would go to the
/// heaviest every pass), then what is left by weight, max-min.
fn split_lines(due: &[u64], weights: &[u64], lines: u64) -> Vec<u64> {
    let mut left = lines;
    let mut split: Vec<u64> = due
        .iter()
        .map(|&d| {
            let one = d.min(1).min(left);
            left -= one;
            one
        })
        .collect();
    let rest: Vec<u64> = due.iter().zip(&split).map(|(&d, &s)| d - s).collect();
    for (s, more) in split.iter_mut().zip(water_fill(&rest, weights, left)) {
        *s += more;
    }
    split
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A voice campaign `n` of `tenant`, `due` calls, its tenant with `free` lines.
    fn call(n: u128, tenant: u128, due: i64, free: Option<i64>) -> ActiveCampaign {
        ActiveCampaign {
            tenant_id: Uuid::from_u128(tenant),
            channel: "voice".into(),
            more_due: true,
            tenant_free_lines: free,
            ..crate::routing::tests::campaign(n, 7, None, due)
        }
    }

    fn dues(campaigns: &[ActiveCampaign]) -> Vec<(u128, i64)> {
        campaigns.iter().map(|c| (c.id.as_u128(), c.due)).collect()
    }

    #[test]
    fn a_tenants_free_lines_are_shared_among_its_voice_campaigns() {
        // Fifty campaigns, each cut to the tenant's ten free lines by the measure: ten
        // calls in all, one each for ten of them; the others wait.
        let mut campaigns: Vec<ActiveCampaign> =
            (0..50).map(|n| call(n, 1, 10, Some(10))).collect();
        share(&mut campaigns, 0);
        assert_eq!(campaigns.iter().map(|c| c.due).sum::<i64>(), 10);
        assert!(campaigns.iter().all(|c| c.due == 1 && !c.more_due));
        // The next pass, other campaigns get the lines.
        let mut next: Vec<ActiveCampaign> = (0..50).map(|n| call(n, 1, 10, Some(10))).collect();
        share(&mut next, 1);
        assert_ne!(dues(&campaigns), dues(&next));
    }

    #[test]
    fn lines_are_split_max_min_and_by_weight() {
        let mut heavy = call(2, 1, 10, Some(9));
        heavy.campaign_weight = 2;
        let mut campaigns = vec![call(1, 1, 2, Some(9)), heavy, call(3, 1, 10, Some(9))];
        share(&mut campaigns, 0);
        // A line each, then the small one has its 2 and the other 5 go 2:1 (3 and 2
        // more, the odd one by weight).
        assert_eq!(dues(&campaigns), vec![(1, 2), (2, 5), (3, 2)]);
        // None of them is a whole batch: lines hold them back.
        assert!(campaigns.iter().all(|c| !c.more_due));
    }

    #[test]
    fn a_light_campaign_gets_its_turn_at_the_lines() {
        // Two lines over weights 2, 2 and 1: by weight alone the odd lines always went to
        // the heavy two. A line each, in the pass's order, goes round.
        let mut served = [0; 3];
        for pass in 0..6 {
            let mut campaigns: Vec<ActiveCampaign> = (1..=3)
                .map(|n| {
                    let mut c = call(n, 1, 5, Some(2));
                    c.campaign_weight = if n == 3 { 1 } else { 2 };
                    c
                })
                .collect();
            share(&mut campaigns, pass);
            for c in &campaigns {
                served[c.id.as_u128() as usize - 1] += c.due;
            }
        }
        assert_eq!(served, [4, 4, 4]);
    }

    #[test]
    fn transactional_calls_go_first() {
        let mut stream = call(1, 1, 3, Some(4));
        stream.transactional = true;
        let mut campaigns = vec![call(2, 1, 4, Some(4)), stream, call(3, 1, 4, Some(4))];
        share(&mut campaigns, 0);
        assert_eq!(dues(&campaigns), vec![(2, 1), (1, 3)]);
    }

    #[test]
    fn other_tenants_and_uncapped_campaigns_are_left_alone() {
        let sms = crate::routing::tests::campaign(9, 7, None, 100);
        let mut campaigns = vec![
            call(1, 1, 3, Some(3)),
            call(2, 2, 3, Some(3)),
            call(3, 3, 50, None),
            sms.clone(),
        ];
        share(&mut campaigns, 0);
        assert_eq!(dues(&campaigns), vec![(1, 3), (2, 3), (3, 50), (9, 100)]);
        // A campaign left no line is not planned at all.
        let mut one = vec![call(1, 1, 1, Some(1)), sms, call(2, 1, 1, Some(1))];
        share(&mut one, 0);
        assert_eq!(dues(&one), vec![(1, 1), (9, 100)]);
    }
}
