//! Herald's shared library: what the scheduler, the workers and the tools agree on.
//!
//! - [`config`]: command-line / environment configuration common to every service.
//! - [`telemetry`]: tracing set-up.
//! - [`domain`]: channels, campaign and recipient states, and which states are terminal.
//! - [`db`]: connecting to PostgreSQL and running the migrations.
//! - [`queue`]: RabbitMQ topology and the dispatch message format.
//! - [`backoff`]: the retry schedule.
//! - [`template`]: rendering a message template with a recipient's variables.
//! - [`catalog`]: creating tenants, providers, campaigns and their recipients.
//! - [`progress`]: per-campaign progress.
//! - [`provider_config`]: provider kinds and their typed, validated settings and credentials.

pub mod backoff;
pub mod catalog;
pub mod config;
pub mod db;
pub mod domain;
pub mod progress;
pub mod provider_config;
pub mod queue;
pub mod rate_limit;
pub mod shutdown;
pub mod telemetry;
pub mod template;
