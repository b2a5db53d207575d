//! The fast path of transactional messages and of campaigns started now.
//!
//! When the admin accepts messages it notifies [`CHANNEL`] (in the same transaction, so the
//! notification is delivered only once they are committed) with each message's provider;
//! when a campaign is started (or resumed) to send now, with its providers. The leading
//! scheduler then makes due campaigns running and refills those providers' lanes at once,
//! through the same claim, fair plan and pacing as a tick, instead of at the next tick. A
//! campaign paused or cancelled notifies its providers too: a wake makes the scheduler
//! measure its campaigns again, rather than plan its top-ups from what it measured at the
//! tick. A notification lost to a dropped connection costs only that: the next tick
//! dispatches the work (or measures again).

/// The PostgreSQL `LISTEN`/`NOTIFY` channel; the payload is a provider id.
pub const CHANNEL: &str = "herald_wake";
