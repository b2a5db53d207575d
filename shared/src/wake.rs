//! The fast path of transactional messages and of campaigns started now.
//!
//! When the admin accepts messages it notifies [`CHANNEL`] (in the same transaction, so the
//! notification is delivered only once they are committed) with each message's provider;
//! when a campaign is started (or resumed) to send now, with its providers. The leading
//! scheduler then makes due campaigns running and refills those providers' lanes at once,
//! through the same claim, fair plan and pacing as a tick, instead of at the next tick. A
//! campaign paused or cancelled notifies its providers too, and so do message streams
//! resumed by new credentials: the scheduler plans its top-ups between ticks from what it
//! last measured, and after a wake its next top-up measures every campaign again. A
//! notification lost to a dropped connection costs only that: the next tick dispatches the
//! work (and measures again).

/// The PostgreSQL `LISTEN`/`NOTIFY` channel; the payload is a provider id.
pub const CHANNEL: &str = "herald_wake";

/// How the leading scheduler listens to it.
pub const LISTEN: crate::listen::Channel = crate::listen::Channel {
    name: CHANNEL,
    listening: "listening for wake-ups",
    unavailable: "wake-ups unavailable for now; ticks still dispatch everything",
};
