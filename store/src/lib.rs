//! Herald's store: the statements every process runs on PostgreSQL, grouped by what they
//! own. The scheduler, the worker and the admin keep orchestration and pure policy (the fair
//! plan, the retry decision, the HTTP answers) and call in here for every read and write of
//! these aggregates.
//!
//! - [`recipients`]: a recipient's state machine (claim, lease, record, release, sweep,
//!   expire, park), every transition written once, in one place; and a campaign's audience
//!   as the admin adds and lists it.
//! - [`campaigns`]: which campaigns the tick may dispatch from, their start and completion,
//!   their counters and the backlog; the admin's creation, start, status changes and lists.
//! - [`progress`]: the one progress row ([`progress::Counts`]) every view of a campaign
//!   reads, deliveries and sends per provider.
//! - [`messages`]: transactional messages (their streams, idempotency keys and quotas).
//! - [`providers`]: what the tick reads of providers (paces, free lines, commitments), what
//!   a worker loads to send through one, the lines calls hold, what the receiver checks
//!   receipts with, and the admin's providers and credentials.
//! - [`catalog`]: creating tenants, providers, campaigns and their recipients (the demo's
//!   and the tests' seeding).
//! - [`receipts`]: storing receipts and applying them to recipients.
//! - [`pacing`]: a provider's fleet-wide pace and breaker.
//! - [`tenants`]: tenants and their default providers, and the [`tenants::Scope`] every list
//!   and lookup of a tenant's data takes;
//!   [`keys`]: the admin API's keys, stored hashed; [`contacts`]: tenants' address books;
//!   [`segments`]: tenants' contact filters, and [`segments::filter`], the filter language
//!   compiled to SQL with every name and value a bound parameter; [`uploads`]: the staging
//!   table uploads stream into.
//! - [`fleet`]: the workers' heartbeats and the caps each may have in flight.
//! - [`leadership`]: the advisory lock that makes one scheduler the leader.
//! - [`erasures`]: erasing an address at its tenant's request.
//! - [`webhooks`]: tenants' status webhooks and the events of their transactional messages
//!   posted to them.
//!
//! Two decisions the recipients' transitions share live in the schema as SQL functions, so
//! each is written once however many statements ask it: `herald_may_send` (may a
//! campaign's recipients be sent now: running, before its expiry, outside its quiet hours)
//! and `herald_held_state` (where a waiting recipient of a campaign that may not send goes:
//! `cancelled`, `expired`, or back to `pending`). Both are plain SQL, inlined by the planner
//! into each statement, so the indexes on the campaign's columns still serve.
//!
//! Statements whose text is fixed are checked at compile time (`sqlx::query!`,
//! `query_as!` and `query_scalar!`) against the schema as `.sqlx/` at the workspace's root
//! describes it, so builds need no database; `scripts/sqlx-prepare.sh` regenerates it after a
//! statement or a migration changes, and the test command fails when it was not. Where
//! several statements share a column list or a part (a row type's columns, the receipts'
//! update), a small `macro_rules!` beside them writes it once and joins it to each
//! statement's own text with `+`, which the macros accept, so each is still checked whole.
//! Still checked only when they run: those built from the caller's filters (`QueryBuilder`)
//! and [`progress::campaigns`], whose columns are the lists' (`progress::counts_columns!`);
//! those adding recipients to a campaign (one statement's end in [`recipients::audience`],
//! after each source's own query: an upload's temporary table, a segment's filter, the
//! catalog's arrays); a campaign's status changes (each `Transition`'s
//! statement is picked at run time); and the claim (its plan is made with each tick's arrays
//! in hand, which the macros cannot ask for).
//!
//! Every function takes a pool, or the caller's connection where it is one step of the
//! caller's transaction, and returns `sqlx::Error` as it came (the catalog wraps it beside its
//! own validation errors): whether a failure is an outage to ride out or a bad row is the
//! caller's judgement.

pub mod campaigns;
pub mod catalog;
pub mod contacts;
pub mod erasures;
pub mod fleet;
pub mod keys;
mod keyset;
pub mod leadership;
pub mod messages;
pub mod pacing;
pub mod progress;
pub mod providers;
pub mod receipts;
pub mod recipients;
pub mod segments;
pub mod suppressions;
pub mod tenants;
pub mod uploads;
pub mod webhooks;
