//! The fault suite: runs of thousands of recipients with faults injected underneath (killed
//! workers and schedulers, a broker or database restarted, networks cut, a failing provider,
//! poison messages), each classifying what the provider saw. A test binary of its own, so
//! that its load does not disturb the timing-sensitive integration tests (cargo runs test
//! binaries one after another); its scenarios take turns ([`suite::ALONE`]).

mod ambiguity;
mod scenarios;
mod soak;
mod suite;
