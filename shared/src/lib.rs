//! Herald's shared library: what the scheduler, the workers and the tools agree on.
//!
//! - [`config`]: command-line / environment configuration common to every service.
//! - [`telemetry`]: tracing set-up; [`ops`]: metrics, liveness and readiness.
//! - [`domain`]: channels, campaign and recipient states, and which states are terminal.
//! - [`db`]: connecting to PostgreSQL and running the migrations.
//! - [`queue`]: RabbitMQ topology and the dispatch message format.
//! - [`backoff`]: the retry schedule; [`batch`]: many small database requests coalesced into
//!   one statement.
//! - [`template`]: rendering a message template with a recipient's variables.
//! - [`delivery`]: receipts' statuses and their ranking; [`signature`]: how providers sign
//!   the webhooks that carry them (storing and applying receipts is `herald_store`'s), and
//!   how Herald signs the [`status_event`]s it posts to tenants' webhooks.
//! - [`provider_config`]: provider kinds and their typed, validated settings and credentials.
//! - [`wake`]: the notification that dispatches a transactional message before the next tick.

pub mod backoff;
pub mod batch;
pub mod config;
pub mod db;
pub mod delivery;
pub mod domain;
pub mod listen;
pub mod ops;
pub mod provider_changes;
pub mod provider_config;
pub mod public_address;
pub mod queue;
pub mod rate_limit;
pub mod sealed;
pub mod serve;
pub mod shutdown;
pub mod signature;
pub mod status_event;
pub mod telemetry;
pub mod template;
pub mod wake;
