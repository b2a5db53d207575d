//! Turns: when a lane's fair share per campaign is smaller than a useful batch, campaigns
//! take turns at full batches instead of each claiming a crumb every pass.
//!
//! Each campaign claimed costs the claim an index probe, row locks and counter rows,
//! whatever it takes: with ten thousand running campaigns and a budget of eight thousand,
//! every pass claimed about one recipient from each, and that overhead was most of the
//! tick. So each campaign keeps a standing, per lane: the fair shares it has been given
//! minus what it was served, kept in millionths of a recipient
//! ([`crate::fairness::exact_shares`]). Whole-recipient shares would not do: with more
//! campaigns than a pass has recipients (a thousand tenants over 200) they give the units
//! to a block of campaigns that moves one place a pass, and a campaign outside it earned
//! nothing for up to 800 passes; with the fractions, each earns its fifth every pass, and
//! every campaign is served within the 50 passes that a batch each takes. A pass hands
//! its budget out in order of standing, largest first, in batches of at least the minimum
//! (or all the campaign has due); a campaign whose turn has not come keeps what it earned.
//! Whatever is left of the budget then goes to whoever has more due, in the same order, so
//! a pass plans its whole budget while work is due. In the unit tests' sets of
//! campaigns (steady, or with budgets that change every pass), no campaign's total strays
//! more than one minimum batch from its fair total.
//!
//! A campaign with no standing (new) goes first, so a newcomer is served in its first pass
//! (unless its tenant's campaigns already owe its tenant's share of the pass, below); it
//! then owes what it took beyond its share, and waits until the others have caught up.
//! Only so many of a tenant's newcomers go first as fit, with what its campaigns already
//! owe, in its tenant's share of the pass (the first always does if the tenant owes
//! nothing): the others start level (a standing of nothing owed) behind those who are
//! owed, or a tenant starting campaigns faster than they finish would go before everyone
//! else for as long as it kept starting them.
//! A campaign that has nothing due for a while (finished, its live lines full, only retries
//! left, quiet hours, paused) keeps its standing, if it owes, for [`DEBT_PASSES`] passes,
//! so coming back does not put it first again; what others owe it is forgiven when it
//! leaves, as in deficit round-robin. If its tenant starts a campaign meanwhile, the debt
//! goes to that newcomer ([`inherit_debts`]), which then does not go first (nor does the
//! one away when it comes back, while its tenant owes its share): a tenant starting one
//! small campaign after another does not go first with each.
//! Urgent demands (transactional messages) go before the campaigns, each with what it has
//! earned in whole recipients (a new stream at least one, while what its tenant's streams
//! owe and its new ones take in the pass fits in their share of it, the first always if
//! they owe nothing: a tenant sending on a thousand streams in turn, each new again after
//! a quiet pass, would otherwise take every pass), and earn as the campaigns do:
//! a stream whose share is a fifth of a recipient sends one every five passes. A tenant's
//! streams owe together: what streams leave when they go quiet (what they owed, less what
//! they were owed) is their tenant's, paid off while all its streams are quiet, at the
//! shares they last earned, and taken up by its next new stream ([`reclaim_quiet_debts`]):
//! a message after a quiet spell long enough to have paid for the last goes at once, one
//! sooner waits for the rest of its turn. A pass with no budget changes no standing.
//! What spills from a saturated primary (or fails over from one whose breaker is open)
//! into an overflow lane takes turns there too, with standings of the overflow's own
//! ([`TurnsLane`]): planned by whole shares, a thousand tenants failing over to a pass of
//! 200 were served in a block that moved one tenant a tick (the last after 27 minutes).
//! The primary's standings do not count what it spilled. A campaign is charged for
//! what it was served: what its claim did not find, or what could not be published, is
//! given back ([`Turns::refund`]). Standings are this process's memory: a scheduler that
//! leads again after others led starts its new term with none
//! ([`crate::tick::Ticker::serve_term`]).

use crate::fairness::{self, Demand, PARTS};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// How many passes of its lane (ticks, top-ups and wakes: from a few minutes to half an
/// hour at the default tick) a campaign's debt outlives its last work due: long enough
/// for a pause or full lines, not always for quiet hours. A lane with nothing due at all
/// forgets its standings at the next tick.
pub const DEBT_PASSES: u64 = 1_000;

/// Campaigns' standings, per lane, across passes.
#[derive(Debug, Default)]
pub struct Turns {
    min_batch: u32,
    lanes: HashMap<TurnsLane, LaneStandings>,
}

/// Whose standings a plan uses: a provider's lane as its campaigns' primary, or as the
/// overflow other primaries spill into. One provider may be both (the primary of some
/// campaigns, the overflow of others), and each plan would read the other's campaigns as
/// gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TurnsLane {
    pub provider: Uuid,
    pub overflow: bool,
}

impl TurnsLane {
    pub fn primary(provider: Uuid) -> Self {
        Self {
            provider,
            overflow: false,
        }
    }

    pub fn overflow(provider: Uuid) -> Self {
        Self {
            provider,
            overflow: true,
        }
    }
}

#[derive(Debug, Default)]
struct LaneStandings {
    passes: u64,
    campaigns: HashMap<Uuid, Kept>,
    /// What tenants' streams that went quiet owing still owe, by tenant
    /// ([`reclaim_quiet_debts`]).
    quiet_debts: HashMap<Uuid, QuietDebt>,
}

/// What a tenant's transactional streams owed when they went quiet, paid off while they
/// are away at the share they last earned a pass.
#[derive(Debug, Clone, Copy)]
struct QuietDebt {
    /// In parts of a recipient ([`PARTS`]), more than nothing.
    owed: i64,
    /// Parts a pass it is paid off by while the tenant has no stream with work due.
    rate: i64,
    /// The last pass one of its streams had work due in.
    seen: u64,
}

impl QuietDebt {
    /// What is left of it at `pass`, once the passes since `seen` have paid their part.
    fn left_at(&self, pass: u64) -> i64 {
        let away = i64::try_from(pass.saturating_sub(self.seen + 1)).unwrap_or(i64::MAX);
        self.owed.saturating_sub(self.rate.saturating_mul(away))
    }
}

/// What a lane keeps of a campaign between passes.
#[derive(Debug, Clone, Copy)]
struct Kept {
    /// In parts of a recipient ([`PARTS`]).
    standing: i64,
    /// The last pass it had work due in.
    seen: u64,
    tenant: Uuid,
    urgent: bool,
    /// Its exact share of its last pass, in parts: a quiet stream's debt is paid off at it.
    share: i64,
}

impl Turns {
    pub fn new(min_batch: u32) -> Self {
        Self {
            min_batch,
            lanes: HashMap::new(),
        }
    }

    /// This pass's counts for `lane`'s `demands` (all the lane's campaigns with work due)
    /// out of `budget`; `rotation` shifts which tenant goes first among equal standings. A
    /// campaign of the lane not among the demands has nothing due: what it is owed is
    /// forgotten, what it owes is kept for [`DEBT_PASSES`] (and passed to its tenant's next
    /// newcomer: [`inherit_debts`]).
    pub fn take(
        &mut self,
        lane: TurnsLane,
        demands: &[Demand],
        budget: u32,
        rotation: usize,
    ) -> Vec<u32> {
        if budget == 0 {
            // Nothing to hand out: a newcomer stored level here would lose its first turn.
            return vec![0; demands.len()];
        }
        let kept = self.lanes.entry(lane).or_default();
        kept.passes += 1;
        let pass = kept.passes;
        let mut standing: Vec<Option<i64>> = demands
            .iter()
            .map(|d| kept.campaigns.get(&d.campaign_id).map(|k| k.standing))
            .collect();
        inherit_debts(demands, &mut standing, &mut kept.campaigns);
        // Streams that went quiet owing leave their debts to their tenants before anyone
        // takes them up: kept on a stream, a tenant sending on many streams in turn would
        // have each paid off at once, at the share of one.
        let streams: HashSet<Uuid> = demands
            .iter()
            .filter(|d| d.urgent)
            .map(|d| d.campaign_id)
            .collect();
        let quiet: Vec<Uuid> = kept
            .campaigns
            .iter()
            .filter(|(id, k)| k.urgent && !streams.contains(id))
            .map(|(id, _)| *id)
            .collect();
        let mut gone: HashMap<Uuid, Quieted> = HashMap::new();
        for id in quiet {
            if let Some(k) = kept.campaigns.remove(&id) {
                gone.entry(k.tenant).or_default().add(&k);
            }
        }
        for (tenant, quieted) in gone {
            owe_quietly(&mut kept.quiet_debts, tenant, quieted);
        }
        reclaim_quiet_debts(demands, &mut standing, &mut kept.quiet_debts, pass);
        let (counts, exact) = plan_turns(demands, budget, &mut standing, self.min_batch, rotation);
        for ((d, s), share) in demands.iter().zip(standing).zip(exact) {
            if let Some(standing) = s {
                let k = Kept {
                    standing,
                    seen: pass,
                    tenant: d.tenant_id,
                    urgent: d.urgent,
                    share: i64::try_from(share).unwrap_or(i64::MAX),
                };
                kept.campaigns.insert(d.campaign_id, k);
            }
        }
        kept.campaigns
            .retain(|_, k| k.seen == pass || (k.standing <= 0 && pass - k.seen <= DEBT_PASSES));
        kept.quiet_debts
            .retain(|_, debt| debt.left_at(pass + 1) > 0 && pass - debt.seen <= DEBT_PASSES);
        counts
    }

    /// Gives back to `campaign`'s standing in `lane` `n` recipients it was planned but not
    /// served: its claim found fewer due (its count was a moment old, its first attempts'
    /// bound overstated them, or rows were locked), or their publish failed and they went
    /// back to pending. A turn spent on nothing would otherwise send the campaign to the
    /// back of the line. A campaign with no standing in the lane (not planned there by
    /// turns) is left alone.
    pub fn refund(&mut self, lane: TurnsLane, campaign: Uuid, n: u32) {
        if let Some(kept) = self
            .lanes
            .get_mut(&lane)
            .and_then(|kept| kept.campaigns.get_mut(&campaign))
        {
            kept.standing += i64::from(n) * PARTS_I64;
        }
    }

    /// Forgets the lanes for which `keep` is false (no campaign of theirs has work due).
    pub fn retain_lanes(&mut self, keep: impl Fn(&TurnsLane) -> bool) {
        self.lanes.retain(|lane, _| keep(lane));
    }
}

/// A recipient's parts ([`PARTS`]), the unit of a standing.
const PARTS_I64: i64 = PARTS as i64;

/// What a tenant's streams that went quiet in one pass leave: what they owe, less what
/// they were owed (held back from going first, a stream earns its share); paid off at the
/// shares of those last seen latest.
#[derive(Debug, Default)]
struct Quieted {
    owed: i64,
    rate: i64,
    seen: u64,
}

impl Quieted {
    fn add(&mut self, k: &Kept) {
        self.owed = self.owed.saturating_sub(k.standing);
        if k.seen > self.seen {
            self.rate = k.share;
            self.seen = k.seen;
        } else if k.seen == self.seen {
            self.rate = self.rate.saturating_add(k.share);
        }
    }
}

/// Settles what a tenant's streams left when they went quiet with its quiet debt: what
/// they were owed pays it off (never beyond: a tenant banks nothing while away), what
/// they owed adds to it. Forgetting what quiet streams were owed while keeping what they
/// owed starved a tenant sending on many streams, each back new after a quiet pass.
fn owe_quietly(debts: &mut HashMap<Uuid, QuietDebt>, tenant: Uuid, quieted: Quieted) {
    match debts.get_mut(&tenant) {
        Some(debt) => {
            if quieted.seen > debt.seen {
                // Paid off from its latest pass: what the older part was paid meanwhile
                // is counted first.
                debt.owed = debt.left_at(quieted.seen + 1).max(0);
                debt.rate = quieted.rate;
                debt.seen = quieted.seen;
            }
            debt.owed = debt.owed.saturating_add(quieted.owed);
            if debt.owed <= 0 {
                debts.remove(&tenant);
            }
        }
        None if quieted.owed > 0 => {
            debts.insert(
                tenant,
                QuietDebt {
                    owed: quieted.owed,
                    rate: quieted.rate,
                    seen: quieted.seen,
                },
            );
        }
        None => {}
    }
}

/// A tenant whose streams went quiet owing, and that has a new stream with work due (one
/// back from quiet included), puts what is left of the debt (what the passes its streams
/// were all quiet have not paid off) on the first such stream, which then does not go
/// first (nor do its other new ones, while the tenant owes its share: [`plan_turns`]). A
/// stream that kept sending is never handed its siblings' debts: with each sibling back
/// from quiet going first, it starved behind them. While a tenant has streams with work
/// due but none new, its debt waits, not paid off meanwhile (its streams earn its share).
/// Forgiving a quiet stream's debt of less than a recipient sent its next message at once,
/// before its turn: tenants sending now and then, many of them together, took a lane from
/// a campaign (in a simulation, 0.06% of it for a fair 1.96%). One quiet long enough to
/// have paid off its debt comes back new, and its message goes at once.
fn reclaim_quiet_debts(
    demands: &[Demand],
    standing: &mut [Option<i64>],
    debts: &mut HashMap<Uuid, QuietDebt>,
    pass: u64,
) {
    if debts.is_empty() {
        return;
    }
    let mut heir: HashMap<Uuid, Option<usize>> = HashMap::new();
    for (i, d) in demands.iter().enumerate() {
        if !d.urgent || d.due == 0 || !debts.contains_key(&d.tenant_id) {
            continue;
        }
        let first = heir.entry(d.tenant_id).or_insert(None);
        if first.is_none() && standing[i].is_none() {
            *first = Some(i);
        }
    }
    for (tenant, first) in heir {
        let Some(debt) = debts.get_mut(&tenant) else {
            continue;
        };
        let left = debt.left_at(pass);
        match first {
            Some(i) => {
                debts.remove(&tenant);
                if left > 0 {
                    standing[i] = Some(-left);
                }
            }
            None => {
                debt.owed = left;
                debt.seen = pass;
            }
        }
    }
    debts.retain(|_, debt| debt.owed > 0);
}

/// The debts of a tenant's campaigns that left owing (served as newcomers before their
/// turn, then done) go to the tenant's next newcomer (the first in `demands`' order), which
/// then starts with them instead of going first: otherwise a tenant starting a small
/// campaign every pass had each go first, and with shares of a fraction of a recipient 30
/// such tenants of a thousand took nearly every pass. `standing` is indexed like the
/// demands; what is passed on leaves `kept`.
fn inherit_debts(demands: &[Demand], standing: &mut [Option<i64>], kept: &mut HashMap<Uuid, Kept>) {
    let mut heir: HashMap<Uuid, usize> = HashMap::new();
    for (i, d) in demands.iter().enumerate() {
        if standing[i].is_none() && !d.urgent && d.due > 0 {
            heir.entry(d.tenant_id).or_insert(i);
        }
    }
    if heir.is_empty() {
        return;
    }
    let present: HashSet<Uuid> = demands.iter().map(|d| d.campaign_id).collect();
    let owing: Vec<Uuid> = kept
        .iter()
        .filter(|(id, k)| {
            k.standing < 0 && !k.urgent && heir.contains_key(&k.tenant) && !present.contains(id)
        })
        .map(|(id, _)| *id)
        .collect();
    for id in owing {
        if let Some(k) = kept.remove(&id) {
            let i = heir[&k.tenant];
            standing[i] = Some(standing[i].unwrap_or(0) + k.standing);
        }
    }
}

/// What each of `taking` earns this pass, in parts of a recipient, indexed like the
/// demands: its `exact` share of the pass, not a whole-recipient share, which with more
/// campaigns than the pass has recipients gives most of them nothing, pass after pass,
/// while a block of the others earns every unit. Scaled so that together they earn exactly
/// the `left` recipients they are handed (what the urgent took is not theirs), so
/// standings do not drift.
fn earnings(exact: &[u64], taking: &[usize], left: i64, rotation: usize) -> Vec<i64> {
    let total: u128 = taking.iter().map(|&i| u128::from(exact[i])).sum();
    let target = u128::try_from(left).unwrap_or(0) * u128::from(PARTS);
    let mut earn = vec![0i64; exact.len()];
    if total == 0 {
        return earn;
    }
    let mut handed: u128 = 0;
    for &i in taking {
        let part = u128::from(exact[i]) * target / total;
        earn[i] = i64::try_from(part).unwrap_or(i64::MAX);
        handed += part;
    }
    // What the rounding down kept back (a part for fewer than each of them) goes one part
    // each, from a place that moves with `rotation`.
    let kept_back = usize::try_from(target - handed).unwrap_or(0);
    let from = rotation % taking.len().max(1);
    for &i in taking.iter().cycle().skip(from).take(kept_back) {
        earn[i] += 1;
    }
    earn
}

/// Ties (equal standings) go by each campaign's rank within its tenant, then by tenant
/// (shifted by `rotation`), so one tenant's many newcomers do not all go before another
/// tenant's first, and the same tenant is not always first. Indexed like the demands.
fn ties(demands: &[Demand], rotation: usize) -> Vec<(usize, usize)> {
    let mut rank: HashMap<Uuid, usize> = HashMap::new();
    let mut tenant_order: HashMap<Uuid, usize> = HashMap::new();
    let tie: Vec<(usize, usize)> = demands
        .iter()
        .map(|d| {
            let next = tenant_order.len();
            let tenant = *tenant_order.entry(d.tenant_id).or_insert(next);
            let r = rank.entry(d.tenant_id).or_insert(0);
            *r += 1;
            (*r, tenant)
        })
        .collect();
    let tenants = tenant_order.len().max(1);
    tie.into_iter()
        .map(|(r, t)| (r, (t + tenants - rotation % tenants) % tenants))
        .collect()
}

/// The pure decision behind [`Turns::take`]: `standing[i]` is demand `i`'s standing before
/// the pass (`None`: it has none yet) and after it, in parts of a recipient ([`PARTS`]).
/// Returns the counts, indexed like the demands, adding up to `budget` or to all that is
/// due if less.
pub fn take_turns(
    demands: &[Demand],
    budget: u32,
    standing: &mut [Option<i64>],
    min_batch: u32,
    rotation: usize,
) -> Vec<u32> {
    plan_turns(demands, budget, standing, min_batch, rotation).0
}

/// [`take_turns`], with each demand's exact share of the pass in parts.
fn plan_turns(
    demands: &[Demand],
    budget: u32,
    standing: &mut [Option<i64>],
    min_batch: u32,
    rotation: usize,
) -> (Vec<u32>, Vec<u64>) {
    let mut counts = vec![0u32; demands.len()];
    let exact = fairness::exact_shares(demands, budget, rotation);
    let due: u64 = demands.iter().map(|d| u64::from(d.due)).sum();
    let mut left = i64::try_from(u64::from(budget).min(due)).unwrap_or(i64::MAX);
    let tie = ties(demands, rotation);

    // Urgent demands (transactional messages) go first, each with what it has earned in
    // whole recipients (a newcomer at least one), so a stream whose share is a fraction of
    // a recipient a pass still sends every few passes, not when a moving block of whole
    // shares comes round (400 to 800 passes for 50 streams among a thousand tenants).
    let mut urgent: Vec<usize> = (0..demands.len())
        .filter(|&i| demands[i].urgent && demands[i].due > 0)
        .collect();
    let mut earned: Vec<i64> = vec![0; demands.len()];
    for &i in &urgent {
        earned[i] = standing[i].unwrap_or(0) + i64::try_from(exact[i]).unwrap_or(i64::MAX);
    }
    urgent.sort_by_key(|&i| (standing[i].is_some(), std::cmp::Reverse(earned[i]), tie[i]));
    // A new stream's one message goes before its turn only while what its tenant's streams
    // owe and its new ones take this pass fits in the share of its streams (the first
    // always goes if they owe nothing): streams back from quiet are new, and a tenant
    // sending on a thousand streams in turn would otherwise take every pass. What its
    // streams owe (those still sending, and the debts of quiet ones a new stream took up)
    // counts as taken: a tenant starting streams faster than they finish took half of
    // every pass, each new one going first while its older ones paid. A first message on
    // a second stream waits while the first owes more than the tenant's share of the pass
    // (as a campaign's newcomer does).
    let mut room: HashMap<Uuid, i64> = HashMap::new();
    let mut used: HashMap<Uuid, i64> = HashMap::new();
    for &i in &urgent {
        let tenant = demands[i].tenant_id;
        *room.entry(tenant).or_insert(0) += i64::try_from(exact[i]).unwrap_or(i64::MAX);
        *used.entry(tenant).or_insert(0) += standing[i].map_or(0, |s| (-s).max(0));
    }
    for &i in &urgent {
        let tenant = demands[i].tenant_id;
        let used = used.entry(tenant).or_insert(0);
        let new = standing[i].is_none();
        let fits = *used == 0 || *used < room.get(&tenant).copied().unwrap_or(0);
        let least = i64::from(new && fits);
        let whole = earned[i].div_euclid(PARTS_I64).max(least);
        let n = i64::from(demands[i].due).min(whole).min(left).max(0);
        counts[i] = u32::try_from(n).unwrap_or(0);
        earned[i] -= n * PARTS_I64;
        left -= n;
        standing[i] = Some(earned[i]);
        if new {
            *used = used.saturating_add(n * PARTS_I64);
        }
    }

    let taking: Vec<usize> = (0..demands.len())
        .filter(|&i| !demands[i].urgent && demands[i].due > 0)
        .collect();
    // What campaigns that left were owed is forgiven (as in deficit round-robin): if the
    // standings of those still here add up below zero, they are raised evenly to zero, or the
    // gap would be handed from one campaign to the next forever.
    let known: Vec<usize> = taking
        .iter()
        .copied()
        .filter(|&i| standing[i].is_some())
        .collect();
    let total: i64 = known.iter().filter_map(|&i| standing[i]).sum();
    if total < 0 {
        let n = i64::try_from(known.len()).unwrap_or(i64::MAX);
        let (each, extra) = (-total / n, -total % n);
        for (k, &i) in known.iter().enumerate() {
            let bump = each + i64::from(i64::try_from(k).unwrap_or(i64::MAX) < extra);
            standing[i] = standing[i].map(|s| s + bump);
        }
    }
    let earn = earnings(&exact, &taking, left, rotation);
    // A tenant's newcomers go first while what they take, with what its campaigns owe,
    // fits in the tenant's share of the pass (the first always does if it owes nothing);
    // the rest start level, behind those who are owed.
    let mut room: HashMap<Uuid, i64> = HashMap::new();
    let mut used: HashMap<Uuid, i64> = HashMap::new();
    for &i in &taking {
        let tenant = demands[i].tenant_id;
        *room.entry(tenant).or_insert(0) += earn[i];
        *used.entry(tenant).or_insert(0) += standing[i].map_or(0, |s| (-s).max(0));
    }
    let mut newcomers: Vec<usize> = taking
        .iter()
        .copied()
        .filter(|&i| standing[i].is_none())
        .collect();
    newcomers.sort_by_key(|&i| tie[i]);
    for i in newcomers {
        let tenant = demands[i].tenant_id;
        let room = room.get(&tenant).copied().unwrap_or(0);
        let used = used.entry(tenant).or_insert(0);
        if *used > 0 && *used >= room {
            standing[i] = Some(0);
            continue;
        }
        let batch = earn[i].div_euclid(PARTS_I64).max(i64::from(min_batch));
        *used += i64::from(demands[i].due).min(batch) * PARTS_I64;
    }
    for &i in &taking {
        earned[i] = standing[i].unwrap_or(0) + earn[i];
    }
    let mut queue = taking.clone();
    queue.sort_by_key(|&i| (standing[i].is_some(), std::cmp::Reverse(earned[i]), tie[i]));
    for &i in &queue {
        if left == 0 {
            break;
        }
        let whole = earned[i].div_euclid(PARTS_I64);
        let wanted = i64::from(demands[i].due).min(whole.max(i64::from(min_batch)));
        let n = wanted.min(left);
        counts[i] = u32::try_from(n).unwrap_or(0);
        earned[i] -= n * PARTS_I64;
        left -= n;
    }
    // Standings need not add up to the budget (a small pass before a big one, a campaign
    // leaving with something owed): what is left goes to those with more due, so the pass
    // is never short while work waits.
    for &i in &queue {
        if left == 0 {
            break;
        }
        let n = (i64::from(demands[i].due) - i64::from(counts[i])).min(left);
        counts[i] += u32::try_from(n).unwrap_or(0);
        earned[i] -= n * PARTS_I64;
        left -= n;
    }
    for &i in &taking {
        standing[i] = Some(earned[i]);
    }
    // And what the campaigns could not use goes to the urgent demands with more due (it
    // only came to them after the campaigns, so the campaigns' standings add up).
    for &i in &urgent {
        if left == 0 {
            break;
        }
        let n = (i64::from(demands[i].due) - i64::from(counts[i])).min(left);
        counts[i] += u32::try_from(n).unwrap_or(0);
        standing[i] = standing[i].map(|s| s - n * PARTS_I64);
        left -= n;
    }
    (counts, exact)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fairness::{exact_shares, shares};

    fn demand(campaign: u128, tenant: u128, due: u32) -> Demand {
        Demand {
            campaign_id: Uuid::from_u128(campaign),
            tenant_id: Uuid::from_u128(tenant),
            tenant_weight: 1,
            campaign_weight: 1,
            due,
            urgent: false,
        }
    }

    /// Runs `passes` passes of `budget` over `demands` (whose due never runs out) and
    /// returns what each demand was served in all, checking every pass hands out its budget.
    fn run(demands: &[Demand], budget: u32, passes: usize, min_batch: u32) -> Vec<u32> {
        let lane = TurnsLane::primary(Uuid::from_u128(99));
        let mut turns = Turns::new(min_batch);
        let mut total = vec![0u32; demands.len()];
        for pass in 0..passes {
            let counts = turns.take(lane, demands, budget, pass);
            assert_eq!(
                counts.iter().sum::<u32>(),
                budget,
                "pass {pass} used its budget"
            );
            for (t, c) in total.iter_mut().zip(&counts) {
                *t += c;
            }
        }
        total
    }

    #[test]
    fn shares_of_a_full_batch_or_more_are_left_as_they_are() {
        let demands = [demand(1, 1, 1000), demand(2, 2, 1000), demand(3, 2, 1000)];
        let mut turns = Turns::new(10);
        let lane = TurnsLane::primary(Uuid::from_u128(99));
        for pass in 0..5 {
            let fair = shares(&demands, 600, pass);
            assert_eq!(turns.take(lane, &demands, 600, pass), fair);
        }
    }

    #[test]
    fn small_shares_become_turns_at_full_batches() {
        // A hundred tenants with a share of one each, a minimum batch of ten.
        let demands: Vec<Demand> = (0..100).map(|i| demand(i, i, 1000)).collect();
        let lane = TurnsLane::primary(Uuid::from_u128(99));
        let mut turns = Turns::new(10);
        let first = turns.take(lane, &demands, 100, 0);
        // Ten campaigns are served, ten each.
        assert_eq!(first.iter().filter(|&&n| n > 0).count(), 10);
        assert!(first.iter().all(|&n| n == 0 || n == 10));
        // After ten passes every campaign has had its fair hundredth, exactly.
        let total = run(&demands, 100, 10, 10);
        assert!(total.iter().all(|&n| n == 10), "{total:?}");
    }

    /// Passes of `budget(pass)` over `demands` with minimum batch `min_batch`: every pass
    /// uses its budget, and no campaign's total strays more than a batch from its fair total
    /// (the sum of its exact shares, fractions of a recipient included).
    fn check_lag(demands: &[Demand], budget: impl Fn(usize) -> u32, min_batch: u32, passes: usize) {
        let lane = TurnsLane::primary(Uuid::from_u128(99));
        let mut turns = Turns::new(min_batch);
        let mut served = vec![0i128; demands.len()];
        let mut fair = vec![0i128; demands.len()];
        let mut worst = 0;
        for pass in 0..passes {
            let budget = budget(pass);
            let counts = turns.take(lane, demands, budget, pass);
            assert_eq!(
                counts.iter().sum::<u32>(),
                budget,
                "pass {pass} used its budget"
            );
            let exact = exact_shares(demands, budget, pass);
            for i in 0..demands.len() {
                served[i] += i128::from(counts[i]) * i128::from(PARTS);
                fair[i] += i128::from(exact[i]);
                worst = worst.max((served[i] - fair[i]).abs());
            }
        }
        let worst = worst as f64 / PARTS as f64;
        assert!(
            worst <= f64::from(min_batch),
            "a campaign strayed {worst} from its fair total"
        );
    }

    #[test]
    fn every_campaign_stays_within_a_batch_of_its_fair_share() {
        // Uneven tenant weights and campaign counts, shares that do not divide the batch.
        let mut demands: Vec<Demand> = (0..37).map(|i| demand(i, i % 7, 1000)).collect();
        for d in &mut demands {
            d.tenant_weight = if d.tenant_id == Uuid::from_u128(0) {
                3
            } else {
                1
            };
        }
        check_lag(&demands, |_| 53, 8, 200);
        // The many-campaign bench's shape: a thousand tenants of ten campaigns, a share of
        // less than one each.
        let demands: Vec<Demand> = (0..10_000).map(|i| demand(i, i / 10, 20)).collect();
        check_lag(&demands, |_| 8_000, 10, 30);
        // A thousand tenants over a pass of 200: a fifth of a recipient each.
        let demands: Vec<Demand> = (0..1_000).map(|i| demand(i, i, 1_000_000)).collect();
        check_lag(&demands, |_| 200, 10, 300);
        // Campaign weights within tenants, and a budget that changes every pass.
        let mut demands: Vec<Demand> = (0..60).map(|i| demand(i, i % 4, 100_000)).collect();
        for (i, d) in demands.iter_mut().enumerate() {
            d.campaign_weight = 1 + (i as u32 % 3);
        }
        check_lag(&demands, |pass| 20 + (pass as u32 * 37) % 90, 10, 300);
    }

    /// Passes of `budget` over `demands` (due never running out): the pass by which every
    /// campaign had been served at least once.
    fn passes_until_all_served(
        demands: &[Demand],
        budget: u32,
        min_batch: u32,
        most: usize,
    ) -> usize {
        let lane = TurnsLane::primary(Uuid::from_u128(99));
        let mut turns = Turns::new(min_batch);
        let mut served = vec![false; demands.len()];
        for pass in 0..most {
            let counts = turns.take(lane, demands, budget, pass);
            for (s, &c) in served.iter_mut().zip(&counts) {
                *s |= c > 0;
            }
            if served.iter().all(|&s| s) {
                return pass + 1;
            }
        }
        most
    }

    #[test]
    fn far_more_tenants_than_a_pass_serves_each_get_their_turn_soon() {
        // A thousand tenants over a pass of 200 in batches of 10: 20 campaigns a pass, so
        // every one within 50 passes (the fair share of each is a fifth of a recipient; a
        // share rounded to whole recipients is nothing for 800 of them every pass).
        let demands: Vec<Demand> = (0..1_000).map(|i| demand(i, i, 1_000_000)).collect();
        let passes = passes_until_all_served(&demands, 200, 10, 1_000);
        assert!(
            passes <= 50,
            "the last campaign was first served in pass {passes}"
        );
        // Nested: 200 tenants of ten campaigns, a tenth of a recipient each a pass.
        let demands: Vec<Demand> = (0..2_000).map(|i| demand(i, i / 10, 1_000_000)).collect();
        let passes = passes_until_all_served(&demands, 200, 10, 1_000);
        assert!(
            passes <= 100,
            "the last campaign was first served in pass {passes}"
        );
    }

    #[test]
    fn a_newcomer_is_served_in_its_first_pass() {
        let mut demands: Vec<Demand> = (0..50).map(|i| demand(i, i, 1000)).collect();
        let lane = TurnsLane::primary(Uuid::from_u128(99));
        let mut turns = Turns::new(10);
        for pass in 0..7 {
            turns.take(lane, &demands, 50, pass);
        }
        demands.push(demand(500, 500, 1000));
        let counts = turns.take(lane, &demands, 50, 7);
        assert_eq!(counts[50], 10);
    }

    #[test]
    fn a_tenant_starting_campaigns_faster_than_they_finish_does_not_go_before_everyone() {
        // Tenant 1 has one long campaign; tenant 2 starts ten of a batch each every pass,
        // more than the whole budget. Tenant 1 keeps about its half.
        let lane = TurnsLane::primary(Uuid::from_u128(99));
        let mut turns = Turns::new(10);
        let mut live = vec![demand(1, 1, 1_000_000)];
        let mut first_tenant = 0;
        let passes = 50;
        for pass in 0..passes {
            live.extend((0..10).map(|k| demand(1_000 + pass as u128 * 10 + k, 2, 10)));
            let counts = turns.take(lane, &live, 100, pass);
            assert_eq!(
                counts.iter().sum::<u32>(),
                100,
                "pass {pass} used its budget"
            );
            first_tenant += counts[0];
            for (d, c) in live.iter_mut().zip(&counts) {
                d.due -= c;
            }
            live.retain(|d| d.due > 0);
        }
        assert!(
            first_tenant >= 45 * passes as u32,
            "tenant 1 was served {first_tenant} of {}",
            100 * passes
        );
        // And tenant 2's newcomers still go first up to its share: five of them a pass.
        let mut turns = Turns::new(10);
        let mut live = vec![demand(1, 1, 1_000_000)];
        turns.take(lane, &live, 100, 0);
        live.extend((0..10).map(|k| demand(1_000 + k, 2, 10)));
        let counts = turns.take(lane, &live, 100, 1);
        assert_eq!(counts[1..].iter().filter(|&&n| n == 10).count(), 5);
    }

    #[test]
    fn a_campaign_takes_no_more_than_it_has_due() {
        let demands = [demand(1, 1, 3), demand(2, 2, 1000), demand(3, 3, 1000)];
        let counts = take_turns(&demands, 3, &mut [None, None, None], 10, 0);
        // The first (due 3) takes its 3; the budget of 3 is then used up.
        assert_eq!(counts, vec![3, 0, 0]);
    }

    #[test]
    fn urgent_demands_go_first_with_what_they_earned() {
        // Three tenants over a pass of 4: a third of it each. The urgent newcomer takes its
        // whole recipient and keeps the third left over; the campaigns split the other 3.
        let mut messages = demand(1, 1, 5);
        messages.urgent = true;
        let demands = [messages, demand(2, 2, 1000), demand(3, 3, 1000)];
        let mut standing = [None, None, None];
        let counts = take_turns(&demands, 4, &mut standing, 10, 0);
        assert_eq!(counts, vec![1, 3, 0]);
        let whole = |s: Option<i64>| s.map(|s| (s as f64 / PARTS as f64 * 100.0).round() / 100.0);
        assert_eq!(standing.map(whole), [Some(0.33), Some(-1.5), Some(1.5)]);
        // With a share of a recipient or more a pass, it is served every pass.
        let mut turns = Turns::new(10);
        let lane = TurnsLane::primary(Uuid::from_u128(99));
        for pass in 0..20 {
            assert!(turns.take(lane, &demands, 6, pass)[0] >= 1, "pass {pass}");
        }
    }

    #[test]
    fn transactional_streams_among_far_more_tenants_than_a_pass_serves_are_not_starved() {
        // A thousand tenants with a long campaign each over a pass of 200; fifty of them
        // also send transactional messages without pause. Each stream's share is a fifth
        // of a recipient: it sends one every five passes (whole-recipient shares left each
        // waiting 400 to 800 passes).
        let lane = TurnsLane::primary(Uuid::from_u128(99));
        let mut demands: Vec<Demand> = (0..1_000).map(|i| demand(i, i, 1_000_000)).collect();
        for t in 0..50 {
            let mut stream = demand(10_000 + t, t, 1_000_000);
            stream.urgent = true;
            demands.push(stream);
        }
        let mut turns = Turns::new(10);
        let mut last = vec![0usize; 50];
        let mut longest = 0;
        let mut served = 0u32;
        for pass in 0..300 {
            let counts = turns.take(lane, &demands, 200, pass);
            assert_eq!(
                counts.iter().sum::<u32>(),
                200,
                "pass {pass} used its budget"
            );
            for (k, &n) in counts[1_000..].iter().enumerate() {
                if pass == 0 {
                    assert!(n > 0, "stream {k} waited as a newcomer");
                }
                if n > 0 {
                    // Its first message went before its turn: it owes four fifths of one,
                    // paid by the next nine passes; from then on one every five.
                    if pass > 10 {
                        longest = longest.max(pass - last[k]);
                    }
                    last[k] = pass;
                    served += n;
                }
            }
        }
        // Counted to the end too: a stream never served again has waited since.
        for &l in &last {
            longest = longest.max(299 - l);
        }
        assert!(longest <= 5, "a stream waited {longest} passes");
        // Their fair part: 50 streams of a fifth, 300 passes.
        assert!((2_950..=3_050).contains(&served), "streams sent {served}");
    }

    #[test]
    fn a_streams_message_after_a_quiet_spell_goes_at_once_once_it_has_paid_for_the_last() {
        // A thousand tenants with a long campaign each over a pass of 200: tenant 7's stream
        // earns a fifth of a recipient a pass. Its first message goes at once (it then owes
        // four fifths); after `quiet` passes without messages comes another: how many
        // passes does it wait?
        let wait_after = |quiet: usize| {
            let lane = TurnsLane::primary(Uuid::from_u128(99));
            let mut turns = Turns::new(10);
            let campaigns: Vec<Demand> = (0..1_000).map(|i| demand(i, i, 1_000_000)).collect();
            for pass in 0..5 {
                turns.take(lane, &campaigns, 200, pass);
            }
            let mut stream = demand(5_000, 7, 1);
            stream.urgent = true;
            let mut with_stream = campaigns.clone();
            with_stream.push(stream);
            // The first comes in a pass with nothing to hand out, then goes in the next.
            assert_eq!(turns.take(lane, &with_stream, 0, 5), vec![0; 1_001]);
            assert_eq!(turns.take(lane, &with_stream, 200, 6)[1_000], 1);
            for pass in 7..7 + quiet {
                turns.take(lane, &campaigns, 200, pass);
            }
            (7 + quiet..100)
                .position(|pass| turns.take(lane, &with_stream, 200, pass)[1_000] == 1)
                .expect("the message was never sent")
        };
        // Quiet for four passes, it has paid for the first: the next goes at once.
        assert_eq!(wait_after(4), 0);
        assert_eq!(wait_after(40), 0);
        // Quiet for three, it still owes a fifth: the next waits its turn, the five passes
        // that earn it a recipient and a fifth. Forgiven what it owed, it went at once, and
        // tenants sending now and then took a lane from its campaigns.
        assert_eq!(wait_after(3), 5);
    }

    #[test]
    fn tenants_starting_a_small_campaign_every_pass_do_not_take_every_pass() {
        // A thousand tenants with a long campaign each over a pass of 200; thirty of them
        // also start a campaign of one batch every pass. Those thirty's fair part is 3%;
        // when each newcomer went first they took nearly every pass.
        let lane = TurnsLane::primary(Uuid::from_u128(99));
        let mut turns = Turns::new(10);
        let mut live: Vec<Demand> = (0..1_000).map(|i| demand(i, i, 1_000_000)).collect();
        let mut others = 0u32;
        let passes = 200;
        for pass in 0..passes {
            live.extend((0..30).map(|t| demand(100_000 + pass as u128 * 100 + t, t, 10)));
            let counts = turns.take(lane, &live, 200, pass);
            assert_eq!(
                counts.iter().sum::<u32>(),
                200,
                "pass {pass} used its budget"
            );
            others += live
                .iter()
                .zip(&counts)
                .filter(|(d, _)| d.tenant_id >= Uuid::from_u128(30))
                .map(|(_, &n)| n)
                .sum::<u32>();
            for (d, c) in live.iter_mut().zip(&counts) {
                d.due -= c;
            }
            live.retain(|d| d.due > 0);
        }
        // The other 970 tenants' fair part is 97%.
        assert!(
            others >= 200 * passes as u32 * 95 / 100,
            "the other tenants were served {others} of {}",
            200 * passes
        );
    }

    #[test]
    fn a_tenant_sending_on_many_streams_in_turn_does_not_take_every_pass() {
        // Tenant 1 sends one message every other pass on each of 1,000 streams (500 due a
        // pass); tenant 2 has a long campaign. Each tenant's fair part is half of each pass.
        // When each stream back from a quiet pass went first as new, tenant 1 took them all.
        let lane = TurnsLane::primary(Uuid::from_u128(99));
        let mut turns = Turns::new(10);
        let mut campaign_served = 0u32;
        let passes = 200;
        for pass in 0..passes {
            let mut demands: Vec<Demand> = (0..1_000u128)
                .filter(|s| (s + pass as u128).is_multiple_of(2))
                .map(|s| Demand {
                    urgent: true,
                    ..demand(10_000 + s, 1, 1)
                })
                .collect();
            demands.push(demand(1, 2, 1_000_000));
            let counts = turns.take(lane, &demands, 200, pass);
            assert_eq!(counts.iter().sum::<u32>(), 200, "pass {pass}");
            campaign_served += counts.last().copied().unwrap_or(0);
        }
        assert!(
            campaign_served >= 200 * passes as u32 * 48 / 100,
            "the campaign was served {campaign_served} of {}",
            200 * passes
        );
    }

    #[test]
    fn sparse_streams_that_saturate_a_lane_leave_a_campaign_its_share() {
        // Fifty tenants each get a transactional message every third pass (about 17 a
        // pass), over a lane that sends 2 a pass; a fifty-first tenant has a long campaign.
        // About 18 tenants have work due in a pass: the campaign's fair part is 2 ÷ 18 a
        // pass. When a stream that went quiet owing was forgiven and came back new, each
        // message went first and the campaign got almost nothing.
        let lane = TurnsLane::primary(Uuid::from_u128(99));
        let mut turns = Turns::new(10);
        let mut waiting = [0u32; 50];
        let mut campaign_served = 0u32;
        let passes = 600;
        for pass in 0..passes {
            for (t, w) in waiting.iter_mut().enumerate() {
                if (pass + t).is_multiple_of(3) {
                    *w += 1;
                }
            }
            let mut demands: Vec<Demand> = (0..50u128)
                .filter(|&t| waiting[t as usize] > 0)
                .map(|t| Demand {
                    urgent: true,
                    ..demand(10_000 + t, t, waiting[t as usize])
                })
                .collect();
            demands.push(demand(1, 50, 1_000_000));
            let counts = turns.take(lane, &demands, 2, pass);
            assert_eq!(counts.iter().sum::<u32>(), 2, "pass {pass}");
            for (d, &n) in demands.iter().zip(&counts) {
                if d.urgent {
                    let t = d.tenant_id.as_u128() as usize;
                    waiting[t] -= n;
                } else {
                    campaign_served += n;
                }
            }
        }
        let fair = 2 * passes as u32 / 18;
        assert!(
            campaign_served >= fair * 8 / 10,
            "the campaign was served {campaign_served}; its fair part is about {fair}"
        );
    }

    /// Passes of a lane of 200 among a thousand tenants with a long campaign each (a
    /// fifth of a recipient a pass each), tenant 0 also sending on streams: `streams(pass)`
    /// lists the ids of its streams a message comes to in that pass. Returns what each of
    /// its streams sent, by id, and what all of them did.
    fn stream_tenant(
        passes: usize,
        streams: impl Fn(usize) -> Vec<u128>,
    ) -> (HashMap<u128, u32>, u32) {
        let lane = TurnsLane::primary(Uuid::from_u128(99));
        let mut turns = Turns::new(10);
        let campaigns: Vec<Demand> = (0..1_000).map(|i| demand(i, i, 1_000_000)).collect();
        let mut waiting: HashMap<u128, u32> = HashMap::new();
        let mut sent: HashMap<u128, u32> = HashMap::new();
        for pass in 0..passes {
            for id in streams(pass) {
                *waiting.entry(id).or_insert(0) += 1;
            }
            let mut demands = campaigns.clone();
            let mut ids: Vec<u128> = waiting
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(id, _)| *id)
                .collect();
            ids.sort_unstable();
            demands.extend(ids.iter().map(|&id| Demand {
                urgent: true,
                ..demand(id, 0, waiting[&id])
            }));
            let counts = turns.take(lane, &demands, 200, pass);
            assert_eq!(counts.iter().sum::<u32>(), 200, "pass {pass}");
            for (id, n) in ids.iter().zip(&counts[1_000..]) {
                *waiting.get_mut(id).unwrap() -= n;
                *sent.entry(*id).or_insert(0) += n;
            }
        }
        let total = sent.values().sum();
        (sent, total)
    }

    #[test]
    fn a_busy_stream_is_not_starved_by_its_tenants_occasional_ones() {
        // Stream 1 always has messages; stream 2 gets one every other pass. Handed its
        // quiet sibling's debts while the sibling came back first each time, stream 1 sent
        // 1 message in 400 passes.
        let (sent, total) = stream_tenant(400, |pass| {
            let mut ids = vec![10_001];
            if pass % 2 == 0 {
                ids.push(10_002);
            }
            ids
        });
        assert!(sent[&10_001] >= 20, "the busy stream sent {sent:?}");
        // The tenant's fair part: a fifth of each pass, 80 (it took 200 before).
        assert!(total <= 100, "the tenant sent {total}");
    }

    #[test]
    fn a_tenant_sending_on_two_streams_a_pass_in_turn_takes_its_share() {
        // Two messages a pass, each on the next of 20 streams in turn: ten times the
        // tenant's share of a fifth of a recipient a pass, so its messages wait. When the
        // first stream back from quiet took its tenant's debts up and the second went first,
        // the tenant took half of every pass.
        let (_, total) = stream_tenant(600, |pass| {
            let pass = pass as u128;
            vec![20_000 + (2 * pass) % 20, 20_001 + (2 * pass) % 20]
        });
        assert!(
            (100..=150).contains(&total),
            "the tenant sent {total} in 600 passes"
        );
    }

    #[test]
    fn a_second_stream_waits_while_its_tenant_owes_and_another_tenants_first_goes_at_once() {
        // A thousand tenants with a campaign each over a pass of 200 (a fifth of a recipient
        // each). Tenant 0's first stream starts at pass 50 with messages to come (it went
        // first, and owes); its second stream's first message comes a pass later, when
        // tenant 1's first does.
        let lane = TurnsLane::primary(Uuid::from_u128(99));
        let mut turns = Turns::new(10);
        let mut demands: Vec<Demand> = (0..1_000).map(|i| demand(i, i, 1_000_000)).collect();
        let stream = |id: u128, tenant: u128| Demand {
            urgent: true,
            ..demand(id, tenant, 1_000)
        };
        for pass in 0..50 {
            turns.take(lane, &demands, 200, pass);
        }
        demands.push(stream(5_000, 0));
        assert_eq!(turns.take(lane, &demands, 200, 50)[1_000], 1);
        demands.push(stream(5_001, 0));
        demands.push(stream(6_000, 1));
        let counts = turns.take(lane, &demands, 200, 51);
        assert_eq!(counts[1_002], 1, "another tenant's first message waited");
        // Went first, it would have had the tenant take two in two passes, ten times its
        // share; it waits its turn instead, within the passes its tenant's share takes.
        assert_eq!(counts[1_001], 0, "the second stream went before its turn");
        let waited = (52..100)
            .position(|pass| turns.take(lane, &demands, 200, pass)[1_001] > 0)
            .expect("the second stream was never served");
        assert!(waited <= 12, "the second stream waited {waited} passes");
    }

    #[test]
    fn a_providers_lanes_as_primary_and_as_overflow_keep_their_own_standings() {
        let provider = Uuid::from_u128(99);
        let mut turns = Turns::new(10);
        let own = [demand(1, 1, 100), demand(2, 2, 100)];
        // A small pass: campaign 1 takes it and owes; campaign 2 is owed.
        assert_eq!(
            turns.take(TurnsLane::primary(provider), &own, 6, 0),
            vec![6, 0]
        );
        // Tenant 1's campaign failing over into this provider, as its overflow: shared
        // standings would read 1 and 2 as gone (2's due forgotten, 1's debt passed on).
        let spilled = [demand(3, 1, 100)];
        turns.take(TurnsLane::overflow(provider), &spilled, 10, 0);
        // Campaign 2, owed, goes first.
        assert_eq!(
            turns.take(TurnsLane::primary(provider), &own, 6, 0),
            vec![0, 6]
        );
    }

    #[test]
    fn a_pass_is_never_short_while_work_is_due() {
        let lane = TurnsLane::primary(Uuid::from_u128(99));
        let mut turns = Turns::new(10);
        let both = [demand(1, 1, 100), demand(2, 2, 100)];
        // A small top-up: one campaign takes it, and owes for it.
        assert_eq!(turns.take(lane, &both, 6, 0).iter().sum::<u32>(), 6);
        // Then a pass of full shares: the standings add up to less than its budget, and the
        // rest still goes out.
        assert_eq!(turns.take(lane, &both, 200, 0), vec![100, 100]);
        // Shares of a batch or more are claimed as they come, but for what earlier passes
        // left owed (campaign 2 was owed 3).
        assert_eq!(turns.take(lane, &both, 60, 1), vec![27, 33]);
        assert_eq!(turns.take(lane, &both, 60, 2), vec![30, 30]);
    }

    #[test]
    fn what_leavers_were_owed_does_not_circle_among_those_left() {
        let lane = TurnsLane::primary(Uuid::from_u128(99));
        let mut turns = Turns::new(10);
        let six: Vec<Demand> = (0..6).map(|i| demand(i, i, 1000)).collect();
        // A top-up of 3 each: two campaigns take it in batches; the other four are owed.
        assert_eq!(turns.take(lane, &six, 18, 0).iter().sum::<u32>(), 18);
        // The four leave; the two left settle up within a pass and then get their shares.
        turns.take(lane, &six[..2], 100, 1);
        for pass in 2..6 {
            assert_eq!(turns.take(lane, &six[..2], 100, pass), vec![50, 50]);
        }
    }

    #[test]
    fn every_campaign_of_a_tenant_earns_its_turn() {
        // A tenant's share of 8 over its 10 campaigns: the units left over rotate, so its
        // last campaigns are served too, not only after their siblings finish.
        let demands: Vec<Demand> = (0..10_000).map(|i| demand(i, i / 10, 1000)).collect();
        let total = run(&demands, 8_000, 30, 10);
        assert!(total.iter().all(|&n| n > 0), "a campaign was never served");
    }

    #[test]
    fn a_campaign_back_from_a_pause_does_not_go_first_again() {
        let lane = TurnsLane::primary(Uuid::from_u128(99));
        let mut turns = Turns::new(10);
        let demands: Vec<Demand> = (0..20).map(|i| demand(i, i, 1000)).collect();
        // Campaign 0 goes first as a newcomer, and owes for it.
        assert_eq!(turns.take(lane, &demands, 20, 0)[0], 10);
        // It pauses for a few passes (nothing due), then comes back: the others, who are
        // owed, go before it.
        for pass in 1..4 {
            turns.take(lane, &demands[1..], 20, pass);
        }
        assert_eq!(turns.take(lane, &demands, 20, 4)[0], 0);
        // A debt is kept only so long.
        for pass in 5..(6 + DEBT_PASSES as usize) {
            turns.take(lane, &demands[1..], 20, pass);
        }
        assert!(
            !turns.lanes[&lane]
                .campaigns
                .contains_key(&Uuid::from_u128(0))
        );
    }

    #[test]
    fn a_campaign_with_nothing_due_loses_what_it_was_owed() {
        let lane = TurnsLane::primary(Uuid::from_u128(99));
        let mut turns = Turns::new(10);
        let both = [demand(1, 1, 1000), demand(2, 2, 1000)];
        // Campaign 1 takes the whole budget (it owes 1); campaign 2 is owed 1.
        assert_eq!(turns.take(lane, &both, 2, 0), vec![2, 0]);
        turns.take(lane, &both[..1], 1, 1);
        assert!(
            !turns.lanes[&lane]
                .campaigns
                .contains_key(&Uuid::from_u128(2))
        );
        turns.retain_lanes(|_| false);
        assert!(turns.lanes.is_empty());
    }

    #[test]
    fn what_a_campaign_was_not_served_is_given_back() {
        let lane = TurnsLane::primary(Uuid::from_u128(99));
        let both = [demand(1, 1, 1000), demand(2, 2, 1000)];
        // In whole recipients.
        let standing = |turns: &Turns, campaign: u128| {
            turns.lanes[&lane].campaigns[&Uuid::from_u128(campaign)].standing as f64 / PARTS as f64
        };
        let mut charged = Turns::new(10);
        assert_eq!(charged.take(lane, &both, 10, 0), vec![10, 0]);
        // Served its batch, campaign 1 owes 5 and waits behind campaign 2, owed 5.
        assert_eq!((standing(&charged, 1), standing(&charged, 2)), (-5.0, 5.0));
        // Its claim found nothing: the batch is given back and the two stand level again.
        let mut refunded = Turns::new(10);
        refunded.take(lane, &both, 10, 0);
        refunded.refund(lane, Uuid::from_u128(1), 10);
        assert_eq!((standing(&refunded, 1), standing(&refunded, 2)), (5.0, 5.0));
        // Nothing to give back to a campaign or lane without a standing.
        refunded.refund(lane, Uuid::from_u128(3), 10);
        refunded.refund(
            TurnsLane::primary(Uuid::from_u128(98)),
            Uuid::from_u128(1),
            10,
        );
        assert_eq!(refunded.lanes[&lane].campaigns.len(), 2);
        assert_eq!(refunded.lanes.len(), 1);
    }
}
