//! The fast path of transactional messages.
//!
//! When the admin accepts messages it notifies [`CHANNEL`] (in the same transaction, so the
//! notification is delivered only once they are committed) with each message's provider.
//! The leading scheduler then refills that provider's lane at once, through the same claim,
//! fair plan and pacing as a tick, instead of at the next tick. A notification lost to a
//! dropped connection costs only that: the next tick dispatches the message.

/// The PostgreSQL `LISTEN`/`NOTIFY` channel; the payload is a provider id.
pub const CHANNEL: &str = "herald_wake";
