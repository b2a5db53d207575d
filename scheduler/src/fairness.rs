//! The fair batch plan: how a tick's budget is split ([`shares`]) and in what order it is
//! published ([`order`]); between the two, [`crate::turns`] gathers shares smaller than a
//! batch into turns.
//!
//! Fairness is first across tenants (by tenant weight), then across each tenant's campaigns
//! (by campaign weight), so a tenant with 20 campaigns does not get 20 shares. It is work-conserving: a share a
//! tenant cannot use goes to those that can (max-min fair "water filling").
//! The publish order interleaves tenants by weighted virtual time, so a tenant's first
//! message is near the front of the tick's batch: behind at most one run of each tenant
//! placed before it. Runs are one campaign's recipients, at most an AMQP message's worth
//! each (A1–20 B1–20 C1–10 A21–40 …), not one recipient at a time (A1 B1 C1 A2 …; the
//! publisher still cuts messages by count, so a message may hold the end of one run and the
//! start of the next): what a worker holds at once then belongs to a few dozen campaigns,
//! not to as many as it has recipients, so its batched lease and outcome statements touch
//! fewer campaign rows and counter deltas (with 10,000 small campaigns, a fifth as many
//! ledger rows and 13–16% less of PostgreSQL's CPU a message: BENCHMARKS.md, 2026-12-13).
//! Within a tenant's share, its transactional messages (urgent demands) go first: they take
//! from their own tenant's share, never from another tenant's (in a primary lane,
//! [`crate::turns`] hands out these shares over passes: a new stream's first message, or
//! one a stream's standing saved up, can come before its share of that one pass).

use std::collections::HashMap;
use uuid::Uuid;

/// What one running campaign could send this tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demand {
    pub campaign_id: Uuid,
    pub tenant_id: Uuid,
    pub tenant_weight: u32,
    /// Share among the same tenant's campaigns.
    pub campaign_weight: u32,
    /// Due recipients, already capped at the campaign's batch size.
    pub due: u32,
    /// Transactional messages: served before the same tenant's campaigns.
    pub urgent: bool,
}

/// Tenants in first-seen order (shifted by `rotation`), each with its weight and the indices
/// of its demands.
fn tenants(demands: &[Demand], rotation: usize) -> Vec<(Uuid, u64, Vec<usize>)> {
    let mut tenants: Vec<(Uuid, u64, Vec<usize>)> = Vec::new();
    // A lookup, not a scan of the tenants so far: a thousand tenants' ten thousand
    // campaigns would cost millions of comparisons a plan.
    let mut position: HashMap<Uuid, usize> = HashMap::new();
    for (index, d) in demands.iter().enumerate() {
        let at = *position.entry(d.tenant_id).or_insert_with(|| {
            tenants.push((d.tenant_id, u64::from(d.tenant_weight.max(1)), Vec::new()));
            tenants.len() - 1
        });
        tenants[at].2.push(index);
    }
    if !tenants.is_empty() {
        let shift = rotation % tenants.len();
        tenants.rotate_left(shift);
    }
    tenants
}

/// A tenant's demands (`indices` into `demands`) in two groups: the urgent, then the rest.
fn urgent_first(demands: &[Demand], indices: &[usize]) -> [Vec<usize>; 2] {
    let (urgent, rest) = indices.iter().partition(|&&i| demands[i].urgent);
    [urgent, rest]
}

/// The parts a recipient is cut into by [`exact_shares`]: fine enough that a million
/// campaigns over a pass of one recipient each earn something.
pub const PARTS: u64 = 1_000_000;

/// Each demand's fair share of `budget`, indexed like the demands: water-filled across
/// tenants by weight, then within each tenant to its urgent demands first and its campaigns
/// (by weight) after. Shares are whole recipients: the units left after an even split go to
/// the first in `rotation`'s order, so with more demands than `budget` most get nothing in
/// a pass; [`crate::turns`] keeps the fair split's fractions across passes from
/// [`exact_shares`].
pub fn shares(demands: &[Demand], budget: u32, rotation: usize) -> Vec<u32> {
    split(demands, u64::from(budget), 1, rotation)
        .into_iter()
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        .collect()
}

/// The split of [`shares`] in millionths of a recipient ([`PARTS`]): a thousand tenants
/// over a pass of 200 earn a fifth of a recipient each, where whole recipients give 800 of
/// them nothing.
pub fn exact_shares(demands: &[Demand], budget: u32, rotation: usize) -> Vec<u64> {
    split(demands, u64::from(budget), PARTS, rotation)
}

/// [`shares`] in `parts` of a recipient. No demand can take more than the whole budget,
/// so a demand, and a tenant's sum of them, is capped at it (the split is the same): a
/// thousand campaigns of a tenant, each due billions, would otherwise add up past `u64`.
fn split(demands: &[Demand], budget: u64, parts: u64, rotation: usize) -> Vec<u64> {
    let whole = budget * parts;
    let due = |i: usize| u64::from(demands[i].due).min(budget) * parts;
    let tenants = tenants(demands, rotation);
    let tenant_demand: Vec<u64> = tenants
        .iter()
        .map(|(_, _, cs)| {
            cs.iter()
                .fold(0u64, |sum, &i| sum.saturating_add(due(i)))
                .min(whole)
        })
        .collect();
    let tenant_weight: Vec<u64> = tenants.iter().map(|(_, w, _)| *w).collect();
    let tenant_share = water_fill(&tenant_demand, &tenant_weight, whole);

    let mut counts = vec![0u64; demands.len()];
    for ((_, _, campaigns), share) in tenants.iter().zip(&tenant_share) {
        // The urgent first, with the whole share; the campaigns split what they leave.
        let mut left = *share;
        for mut group in urgent_first(demands, campaigns) {
            // The units left over after an even split go to the earlier campaigns: shifted
            // each tick, so with shares below one recipient (a tenant's 8 over its 10
            // campaigns) the same campaigns are not always the ones that earn nothing.
            if !group.is_empty() {
                let shift = rotation % group.len();
                group.rotate_left(shift);
            }
            let group_due: Vec<u64> = group.iter().map(|&i| due(i)).collect();
            let weights: Vec<u64> = group
                .iter()
                .map(|&i| u64::from(demands[i].campaign_weight.max(1)))
                .collect();
            let split = water_fill(&group_due, &weights, left);
            for (&i, &n) in group.iter().zip(&split) {
                counts[i] = n;
                left -= n;
            }
        }
    }
    counts
}

/// The publish order of `counts` (indexed like the demands): within a tenant its urgent
/// demands' messages first, then its campaigns' round-robin; tenants interleaved by weighted
/// virtual time. A campaign's recipients come in runs of up to `run` (its turn in the
/// round-robin), and a run's place in the interleaving is that of its first recipient.
pub fn order(demands: &[Demand], counts: &[u32], rotation: usize, run: u32) -> Vec<usize> {
    let tenants = tenants(demands, rotation);
    let weights: Vec<u64> = tenants.iter().map(|(_, w, _)| *w).collect();
    let sequences: Vec<Vec<Run>> = tenants
        .iter()
        .map(|(_, _, campaigns)| {
            let mut sequence = Vec::new();
            for group in urgent_first(demands, campaigns) {
                let split: Vec<u64> = group.iter().map(|&i| u64::from(counts[i])).collect();
                sequence.extend(round_robin(&group, &split, u64::from(run.max(1))));
            }
            sequence
        })
        .collect();
    interleave(&sequences, &weights)
}

/// Weighted max-min fair split of `budget` among `demands`: nobody gets more than it asks,
/// and what one cannot use is shared among the rest in proportion to their weights.
/// Every unit is handed out while any demand is unmet.
pub fn water_fill(demands: &[u64], weights: &[u64], budget: u64) -> Vec<u64> {
    let mut alloc = vec![0u64; demands.len()];
    let mut remaining = budget;
    let mut open: Vec<usize> = (0..demands.len()).filter(|&i| demands[i] > 0).collect();
    while remaining > 0 && !open.is_empty() {
        let total_weight: u64 = open.iter().map(|&i| weights[i].max(1)).sum();
        // Anyone whose whole remaining need fits in its fair share is satisfied outright,
        // and the round starts again with the rest.
        let satisfied: Vec<usize> = open
            .iter()
            .copied()
            .filter(|&i| {
                let need = demands[i] - alloc[i];
                u128::from(need) * u128::from(total_weight)
                    <= u128::from(remaining) * u128::from(weights[i].max(1))
            })
            .collect();
        if !satisfied.is_empty() {
            for &i in &satisfied {
                remaining -= demands[i] - alloc[i];
                alloc[i] = demands[i];
            }
            // Those satisfied now have all they asked; a scan of `satisfied` for each
            // would be quadratic with thousands of small demands.
            open.retain(|&i| alloc[i] < demands[i]);
            continue;
        }
        // Everyone wants more than its share: hand out the shares, then the remainder one
        // unit at a time, largest weight first (ties: earlier first).
        let mut handed = 0;
        for &i in &open {
            let share = u64::try_from(
                u128::from(remaining) * u128::from(weights[i].max(1)) / u128::from(total_weight),
            )
            .unwrap_or(0);
            alloc[i] += share;
            handed += share;
        }
        let mut leftover = remaining - handed;
        let mut by_weight = open.clone();
        by_weight.sort_by_key(|&i| std::cmp::Reverse(weights[i]));
        for &i in by_weight.iter().cycle() {
            if leftover == 0 {
                break;
            }
            if alloc[i] < demands[i] {
                alloc[i] += 1;
                leftover -= 1;
            }
        }
        remaining = 0;
    }
    alloc
}

/// Consecutive recipients of one campaign in the publish order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    campaign: usize,
    len: u64,
}

/// `campaigns[k]` repeated `counts[k]` times, taking turns in runs of at most `run`: with
/// runs of 2, c1 c1 c2 c2 c3 c1 c1 c2 …
fn round_robin(campaigns: &[usize], counts: &[u64], run: u64) -> Vec<Run> {
    let mut left = counts.to_vec();
    let mut out = Vec::new();
    while left.iter().any(|&n| n > 0) {
        for (k, &campaign) in campaigns.iter().enumerate() {
            let len = left[k].min(run);
            if len > 0 {
                left[k] -= len;
                out.push(Run { campaign, len });
            }
        }
    }
    out
}

/// Merges the tenants' runs by weighted virtual time: a run whose first recipient is a
/// tenant's k-th goes at time (k+1)/w for a tenant of weight w, ties in tenant order.
fn interleave(sequences: &[Vec<Run>], weights: &[u64]) -> Vec<usize> {
    let mut slots: Vec<(f64, usize, Run)> = Vec::new();
    for (t, seq) in sequences.iter().enumerate() {
        let w = weights[t].max(1) as f64;
        let mut before = 0u64;
        for &run in seq {
            slots.push(((before as f64 + 1.0) / w, t, run));
            before += run.len;
        }
    }
    slots.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    slots
        .into_iter()
        .flat_map(|(_, _, run)| std::iter::repeat_n(run.campaign, run.len as usize))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tick's plan without turns: the fair shares and their publish order.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    struct Plan {
        counts: Vec<u32>,
        order: Vec<usize>,
    }

    /// `rotation` shifts which tenant goes first among equals; a campaign's recipients come
    /// one at a time (runs of one).
    fn plan(demands: &[Demand], budget: u32, rotation: usize) -> Plan {
        let counts = shares(demands, budget, rotation);
        let order = order(demands, &counts, rotation, 1);
        Plan { counts, order }
    }

    fn demand(campaign: u128, tenant: u128, weight: u32, due: u32) -> Demand {
        Demand {
            campaign_id: Uuid::from_u128(campaign),
            tenant_id: Uuid::from_u128(tenant),
            tenant_weight: weight,
            campaign_weight: 1,
            due,
            urgent: false,
        }
    }

    #[test]
    fn water_fill_is_max_min_fair_and_work_conserving() {
        assert_eq!(water_fill(&[100, 100], &[1, 1], 100), vec![50, 50]);
        assert_eq!(water_fill(&[10, 100], &[1, 1], 100), vec![10, 90]);
        assert_eq!(water_fill(&[100, 100], &[1, 2], 90), vec![30, 60]);
        assert_eq!(water_fill(&[5, 5], &[1, 1], 100), vec![5, 5]);
        assert_eq!(water_fill(&[0, 7], &[1, 1], 100), vec![0, 7]);
        assert_eq!(water_fill(&[], &[], 100), Vec::<u64>::new());
    }

    #[test]
    fn water_fill_hands_out_every_unit_of_an_odd_budget() {
        let split = water_fill(&[100, 100, 100], &[1, 1, 1], 100);
        assert_eq!(split.iter().sum::<u64>(), 100);
        assert!(split.iter().all(|&n| n == 33 || n == 34));
    }

    #[test]
    fn exact_shares_keep_the_fractions_whole_recipients_round_away() {
        // A thousand tenants over 200: whole recipients give 200 of them one and the rest
        // nothing; exact shares give each its fifth.
        let demands: Vec<Demand> = (0..1_000).map(|i| demand(i, i, 1, 1_000)).collect();
        let whole = shares(&demands, 200, 0);
        assert_eq!(whole.iter().filter(|&&n| n == 0).count(), 800);
        let exact = exact_shares(&demands, 200, 0);
        assert!(exact.iter().all(|&n| n == PARTS / 5), "{:?}", &exact[..5]);
        // Nested by weight: tenant 2 (weight 2) gets two thirds of 1, split over its three
        // campaigns; the sum is the budget, to the part.
        let mut demands = vec![demand(1, 1, 1, 1_000)];
        demands.extend((2..5).map(|c| demand(c, 2, 2, 1_000)));
        let exact = exact_shares(&demands, 1, 0);
        assert_eq!(exact.iter().sum::<u64>(), PARTS);
        assert!(exact[0].abs_diff(PARTS / 3) <= 1);
        assert!(exact[1..].iter().all(|&n| n.abs_diff(2 * PARTS / 9) <= 1));
        // One tenant's many dues, each far past the budget, do not overflow its sum.
        let demands: Vec<Demand> = (0..10_000).map(|i| demand(i, 1, 1, u32::MAX)).collect();
        let exact = exact_shares(&demands, u32::MAX, 0);
        assert_eq!(exact.iter().sum::<u64>(), u64::from(u32::MAX) * PARTS);
    }

    #[test]
    fn tenants_share_first_then_their_campaigns() {
        // Tenant 1 has three campaigns, tenant 2 has one: tenant 2 still gets half.
        let demands = [
            demand(1, 1, 1, 1000),
            demand(2, 1, 1, 1000),
            demand(3, 1, 1, 1000),
            demand(4, 2, 1, 1000),
        ];
        let plan = plan(&demands, 600, 0);
        assert_eq!(plan.counts[3], 300);
        assert_eq!(plan.counts[..3].iter().sum::<u32>(), 300);
        assert_eq!(&plan.counts[..3], &[100, 100, 100]);
        assert_eq!(plan.order.len(), 600);
    }

    #[test]
    fn weights_scale_the_share() {
        let demands = [demand(1, 1, 1, 1000), demand(2, 2, 2, 1000)];
        assert_eq!(plan(&demands, 300, 0).counts, vec![100, 200]);
    }

    #[test]
    fn a_small_newcomer_is_served_in_full_and_near_the_front() {
        let demands = [demand(1, 1, 1, 5000), demand(2, 2, 1, 10)];
        let plan = plan(&demands, 1000, 0);
        assert_eq!(plan.counts, vec![990, 10]);
        let first_b = plan.order.iter().position(|&i| i == 1).unwrap();
        assert!(
            first_b <= 1,
            "newcomer's first message at position {first_b}"
        );
    }

    #[test]
    fn order_interleaves_tenants_and_campaigns() {
        let demands = [demand(1, 1, 1, 3), demand(2, 2, 1, 3), demand(3, 3, 1, 3)];
        assert_eq!(plan(&demands, 9, 0).order, vec![0, 1, 2, 0, 1, 2, 0, 1, 2]);
        // Two campaigns of one tenant alternate within that tenant's slots.
        let demands = [demand(1, 1, 1, 2), demand(2, 1, 1, 2), demand(3, 2, 1, 4)];
        assert_eq!(plan(&demands, 8, 0).order, vec![0, 2, 1, 2, 0, 2, 1, 2]);
        // Weight 2 gets two slots per round.
        let demands = [demand(1, 1, 1, 2), demand(2, 2, 2, 4)];
        assert_eq!(plan(&demands, 6, 0).order, vec![1, 0, 1, 1, 0, 1]);
    }

    #[test]
    fn runs_keep_a_campaigns_recipients_together_and_tenants_still_alternate() {
        let demands = [demand(1, 1, 1, 5), demand(2, 2, 1, 5), demand(3, 3, 1, 2)];
        let counts = shares(&demands, 12, 0);
        assert_eq!(
            order(&demands, &counts, 0, 2),
            vec![0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 0, 1]
        );
        // Two campaigns of one tenant take turns in runs; runs are placed by the recipients
        // before them, so the tenant of weight 2 has two runs of 3 for each of the other's.
        let demands = [demand(1, 1, 1, 3), demand(2, 1, 1, 3), demand(3, 2, 2, 10)];
        let counts = [3, 3, 10];
        assert_eq!(
            order(&demands, &counts, 0, 3),
            vec![2, 2, 2, 0, 0, 0, 2, 2, 2, 2, 2, 2, 1, 1, 1, 2]
        );
        // However long the runs (0 taken as 1), every planned recipient is placed once.
        for run in [0, 1, 2, 7, 20, 1000] {
            let mut placed = order(&demands, &counts, 1, run);
            placed.sort_unstable();
            let expected: Vec<usize> = [vec![0; 3], vec![1; 3], vec![2; 10]].concat();
            assert_eq!(placed, expected, "runs of {run}");
        }
    }

    #[test]
    fn a_run_is_placed_by_the_recipients_before_it_not_by_the_runs() {
        // Tenant 1 has one campaign of 6, tenant 2 three campaigns of 1: tenant 2's three
        // runs of one go between tenant 1's two runs of three (by run count, only one would).
        let demands = [
            demand(1, 1, 1, 6),
            demand(2, 2, 1, 1),
            demand(3, 2, 1, 1),
            demand(4, 2, 1, 1),
        ];
        assert_eq!(
            order(&demands, &[6, 1, 1, 1], 0, 3),
            vec![0, 0, 0, 1, 2, 3, 0, 0, 0]
        );
    }

    #[test]
    fn transactional_messages_still_go_first_within_their_tenant_in_runs() {
        let mut messages = demand(1, 1, 1, 3);
        messages.urgent = true;
        let demands = [messages, demand(2, 1, 1, 4), demand(3, 2, 1, 5)];
        let order = order(&demands, &[3, 4, 5], 0, 2);
        assert_eq!(order, vec![0, 0, 2, 2, 0, 2, 2, 1, 1, 2, 1, 1]);
        let tenant_one: Vec<usize> = order.iter().copied().filter(|&i| i != 2).collect();
        assert_eq!(tenant_one, vec![0, 0, 0, 1, 1, 1, 1]);
    }

    #[test]
    fn a_small_newcomer_waits_behind_one_run_of_each_tenant_before_it() {
        let demands = [
            demand(1, 1, 1, 5000),
            demand(2, 2, 1, 5000),
            demand(3, 3, 1, 10),
        ];
        let counts = shares(&demands, 1000, 0);
        assert_eq!(counts, vec![495, 495, 10]);
        let order = order(&demands, &counts, 0, 20);
        let first = order.iter().position(|&i| i == 2).unwrap();
        assert_eq!(first, 40, "newcomer's first message at position {first}");
        assert!(order[40..50].iter().all(|&i| i == 2));
    }

    #[test]
    fn rotation_changes_who_goes_first_among_equals() {
        let demands = [demand(1, 1, 1, 2), demand(2, 2, 1, 2)];
        assert_eq!(plan(&demands, 4, 0).order[0], 0);
        assert_eq!(plan(&demands, 4, 1).order[0], 1);
    }

    #[test]
    fn nothing_is_planned_without_budget_or_demand() {
        let demands = [demand(1, 1, 1, 10)];
        assert_eq!(plan(&demands, 0, 0).order, Vec::<usize>::new());
        assert_eq!(plan(&[], 100, 0), Plan::default());
    }

    #[test]
    fn campaign_weights_split_only_their_tenants_share() {
        let mut heavy = demand(1, 1, 1, 1000);
        heavy.campaign_weight = 3;
        let demands = [heavy, demand(2, 1, 1, 1000), demand(3, 2, 1, 1000)];
        let plan = plan(&demands, 800, 0);
        // Tenant 2 keeps half; tenant 1's half is split 3:1 between its campaigns.
        assert_eq!(plan.counts, vec![300, 100, 400]);
    }

    #[test]
    fn transactional_messages_go_first_within_their_tenants_share_only() {
        let mut messages = demand(1, 1, 1, 1000);
        messages.urgent = true;
        let demands = [demand(2, 1, 1, 1000), messages, demand(3, 2, 1, 1000)];
        let burst = plan(&demands, 800, 0);
        // Tenant 1's burst takes all of tenant 1's half, and nothing of tenant 2's.
        assert_eq!(burst.counts, vec![0, 400, 400]);
        // A few messages: served in full and first; the campaign gets the rest of the share.
        let mut few = demand(1, 1, 1, 30);
        few.urgent = true;
        let demands = [demand(2, 1, 1, 1000), few, demand(3, 2, 1, 1000)];
        let served = plan(&demands, 800, 0);
        assert_eq!(served.counts, vec![370, 30, 400]);
        let tenant_one: Vec<usize> = served.order.iter().copied().filter(|&i| i != 2).collect();
        assert!(tenant_one[..30].iter().all(|&i| i == 1));
    }
}
