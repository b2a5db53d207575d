//! Integration tests whose assertions depend on timing (requests per 1-second window, a
//! provider kept at its rate limit, a newcomer's first send within two ticks): a test binary of their own, because
//! cargo runs test binaries one after another, so nothing else competes for this 2-core
//! machine while they run. Within the binary they take turns too, through [`ALONE`].
//! `scripts/test.sh` runs them on release binaries (`cargo test --release`), as Herald is
//! deployed: a debug build's own stalls bunch requests into some 1-second windows.

mod newcomer;
mod overflow;
mod rate_limit;

/// Held for the whole of each test here, so that they run one at a time.
pub static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The busiest 1-second window the simulator saw (its `/control/stats`), asserted to be at
/// most `limit`.
pub fn busiest_within(stats: &serde_json::Value, limit: u64) -> u64 {
    let busiest = stats["max_requests_in_any_1s_window"]
        .as_u64()
        .unwrap_or(u64::MAX);
    assert!(
        busiest <= limit,
        "{busiest} requests in one 1-second window (limit {limit})"
    );
    busiest
}
