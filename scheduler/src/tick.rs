//! One scheduler tick: activate, sweep, then per provider lane measure, plan and claim;
//! publish. Recovering expired leases and completing campaigns are
//! [`crate::housekeeping`]'s.

use crate::backpressure;
use crate::budget::{self, Budget, LaneState, Measure, PassKind};
use crate::carry::{self, Carried};
use crate::commitments::{self, Commitment};
use crate::fairness::{self, Demand};
use crate::lanes::Lanes;
use crate::publish::{PublishError, Publisher};
use crate::routing::{self, Routes, Spill};
use crate::sweep::{self, Swept};
use crate::tenant_lines;
use crate::turns::{Turns, TurnsLane};
use herald_shared::db::within;
use herald_shared::domain::Channel;
use herald_shared::ops::metrics as metrics_names;
use herald_shared::queue::message::{self, DispatchMessage, FORMAT_VERSION};
use herald_shared::template;
use herald_store as store;
use herald_store::campaigns::ActiveCampaign;
use herald_store::recipients::claim::{self, Claimed};
use sqlx::PgPool;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum TickError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The pass was given up: a connection that leads nowhere (a failover, a cut network)
    /// would otherwise hold the scheduler for as long as the kernel takes to notice.
    #[error("the pass was not done within {0:?}; given up")]
    GivenUp(Duration),
}

/// What a tick did, for logs and tests.
#[derive(Debug, Default, Clone)]
pub struct TickReport {
    pub depth: u64,
    pub budget: u32,
    pub campaigns: usize,
    /// The campaigns with recipients due when the tick's dispatch began (a tick's only): not
    /// finished, so the completion check ([`crate::housekeeping`]) leaves them out.
    pub due_campaigns: Vec<Uuid>,
    pub published: usize,
    pub unconfirmed: usize,
    /// What the tick's sweep did.
    pub swept: Swept,
}

pub struct Ticker {
    pool: PgPool,
    publisher: Publisher,
    lanes: Lanes,
    /// Most due recipients counted per campaign (no lane may publish more in one go).
    max_budget: u32,
    requeue_after: Duration,
    count: usize,
    /// Providers' committed volumes as of the last tick or wake: a month's pace moves too
    /// slowly for top-ups to read them again, but a wake (a campaign just started, perhaps
    /// just after an operator changed a commitment) reads them.
    commitments: BTreeMap<Uuid, Commitment>,
    /// Lanes with work due that got nothing because no live worker may send to them yet:
    /// refilled as soon as one may ([`starved`](Self::starved)), not a tick later.
    withheld: BTreeSet<Uuid>,
    /// Campaigns' standings against their fair shares, in their primary lanes.
    turns: Turns,
    /// The leadership term ([`crate::leader::Leadership::term`]) the standings are from.
    term: u64,
    /// What the next top-up plans from, if nothing since the last full measure asks for a
    /// new one ([`crate::carry`]).
    carried: Option<Carried>,
}

/// Whether a dispatch measures every lane (a tick), refills the hungry ones (a top-up), or
/// refills the lanes of newly accepted transactional messages, of campaigns started now, or
/// of campaigns just paused or cancelled (a wake).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass<'a> {
    Tick,
    TopUp,
    Wake(&'a BTreeSet<Uuid>),
}

impl Pass<'_> {
    fn kind(self, provider: Uuid) -> PassKind {
        match self {
            Pass::Tick => PassKind::Tick,
            Pass::TopUp => PassKind::TopUp,
            Pass::Wake(woken) => PassKind::Wake {
                woken: woken.contains(&provider),
            },
        }
    }
}

impl Ticker {
    pub fn new(
        pool: PgPool,
        publisher: Publisher,
        lanes: Lanes,
        max_budget: u32,
        requeue_after: Duration,
        min_batch: u32,
    ) -> Self {
        Self {
            pool,
            publisher,
            lanes,
            max_budget,
            requeue_after,
            count: 0,
            commitments: BTreeMap::new(),
            withheld: BTreeSet::new(),
            turns: Turns::new(min_batch),
            term: 0,
            carried: None,
        }
    }

    /// Called before each pass with the leadership term it runs in. A new term starts with
    /// level standings: while other schedulers led, campaigns were served without this
    /// process's standings, so what they say now is stale (a campaign that owed when this
    /// process stood down would be made to wait for work it never got).
    pub fn serve_term(&mut self, term: u64) {
        if term != self.term {
            self.turns.retain_lanes(|_| false);
            self.publisher.forget_sizes();
            self.carried = None;
            self.term = term;
        }
    }

    /// Runs `pass`, given up after `within`: a statement on a connection that leads nowhere
    /// (a failover, a cut network) is given up at the database deadline and fails the pass
    /// as any error does, but a pass may wait on more than one thing. A pass given up
    /// part-way leaves in memory what a failed one would have undone (campaigns charged
    /// for claims it did not make, a plan for top-ups): dropped, as at a new term. The
    /// claims it made are the stale-claim sweep's, as after a crash.
    pub async fn bounded(
        &mut self,
        within: Duration,
        pass: Pass<'_>,
    ) -> Result<TickReport, TickError> {
        let done = tokio::time::timeout(within, async {
            match pass {
                Pass::Tick => self.run().await,
                Pass::TopUp => self.top_up().await,
                Pass::Wake(providers) => self.wake(providers).await,
            }
        })
        .await;
        done.unwrap_or_else(|_| {
            self.turns.retain_lanes(|_| false);
            self.carried = None;
            Err(TickError::GivenUp(within))
        })
    }

    /// A standby publishes nothing: no lane is hungry or withheld for it, so
    /// [`starved`](Self::starved) waits for ever instead of polling the broker (at a cold
    /// lane's quicker pace, for good, had leadership gone during the lane's first tick).
    pub fn stand_down(&mut self) {
        self.publisher.zero_lane_gauges();
        self.lanes.only_due(&BTreeSet::new());
        self.withheld.clear();
        self.carried = None;
    }

    /// How often to look for starved workers now ([`Self::starving`]): every
    /// [`starvation_poll`](crate::backpressure::starvation_poll) of `tick`, at the quicker
    /// pace while a hungry lane is cold or held; `None` when no lane is hungry nor withheld,
    /// so an idle scheduler does not poll the broker.
    pub fn starvation_poll(&self, tick: Duration) -> Option<Duration> {
        let hungry = self.lanes.hungry();
        if hungry.is_empty() && self.withheld.is_empty() {
            return None;
        }
        let quick = hungry
            .iter()
            .any(|&provider| self.lanes.cold(provider) || self.lanes.held(provider));
        Some(crate::backpressure::starvation_poll(tick, quick))
    }

    /// One look for starved workers: whether a hungry lane (its last publish used its whole
    /// budget, or gave campaigns whole batches while they had more due: work is waiting) has
    /// run dry since, or a lane withheld for want of a worker got one. Cold and held lanes are
    /// looked at every time; the others, and the withheld ones, only when `usual` (the usual
    /// poll has come round).
    ///
    /// Topping a lane up at once, rather than at the next tick, keeps fast workers fed
    /// between ticks and shortens a cold start, without ever filling it deeper than its
    /// target. The caller keeps the poll's clock across everything else it does: restarted
    /// at each wake-up, a poll never came round while a tenant's transactional messages woke
    /// the scheduler more often than it, and every other lane waited for the next tick.
    pub async fn starving(&mut self, usual: bool) -> bool {
        let hungry = self.lanes.hungry();
        for provider in hungry {
            let quick = self.lanes.cold(provider) || self.lanes.held(provider);
            // Empty or not is all that is asked: the batch size does not matter.
            if (quick || usual) && matches!(self.publisher.lane_depth(provider, 1).await, Ok(0)) {
                return true;
            }
        }
        let withheld: Vec<Uuid> = self.withheld.iter().copied().collect();
        usual
            && !withheld.is_empty()
            && store::providers::smallest_allowances(&self.pool, &withheld)
                .await
                .is_ok_and(|rows| rows.iter().any(|&(_, allowance)| allowance > 0))
    }

    /// Whether the broker can be reached (the readiness check).
    pub async fn check_broker(&mut self) -> Result<(), PublishError> {
        self.publisher.check().await
    }

    #[tracing::instrument(name = "tick", skip_all, fields(tick = self.count))]
    pub async fn run(&mut self) -> Result<TickReport, TickError> {
        self.count += 1;
        // A tick measures again; if its sweep fails, top-ups must not go on planning from an
        // ever older measure.
        self.carried = None;
        let pool = &self.pool.clone();
        let started = Instant::now();
        // Activating due campaigns goes beside the sweep's statements too (see
        // `crate::sweep`): it writes scheduled campaigns, which they skip or leave alone.
        let (activated, swept) =
            tokio::join!(activate_due(pool), sweep::run(pool, self.requeue_after));
        phase_done("sweep", started);
        // The first failure ends the tick, once both are reported (see `sweep::keep`).
        let mut failed = None;
        sweep::keep(activated, &mut failed);
        let swept = sweep::keep(swept, &mut failed);
        if let Some(error) = failed {
            return Err(error.into());
        }
        let mut report = TickReport {
            swept,
            ..Default::default()
        };
        self.dispatch(Pass::Tick, &mut report).await?;

        tracing::debug!(
            depth = report.depth,
            budget = report.budget,
            campaigns = report.campaigns,
            published = report.published,
            "tick"
        );
        Ok(report)
    }

    /// Between ticks, after [`starved`](Self::starved): refills the hungry lanes up to their
    /// target depth, without the tick's sweeps or new drain measurements.
    #[tracing::instrument(name = "top_up", skip_all, fields(tick = self.count))]
    pub async fn top_up(&mut self) -> Result<TickReport, TickError> {
        let mut report = TickReport::default();
        self.dispatch(Pass::TopUp, &mut report).await?;
        Ok(report)
    }

    /// For transactional messages just accepted, or campaigns just started, through
    /// `providers`: refills those lanes now, as a top-up would (the same claim, fair plan
    /// and pace), so the work need not wait for the next tick. A campaign paused or
    /// cancelled, or message streams resumed by new credentials, wake their lanes too: what
    /// the top-ups planned from since the last measure ([`crate::carry`]) is dropped, so
    /// the next top-up measures again.
    #[tracing::instrument(name = "wake", skip_all, fields(tick = self.count))]
    pub async fn wake(&mut self, providers: &BTreeSet<Uuid>) -> Result<TickReport, TickError> {
        let mut report = TickReport::default();
        // Dropped before anything can fail: a wake may be a stop's.
        self.carried = None;
        // A campaign started now wakes its lanes too: it is made running here, not a tick
        // later.
        activate_due(&self.pool).await?;
        self.dispatch(Pass::Wake(providers), &mut report).await?;
        metrics::counter!(metrics_names::WAKES).increment(1);
        Ok(report)
    }

    /// Claims and publishes, lane by lane, each lane's budget, fairly across the tenants and
    /// campaigns in it; then what saturated primaries could not take, into their overflow
    /// lanes ([`routing`] decides).
    async fn dispatch(&mut self, pass: Pass<'_>, report: &mut TickReport) -> Result<(), TickError> {
        let pool = &self.pool.clone();
        let measure = Instant::now();
        // Carried to the next top-up only if this pass goes through (and is no wake).
        let carried = self.carried.take();
        let mut carry: Option<Carried> = None;
        let mut campaigns = match pass {
            Pass::Wake(providers) => {
                let woken: Vec<Uuid> = providers.iter().copied().collect();
                let mut measured = within(store::campaigns::dispatchable(
                    pool,
                    self.max_budget,
                    Some(&woken),
                ))
                .await?;
                tenant_lines::share(&mut measured, self.count);
                measured
            }
            Pass::Tick | Pass::TopUp => {
                let open = carry::open_breakers(within(store::pacing::open_breakers(pool)).await?);
                let next = match carried {
                    Some(carried) if pass == Pass::TopUp && carried.fits(&open) => carried,
                    _ => {
                        let mut measured =
                            within(store::campaigns::dispatchable(pool, self.max_budget, None))
                                .await?;
                        tenant_lines::share(&mut measured, self.count);
                        Carried::new(measured, open)
                    }
                };
                let campaigns = next.campaigns().to_vec();
                carry = Some(next);
                campaigns
            }
        };
        report.campaigns = campaigns.len();
        if pass == Pass::Tick {
            report.due_campaigns = campaigns.iter().map(|c| c.id).collect();
        }
        if matches!(pass, Pass::Tick | Pass::Wake(_)) {
            self.commitments = within(store::providers::commitments(pool))
                .await?
                .into_iter()
                .map(|row| (row.provider_id, Commitment::from(row)))
                .collect();
        }
        commitments::apply(&mut campaigns, &self.commitments);
        let Routes {
            primaries,
            involved,
        } = routing::routes(&campaigns);

        // Lanes no pass has measured yet (reading their pace below creates them).
        let unmeasured: BTreeSet<Uuid> = involved
            .iter()
            .copied()
            .filter(|&provider| !self.lanes.knows(provider))
            .collect();
        // A lane with nothing due any more is not hungry, nor a withheld one (a wake sees
        // only its own lanes, so it cannot tell): left so, a lane whose campaigns paused or
        // ran out during a top-up would be polled, and passed over, until the next tick.
        if matches!(pass, Pass::Tick | Pass::TopUp) {
            self.lanes.only_due(&involved);
            self.withheld.retain(|provider| involved.contains(provider));
        }
        if pass == Pass::Tick {
            // Overflow lanes' standings are judged once the tick knows what spills (below).
            self.turns
                .retain_lanes(|lane| lane.overflow || primaries.contains_key(&lane.provider));
        }
        // Rate limits are read once a tick (and for a wake, which may be a lane's first
        // pass); top-ups (only of lanes a tick has seen) keep the lanes' paces.
        if matches!(pass, Pass::Tick | Pass::Wake(_)) {
            let ids: Vec<Uuid> = involved.iter().copied().collect();
            let paces: BTreeMap<Uuid, f64> = within(store::providers::provider_paces(pool, &ids))
                .await?
                .into_iter()
                .collect();
            for &provider in &involved {
                self.lanes.set_pace(provider, paces.get(&provider).copied());
            }
        }
        let ids: Vec<Uuid> = involved.iter().copied().collect();
        let free_lines: BTreeMap<Uuid, i64> = within(store::providers::free_lines(pool, &ids))
            .await?
            .into_iter()
            .collect();
        // Read before anything is claimed: an error after the claims would strand them.
        let allowances: BTreeMap<Uuid, u32> =
            within(store::providers::smallest_allowances(pool, &ids))
                .await?
                .into_iter()
                .map(|(provider, allowance)| (provider, u32::try_from(allowance).unwrap_or(0)))
                .collect();
        // Recipients per AMQP message in each lane (see `message::per_message`).
        let per_message =
            |provider: Uuid| message::per_message(allowances.get(&provider).copied().unwrap_or(0));
        let mut budgets: BTreeMap<Uuid, u32> = BTreeMap::new();
        let mut depths: BTreeMap<Uuid, u64> = BTreeMap::new();
        for &provider in &involved {
            let lane = LaneState {
                known: !unmeasured.contains(&provider),
                needs_top_up: self.lanes.needs_top_up(provider),
                withheld: self.withheld.contains(&provider),
            };
            let how = budget::measure(pass.kind(provider), lane);
            if how == Measure::Skip {
                continue;
            }
            let depth = u64::from(
                self.publisher
                    .lane_depth(provider, per_message(provider))
                    .await?,
            );
            let measured = if how == Measure::Full {
                self.lanes.budget(provider, depth)
            } else {
                self.lanes.top_up(provider, depth, Instant::now())
            };
            let allowance = allowances.get(&provider).copied().unwrap_or(0);
            let cut = budget::cut(
                measured,
                depth,
                free_lines.get(&provider).copied(),
                allowance,
            );
            match cut {
                Budget::Open(_) => {
                    self.withheld.remove(&provider);
                }
                Budget::Withheld { wanted } => {
                    if wanted > 0 && self.withheld.insert(provider) {
                        tracing::info!(%provider, "no live worker may send to this lane yet; holding its work back");
                    }
                }
            }
            let budget = cut.open();
            depths.insert(provider, depth);
            report.depth += depth;
            report.budget += budget;
            budgets.insert(provider, budget);
        }

        phase_done("measure", measure);

        let claiming = Instant::now();
        let mut batch = Batch::default();
        let mut spill = Spill::default();
        for (provider, lane_campaigns) in &primaries {
            let Some(&budget) = budgets.get(provider) else {
                continue;
            };
            let before = batch.messages.len();
            let run = per_message(*provider);
            self.claim_lane(
                lane_campaigns,
                budget,
                *provider,
                Lane::Primary,
                run,
                &mut batch,
            )
            .await?;
            let mut placed: BTreeMap<Uuid, i64> = BTreeMap::new();
            for message in &batch.messages[before..] {
                *placed.entry(message.campaign_id).or_default() += 1;
            }
            spill.after_primary(
                lane_campaigns,
                budget,
                batch.messages.len() - before,
                self.lanes.at_pace(*provider),
                &placed,
            );
        }
        spill.open_primaries(&campaigns);
        if pass == Pass::Tick {
            // An overflow nothing spills into at a tick forgets its standings, as a primary
            // with nothing due does: kept while any campaign merely names it, one outage's
            // debts would weigh on the next, days later.
            self.turns
                .retain_lanes(|lane| !lane.overflow || spill.lanes.contains_key(&lane.provider));
        }
        for (provider, lane_campaigns) in &spill.lanes {
            let Some(&budget) = budgets.get(provider) else {
                continue;
            };
            let used = batch.lanes.iter().filter(|lane| *lane == provider).count();
            let left = routing::left_in_lane(budget, used);
            // A campaign failing over (its primary's breaker open) sends all its work here,
            // so it may hold this lane as a primary's campaigns do ([`holds_lane`]).
            let run = per_message(*provider);
            self.claim_lane(
                lane_campaigns,
                left,
                *provider,
                Lane::Overflow,
                run,
                &mut batch,
            )
            .await?;
        }

        phase_done("claim", claiming);

        let publishing = Instant::now();
        let confirmed = match self.publisher.publish(&batch.messages, per_message).await {
            Ok(confirmed) => confirmed,
            Err(error) => {
                self.abandon(&batch).await;
                for (&provider, &budget) in &budgets {
                    self.lanes.published(provider, 0, budget, false);
                }
                return Err(error.into());
            }
        };
        let unconfirmed: Vec<(i64, i32)> = batch
            .claims
            .iter()
            .zip(&confirmed)
            .filter(|(_, ok)| !**ok)
            .map(|(claim, _)| *claim)
            .collect();
        if !unconfirmed.is_empty() {
            self.give_back(&batch, Some(&confirmed));
        }
        release_or_log(pool, &unconfirmed).await;
        for (&provider, &budget) in &budgets {
            let published = batch
                .lanes
                .iter()
                .zip(&confirmed)
                .filter(|(lane, ok)| **lane == provider && **ok)
                .count();
            self.lanes.published(
                provider,
                u32::try_from(published).unwrap_or(u32::MAX),
                budget,
                batch.held.contains(&provider),
            );
            let rate = self.lanes.rate(provider);
            let lane = provider.to_string();
            metrics::counter!(metrics_names::LANE_PUBLISHED, "lane" => lane.clone())
                .increment(published as u64);
            metrics::gauge!(metrics_names::LANE_DRAIN_RATE, "lane" => lane.clone()).set(rate);
            if let Some(&depth) = depths.get(&provider) {
                metrics::gauge!(metrics_names::LANE_DRAIN, "lane" => lane)
                    .set(backpressure::drain_seconds(depth, rate));
            }
            tracing::debug!(%provider, budget, published, drain_rate = rate as u64, "lane");
        }
        report.published = batch.messages.len() - unconfirmed.len();
        report.unconfirmed = unconfirmed.len();
        // What went back to pending is due again, which the carried counts would not show.
        if let Some(mut next) = carry
            && unconfirmed.is_empty()
        {
            next.after(&batch.asked);
            self.carried = Some(next);
        }
        phase_done("publish", publishing);
        Ok(())
    }

    /// Gives back to the campaigns' standings ([`crate::turns`]) the messages of `batch`
    /// that go back to pending: all of them, or with `confirmed`, those the broker did not
    /// confirm.
    fn give_back(&mut self, batch: &Batch, confirmed: Option<&[bool]>) {
        let mut unserved: BTreeMap<(TurnsLane, Uuid), u32> = BTreeMap::new();
        for (i, message) in batch.messages.iter().enumerate() {
            let published = confirmed.is_some_and(|c| c.get(i).copied().unwrap_or(false));
            if !published {
                *unserved
                    .entry((batch.planned[i], message.campaign_id))
                    .or_default() += 1;
            }
        }
        for ((lane, campaign), n) in unserved {
            self.turns.refund(lane, campaign, n);
        }
    }

    /// [`claim_plan`](Self::claim_plan); if it fails, the pass is abandoned
    /// ([`abandon`](Self::abandon)). Rows the failing plan claimed but had not added to
    /// `batch` yet are the sweeper's, as any claim whose message never went out.
    async fn claim_lane(
        &mut self,
        campaigns: &[ActiveCampaign],
        budget: u32,
        via: Uuid,
        lane: Lane,
        run: usize,
        batch: &mut Batch,
    ) -> Result<(), TickError> {
        let claimed = self
            .claim_plan(campaigns, budget, via, lane, run, batch)
            .await;
        if claimed.is_err() {
            self.abandon(batch).await;
        }
        claimed
    }

    /// A pass that cannot go on: every claim `batch` holds goes back to pending, and the
    /// campaigns' standings get back what was charged for them.
    async fn abandon(&mut self, batch: &Batch) {
        self.give_back(batch, None);
        release_or_log(&self.pool, &batch.claims).await;
    }

    /// Plans the fair split of `budget` over `campaigns`, claims each campaign's share and
    /// appends the messages (to provider `via`'s lane) to `batch` in the plan's interleaved
    /// order, a campaign's recipients in runs of up to `run` (the lane's AMQP message).
    /// Small shares become [`crate::turns`], with standings of the primary lane or of the
    /// overflow lane (what spilled into it).
    ///
    /// If a campaign held the lane to its batch ([`holds_lane`]), the lane is hungry even if
    /// the plan left some of its budget unused: `batch.held` notes it.
    async fn claim_plan(
        &mut self,
        campaigns: &[ActiveCampaign],
        budget: u32,
        via: Uuid,
        lane: Lane,
        run: usize,
        batch: &mut Batch,
    ) -> Result<(), TickError> {
        let demands: Vec<Demand> = campaigns
            .iter()
            .map(|c| Demand {
                campaign_id: c.id,
                tenant_id: c.tenant_id,
                tenant_weight: u32::try_from(c.tenant_weight).unwrap_or(1),
                campaign_weight: u32::try_from(c.campaign_weight).unwrap_or(1),
                due: u32::try_from(c.due).unwrap_or(u32::MAX),
                urgent: c.transactional,
            })
            .collect();
        let planned = match lane {
            Lane::Primary => TurnsLane::primary(via),
            Lane::Overflow => TurnsLane::overflow(via),
        };
        let counts = self.turns.take(planned, &demands, budget, self.count);
        let run = u32::try_from(run).unwrap_or(u32::MAX);
        let order = fairness::order(&demands, &counts, self.count, run);

        let wanted: Vec<claim::Wanted> = counts
            .iter()
            .enumerate()
            .filter(|&(_, &count)| count > 0)
            .map(|(index, &count)| claim::Wanted {
                campaign_id: campaigns[index].id,
                count: i64::from(count),
                retries: campaigns[index].retries,
            })
            .collect();
        let rows = match within(claim::claim(&self.pool, &wanted)).await {
            Ok(rows) => rows,
            Err(error) => {
                for w in &wanted {
                    self.turns
                        .refund(planned, w.campaign_id, u32::try_from(w.count).unwrap_or(0));
                }
                return Err(error.into());
            }
        };
        metrics::counter!(metrics_names::CLAIMED).increment(rows.len() as u64);
        let position: BTreeMap<Uuid, usize> = campaigns
            .iter()
            .enumerate()
            .map(|(index, c)| (c.id, index))
            .collect();
        let mut claimed: Vec<VecDeque<Claimed>> = vec![VecDeque::new(); campaigns.len()];
        for row in rows {
            if let Some(&index) = position.get(&row.campaign_id) {
                claimed[index].push_back(row);
            }
        }
        for queue in claimed.iter().filter(|q| !q.is_empty()) {
            metrics::histogram!(metrics_names::BATCH_SIZE).record(queue.len() as f64);
        }
        for (index, &count) in counts.iter().enumerate().filter(|&(_, &count)| count > 0) {
            let found = claimed[index].len() as u64;
            batch
                .asked
                .add(campaigns[index].id, u64::from(count), found);
        }
        for (index, &count) in counts.iter().enumerate() {
            let short = count.saturating_sub(u32::try_from(claimed[index].len()).unwrap_or(0));
            if short > 0 {
                self.turns.refund(planned, campaigns[index].id, short);
            }
        }
        let held = campaigns
            .iter()
            .zip(&counts)
            .zip(&claimed)
            .any(|((campaign, &given), found)| holds_lane(lane, campaign, given, found.len()));
        if held {
            batch.held.insert(via);
        }

        let mut unrenderable = Vec::new();
        // Per campaign: how many failed, and the first reason.
        let mut failed: BTreeMap<Uuid, (usize, String)> = BTreeMap::new();
        for &index in &order {
            let Some(mut row) = claimed[index].pop_front() else {
                continue;
            };
            let campaign = &campaigns[index];
            match build_message(campaign, via, &mut row) {
                Ok(message) => {
                    batch.claims.push((row.id, row.dispatch_seq));
                    batch.lanes.push(via);
                    batch.planned.push(planned);
                    batch.messages.push(message);
                }
                Err(reason) => {
                    failed
                        .entry(campaign.id)
                        .or_insert_with(|| (0, reason.clone()))
                        .0 += 1;
                    unrenderable.push(claim::Unrenderable {
                        id: row.id,
                        seq: row.dispatch_seq,
                        error: reason,
                    });
                }
            }
        }
        for (campaign_id, (count, reason)) in &failed {
            tracing::warn!(%campaign_id, count, %reason, "recipients cannot be dispatched: failed");
        }
        within(claim::fail_unrenderable(&self.pool, &unrenderable)).await?;
        Ok(())
    }
}

/// Whether `campaign`, given `given` of the lane's plan and found `found` recipients for
/// them, held the lane to its batch: it was given, and found, its whole due count (which
/// is capped at its `batch_size`) while it has more due. In an overflow lane only a
/// campaign failing over (its primary's breaker open) counts: what spills from a primary at
/// its rate limit is the rest of the primary's pass, and comes again with the primary's next
/// pass (that lane, its budget used, is hungry anyway).
fn holds_lane(lane: Lane, campaign: &ActiveCampaign, given: u32, found: usize) -> bool {
    (lane == Lane::Primary || campaign.primary_open)
        && campaign.more_due
        && i64::from(given) >= campaign.due
        && found >= given as usize
}

/// Makes the campaigns whose start has come running.
async fn activate_due(pool: &PgPool) -> Result<(), sqlx::Error> {
    for (campaign_id, tenant_id) in within(store::campaigns::activate_due(pool)).await? {
        tracing::info!(%campaign_id, %tenant_id, "campaign started");
    }
    Ok(())
}

/// Which kind of lane a plan is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// The lane campaigns are planned in first: all of the lane's campaigns are in the plan.
    Primary,
    /// Work spilled from saturated primaries: only the campaigns that spilled.
    Overflow,
}

/// What a dispatch publishes: per message, its claim and its lane.
#[derive(Default)]
struct Batch {
    messages: Vec<DispatchMessage>,
    claims: Vec<(i64, i32)>,
    lanes: Vec<Uuid>,
    /// The standings ([`crate::turns`]) the message was charged to: its lane's, as a
    /// primary or as an overflow.
    planned: Vec<TurnsLane>,
    /// Lanes in which a campaign was given, and found, a whole batch while it has more due.
    held: BTreeSet<Uuid>,
    /// What the claims asked for and found, per campaign.
    asked: carry::Claims,
}

fn build_message(
    campaign: &ActiveCampaign,
    via: Uuid,
    row: &mut Claimed,
) -> Result<DispatchMessage, String> {
    let channel: Channel = campaign.channel.parse().map_err(|e| format!("{e}"))?;
    let variables = row.read_variables()?;
    let body = template::render(&campaign.template, &variables).map_err(|e| e.to_string())?;
    Ok(DispatchMessage {
        v: FORMAT_VERSION,
        recipient_id: row.id,
        seq: row.dispatch_seq,
        tenant_id: campaign.tenant_id,
        campaign_id: campaign.id,
        provider_id: via,
        channel,
        // Taken, not copied: the row is done with once its message is built.
        to: std::mem::take(&mut row.address),
        body,
        // A transactional message may expire before its stream (which never does).
        expires_at: match (campaign.expires_at, row.expires_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
        variables,
    })
}

/// Records how long a phase of a dispatch took since `started`.
fn phase_done(phase: &'static str, started: Instant) {
    let took = started.elapsed();
    metrics::histogram!(metrics_names::TICK_PHASE_DURATION, "phase" => phase)
        .record(took.as_secs_f64());
    tracing::debug!(phase, took_ms = took.as_secs_f64() * 1e3, "tick phase");
}

/// Best effort: if the database is unreachable, the sweeper hands these back later.
async fn release_or_log(pool: &PgPool, claims: &[(i64, i32)]) {
    if claims.is_empty() {
        return;
    }
    match within(claim::release(pool, claims)).await {
        // `released` leaves out first attempts whose busy campaign is owed its cursor move
        // (made at the next sweep): the claims handed back are `count`.
        Ok(released) => tracing::warn!(
            released,
            count = claims.len(),
            "unpublished claims returned to pending"
        ),
        Err(error) => {
            tracing::warn!(%error, count = claims.len(), "cannot release claims now; the sweeper will")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::tests::campaign;

    #[test]
    fn a_campaign_given_and_found_its_whole_batch_with_more_due_holds_its_lane() {
        let mut more = campaign(1, 10, Some(30), 100);
        more.more_due = true;
        assert!(holds_lane(Lane::Primary, &more, 100, 100));
        // Given less than its batch (the lane's budget ran out first), or found less.
        assert!(!holds_lane(Lane::Primary, &more, 60, 60));
        assert!(!holds_lane(Lane::Primary, &more, 100, 70));
        // Its batch was all it had.
        let last = campaign(2, 10, Some(30), 100);
        assert!(!holds_lane(Lane::Primary, &last, 100, 100));
    }

    #[test]
    fn only_a_campaign_failing_over_holds_an_overflow_lane() {
        // Spilled from a primary at its pace: the rest of that primary's pass.
        let mut spilled = campaign(1, 10, Some(30), 40);
        spilled.more_due = true;
        assert!(!holds_lane(Lane::Overflow, &spilled, 40, 40));
        let mut failing_over = spilled.clone();
        failing_over.primary_open = true;
        assert!(holds_lane(Lane::Overflow, &failing_over, 40, 40));
    }
}
