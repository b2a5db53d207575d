//! A lane's budget in one dispatch pass: whether the pass measures the lane at all, and how
//! the drain-measured budget ([`crate::lanes`]) is cut by the provider's free lines and by
//! the fleet's allowance. Pure decisions; the tick reads the inputs and applies them.

/// Which dispatch pass asks (the tick's three kinds of pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassKind {
    /// A tick: every lane with work due.
    Tick,
    /// A top-up between ticks: the lanes that ran dry, and those withheld for want of a
    /// worker.
    TopUp,
    /// A wake for newly accepted transactional messages, a campaign started now, one
    /// paused or cancelled, or message streams resumed; `woken`: this lane is one of theirs
    /// (a known one is topped up, whatever woke it).
    Wake { woken: bool },
}

/// What the pass knows of a lane before it measures it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaneState {
    /// An earlier pass has measured the lane.
    pub known: bool,
    /// The lane used its whole budget, or gave campaigns whole batches while they had more
    /// due, and has run dry since ([`crate::lanes::Lanes::needs_top_up`]).
    pub needs_top_up: bool,
    /// The lane's work is held back: no live worker could send to it.
    pub withheld: bool,
}

/// How a pass measures a lane's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// Not at all: not this pass's lane.
    Skip,
    /// As a tick does: a tick's worth of the lane's drain, less its depth.
    Full,
    /// What the lane drained since it was last filled.
    TopUp,
}

pub fn measure(pass: PassKind, lane: LaneState) -> Measure {
    match pass {
        PassKind::Tick => Measure::Full,
        PassKind::TopUp if lane.needs_top_up || lane.withheld => Measure::TopUp,
        PassKind::TopUp | PassKind::Wake { woken: false } => Measure::Skip,
        // A lane no pass has measured yet starts as a tick would start it.
        PassKind::Wake { woken: true } if !lane.known => Measure::Full,
        PassKind::Wake { woken: true } => Measure::TopUp,
    }
}

/// A lane's budget once cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Claim and publish up to this many recipients.
    Open(u32),
    /// No live worker may send to the lane: nothing is published that nobody can take (the
    /// recipients wait in PostgreSQL, and batches would be cut for the first worker to come).
    /// `wanted`: what the lane would have been given.
    Withheld { wanted: u32 },
}

impl Budget {
    /// What may be claimed into the lane.
    pub fn open(self) -> u32 {
        match self {
            Budget::Open(budget) => budget,
            Budget::Withheld { .. } => 0,
        }
    }
}

/// Cuts a lane's `measured` budget: no more calls than the provider has free lines
/// (`free_lines`, for a provider that caps its live calls), counting the `depth` already
/// waiting in the lane; nothing while the fleet's smallest `allowance` for the provider is 0.
pub fn cut(measured: u32, depth: u64, free_lines: Option<i64>, allowance: u32) -> Budget {
    let budget = cap_by_free_lines(measured, depth, free_lines);
    if allowance > 0 {
        Budget::Open(budget)
    } else {
        Budget::Withheld { wanted: budget }
    }
}

/// A lane's budget, for a provider with a cap on live calls: no more calls than it has free
/// lines, counting the `depth` calls already waiting in its lane.
fn cap_by_free_lines(budget: u32, depth: u64, free_lines: Option<i64>) -> u32 {
    match free_lines {
        None => budget,
        Some(free) => {
            let free = u64::try_from(free).unwrap_or(0).saturating_sub(depth);
            budget.min(u32::try_from(free).unwrap_or(u32::MAX))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRESH: LaneState = LaneState {
        known: false,
        needs_top_up: false,
        withheld: false,
    };
    const KNOWN: LaneState = LaneState {
        known: true,
        ..FRESH
    };

    #[test]
    fn a_tick_measures_every_lane_in_full() {
        for lane in [FRESH, KNOWN] {
            assert_eq!(measure(PassKind::Tick, lane), Measure::Full);
        }
    }

    #[test]
    fn a_top_up_refills_only_dry_or_withheld_lanes() {
        assert_eq!(measure(PassKind::TopUp, KNOWN), Measure::Skip);
        let dry = LaneState {
            needs_top_up: true,
            ..KNOWN
        };
        assert_eq!(measure(PassKind::TopUp, dry), Measure::TopUp);
        let withheld = LaneState {
            withheld: true,
            ..KNOWN
        };
        assert_eq!(measure(PassKind::TopUp, withheld), Measure::TopUp);
    }

    #[test]
    fn a_wake_measures_its_own_lanes_only_and_a_new_one_in_full() {
        let dry = LaneState {
            needs_top_up: true,
            ..KNOWN
        };
        assert_eq!(measure(PassKind::Wake { woken: false }, dry), Measure::Skip);
        assert_eq!(
            measure(PassKind::Wake { woken: true }, FRESH),
            Measure::Full
        );
        assert_eq!(
            measure(PassKind::Wake { woken: true }, KNOWN),
            Measure::TopUp
        );
    }

    #[test]
    fn free_lines_cap_a_budget_net_of_the_calls_already_waiting() {
        assert_eq!(cut(100, 40, None, 5), Budget::Open(100));
        assert_eq!(cut(100, 40, Some(50), 5), Budget::Open(10));
        assert_eq!(cut(5, 0, Some(50), 5), Budget::Open(5));
        assert_eq!(cut(100, 60, Some(50), 5), Budget::Open(0));
        // Lines over-counted (more live than allowed) never make a budget.
        assert_eq!(cut(100, 0, Some(-3), 5), Budget::Open(0));
    }

    #[test]
    fn a_lane_no_worker_may_send_to_gets_nothing() {
        let withheld = cut(100, 40, Some(50), 0);
        assert_eq!(withheld, Budget::Withheld { wanted: 10 });
        assert_eq!(withheld.open(), 0);
        assert_eq!(cut(100, 0, None, 1).open(), 100);
    }
}
