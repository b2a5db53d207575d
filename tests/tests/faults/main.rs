//! The fault suite: runs of thousands of recipients with faults injected underneath (lost
//! answers, killed workers, …), each classifying what the provider saw. A test binary of its
//! own, so that its load does not disturb the timing-sensitive integration tests (cargo runs
//! test binaries one after another).

mod ambiguity;
