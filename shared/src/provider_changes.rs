//! Providers changed: a row trigger of `providers` (migration
//! `20261229000004_provider_changes`) notifies [`CHANNEL`] with the provider's id when its
//! credentials, replaced credentials, settings, kind or endpoint change, delivered once the
//! change is committed. Each receiver forgets its copy of that provider then, so a rotated
//! secret checks the very next callback signed with it. A notification lost to a dropped
//! connection costs only what the receiver did before: a refused signature reads the
//! provider again (at most every 2 s), and every copy is read again within 30 s.

use crate::listen::Channel;

/// The PostgreSQL `LISTEN`/`NOTIFY` channel; the payload is a provider id.
pub const CHANNEL: &str = "herald_providers";

/// How the receivers listen to it.
pub const LISTEN: Channel = Channel {
    name: CHANNEL,
    listening: "listening for providers changed",
    unavailable: "providers changed unheard for now; a refused signature still reads its provider again",
};
