//! One scheduler tick: activate, recover, then per provider lane measure, plan and claim;
//! publish; complete.

use crate::claim::{self, ActiveCampaign, Claimed};
use crate::fairness::{self, Demand};
use crate::lanes::Lanes;
use crate::publish::{PublishError, Publisher};
use crate::sweeper;
use herald_shared::domain::Channel;
use herald_shared::queue::message::{DispatchMessage, FORMAT_VERSION};
use herald_shared::template;
use sqlx::PgPool;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum TickError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// What a tick did, for logs and tests.
#[derive(Debug, Default, Clone)]
pub struct TickReport {
    pub depth: u64,
    pub budget: u32,
    pub campaigns: usize,
    pub published: usize,
    pub unconfirmed: usize,
    pub requeued: u64,
    pub recovered: u64,
    /// Waiting recipients of expired or cancelled campaigns that were ended.
    pub ended: u64,
}

pub struct Ticker {
    pool: PgPool,
    publisher: Publisher,
    lanes: Lanes,
    /// Most due recipients counted per campaign (no lane may publish more in one go).
    max_budget: u32,
    requeue_after: Duration,
    count: usize,
}

/// Whether a dispatch measures every lane (a tick) or refills the hungry ones (a top-up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    Tick,
    TopUp,
}

impl Ticker {
    pub fn new(
        pool: PgPool,
        publisher: Publisher,
        lanes: Lanes,
        max_budget: u32,
        requeue_after: Duration,
    ) -> Self {
        Self {
            pool,
            publisher,
            lanes,
            max_budget,
            requeue_after,
            count: 0,
        }
    }

    /// Resolves when workers are starved: a lane's last publish used its whole budget (work
    /// is waiting) and the lane has run dry since. Checked every `poll`; pending forever when
    /// no lane is hungry, so an idle scheduler does not poll the broker.
    ///
    /// Topping a lane up at once, rather than at the next tick, keeps fast workers fed
    /// between ticks and shortens a cold start, without ever filling it deeper than its
    /// target.
    pub async fn starved(&mut self, poll: Duration) {
        let hungry = self.lanes.hungry();
        if hungry.is_empty() {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(poll).await;
            for &provider in &hungry {
                if matches!(self.publisher.lane_depth(provider).await, Ok(0)) {
                    return;
                }
            }
        }
    }

    #[tracing::instrument(name = "tick", skip_all, fields(tick = self.count))]
    pub async fn run(&mut self) -> Result<TickReport, TickError> {
        self.count += 1;
        let pool = &self.pool.clone();
        for (campaign_id, tenant_id) in claim::activate_due_campaigns(pool).await? {
            tracing::info!(%campaign_id, %tenant_id, "campaign started");
        }
        let mut report = TickReport {
            requeued: sweeper::requeue_stale_claims(pool, self.requeue_after).await?,
            recovered: sweeper::recover_expired_leases(pool).await?,
            ended: sweeper::end_waiting_recipients(pool).await?,
            ..Default::default()
        };
        if self.count % 30 == 1 {
            sweeper::trim_send_rate(pool).await?;
        }
        if report.requeued + report.recovered > 0 {
            tracing::warn!(
                requeued = report.requeued,
                recovered = report.recovered,
                "recovered lost dispatches"
            );
        }

        self.dispatch(Pass::Tick, &mut report).await?;

        for (campaign_id, tenant_id) in sweeper::complete_finished_campaigns(pool).await? {
            tracing::info!(%campaign_id, %tenant_id, "campaign completed");
        }
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

    /// Claims and publishes, lane by lane, each lane's budget, fairly across the tenants and
    /// campaigns in it.
    async fn dispatch(&mut self, pass: Pass, report: &mut TickReport) -> Result<(), TickError> {
        let pool = &self.pool.clone();
        let campaigns = claim::active_campaigns(pool, self.max_budget).await?;
        report.campaigns = campaigns.len();
        let mut by_lane: BTreeMap<Uuid, Vec<ActiveCampaign>> = BTreeMap::new();
        for campaign in campaigns {
            by_lane
                .entry(campaign.provider_id)
                .or_default()
                .push(campaign);
        }

        // (lane, budget, how many of `messages` are its)
        let mut lanes: Vec<(Uuid, u32, usize)> = Vec::new();
        let mut messages = Vec::new();
        let mut claims = Vec::new();
        for (provider, campaigns) in &by_lane {
            if pass == Pass::TopUp && !self.lanes.needs_top_up(*provider) {
                continue;
            }
            let depth = match self.publisher.lane_depth(*provider).await {
                Ok(depth) => u64::from(depth),
                Err(error) => {
                    release_or_log(pool, &claims).await;
                    return Err(error.into());
                }
            };
            let budget = match pass {
                Pass::Tick => self.lanes.budget(*provider, depth),
                Pass::TopUp => self.lanes.top_up(*provider, depth, Instant::now()),
            };
            report.depth += depth;
            report.budget += budget;
            match self.claim_plan(campaigns, budget).await {
                Ok((lane_messages, lane_claims)) => {
                    lanes.push((*provider, budget, lane_messages.len()));
                    messages.extend(lane_messages);
                    claims.extend(lane_claims);
                }
                Err(error) => {
                    release_or_log(pool, &claims).await;
                    return Err(error);
                }
            }
        }

        let confirmed = match self.publisher.publish(&messages).await {
            Ok(confirmed) => confirmed,
            Err(error) => {
                release_or_log(pool, &claims).await;
                for &(provider, budget, _) in &lanes {
                    self.lanes.published(provider, 0, budget);
                }
                return Err(error.into());
            }
        };
        let unconfirmed: Vec<(i64, i32)> = claims
            .iter()
            .zip(&confirmed)
            .filter(|(_, ok)| !**ok)
            .map(|(claim, _)| *claim)
            .collect();
        release_or_log(pool, &unconfirmed).await;
        let mut offset = 0;
        for &(provider, budget, count) in &lanes {
            let published = confirmed[offset..offset + count]
                .iter()
                .filter(|ok| **ok)
                .count();
            offset += count;
            self.lanes.published(
                provider,
                u32::try_from(published).unwrap_or(u32::MAX),
                budget,
            );
            tracing::debug!(%provider, budget, published, drain_rate = self.lanes.rate(provider) as u64, "lane");
        }
        report.published = messages.len() - unconfirmed.len();
        report.unconfirmed = unconfirmed.len();
        Ok(())
    }

    /// Plans the fair split, claims each campaign's share and builds the messages in the
    /// plan's interleaved order. Returns the messages and, for each, its (recipient, seq).
    async fn claim_plan(
        &self,
        campaigns: &[ActiveCampaign],
        budget: u32,
    ) -> Result<(Vec<DispatchMessage>, Vec<(i64, i32)>), TickError> {
        let demands: Vec<Demand> = campaigns
            .iter()
            .map(|c| Demand {
                campaign_id: c.id,
                tenant_id: c.tenant_id,
                tenant_weight: u32::try_from(c.tenant_weight).unwrap_or(1),
                campaign_weight: u32::try_from(c.campaign_weight).unwrap_or(1),
                due: u32::try_from(c.due).unwrap_or(u32::MAX),
            })
            .collect();
        let plan = fairness::plan(&demands, budget, self.count);

        let mut claimed: Vec<VecDeque<Claimed>> = vec![VecDeque::new(); campaigns.len()];
        for (index, &count) in plan.counts.iter().enumerate() {
            if count == 0 {
                continue;
            }
            match claim::claim(&self.pool, campaigns[index].id, i64::from(count)).await {
                Ok(rows) => claimed[index] = rows.into(),
                Err(error) => {
                    let taken: Vec<(i64, i32)> = claimed
                        .iter()
                        .flatten()
                        .map(|c| (c.id, c.dispatch_seq))
                        .collect();
                    release_or_log(&self.pool, &taken).await;
                    return Err(error.into());
                }
            }
        }

        let mut messages = Vec::with_capacity(plan.order.len());
        let mut claims = Vec::with_capacity(plan.order.len());
        for &index in &plan.order {
            let Some(row) = claimed[index].pop_front() else {
                continue;
            };
            let campaign = &campaigns[index];
            match build_message(campaign, &row) {
                Ok(message) => {
                    claims.push((row.id, row.dispatch_seq));
                    messages.push(message);
                }
                Err(reason) => {
                    tracing::warn!(campaign_id = %campaign.id, recipient_id = row.id, %reason, "recipient cannot be dispatched");
                    claim::fail_unrenderable(&self.pool, row.id, row.dispatch_seq, &reason).await?;
                }
            }
        }
        Ok((messages, claims))
    }
}

fn build_message(campaign: &ActiveCampaign, row: &Claimed) -> Result<DispatchMessage, String> {
    let channel: Channel = campaign.channel.parse().map_err(|e| format!("{e}"))?;
    let body = template::render(&campaign.template, &row.variables).map_err(|e| e.to_string())?;
    Ok(DispatchMessage {
        v: FORMAT_VERSION,
        recipient_id: row.id,
        seq: row.dispatch_seq,
        tenant_id: campaign.tenant_id,
        campaign_id: campaign.id,
        provider_id: campaign.provider_id,
        channel,
        to: row.address.clone(),
        body,
        expires_at: campaign.expires_at,
    })
}

/// Best effort: if the database is unreachable, the sweeper hands these back later.
async fn release_or_log(pool: &PgPool, claims: &[(i64, i32)]) {
    if claims.is_empty() {
        return;
    }
    match claim::release(pool, claims).await {
        Ok(released) => tracing::warn!(released, "unpublished claims returned to pending"),
        Err(error) => {
            tracing::warn!(%error, count = claims.len(), "cannot release claims now; the sweeper will")
        }
    }
}
