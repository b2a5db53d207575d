//! Integration tests whose assertions depend on timing at the provider (requests per
//! 1-second window, a provider kept at its rate limit): a test binary of their own, because
//! cargo runs test binaries one after another, so nothing else competes for this 2-core
//! machine while they run. Within the binary they take turns too, through [`ALONE`].

mod overflow;
mod rate_limit;

/// Held for the whole of each test here, so that they run one at a time.
pub static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
