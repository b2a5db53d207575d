//! PostgreSQL: the pool and the migrations.

use crate::config::Tls;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// The migrations in `migrations/`, embedded in every binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// The connection options of `url`, trusting `tls`'s CA file besides the system's roots
/// (the URL's own `sslrootcert` wins). Whether TLS is used, and how strictly, is the URL's
/// `sslmode`.
///
/// Sessions run without PostgreSQL's JIT compiler: Herald's statements are short, but with
/// thousands of campaigns their cost estimates pass `jit_above_cost`, and compiling took
/// longer than running (the tick's commitments query: 159 ms of JIT for 0.04 ms of work).
pub fn options(url: &str, tls: &Tls) -> Result<PgConnectOptions, DbError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(DbError::Connect)?
        .options([("jit", "off")]);
    let has_root = url.contains("sslrootcert=");
    Ok(match &tls.ca_file {
        Some(ca_file) if !has_root => options.ssl_root_cert(ca_file),
        _ => options,
    })
}

/// Opens a pool; fails fast (5 s) if the database cannot be reached at start.
pub async fn connect(url: &str, max_connections: u32, tls: &Tls) -> Result<PgPool, DbError> {
    connect_with(options(url, tls)?, max_connections).await
}

/// [`connect`] with options of the caller's (session settings, say).
pub async fn connect_with(
    options: PgConnectOptions,
    max_connections: u32,
) -> Result<PgPool, DbError> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(DbError::Connect)
}

/// A pool of one connection, opened when first asked for, for a listener (or a health
/// check): `LISTEN` holds its connection for as long as it listens, so taken from the pool
/// the process's statements share it would leave them one connection fewer (and a pool of
/// one, none). Connections here are never retired for age or idleness: the listener holds
/// one until it is lost.
pub fn listener_pool(options: PgConnectOptions) -> PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with(options)
}

/// Applies pending migrations. Idempotent, and safe to run from several processes at once
/// (sqlx serialises them with an advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Whether `error` may pass if the same statement is run again: the database was out of
/// reach, restarting, overloaded, or chose this transaction to break a deadlock. Anything
/// else (bad data, a bug) will fail the same way every time.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 53: insufficient resources; 57P: operator
            // intervention (shutdown, crash, not accepting connections yet); 40001/40P01:
            // serialisation failure, deadlock; 55P03: lock not available.
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P")
                || matches!(code.as_ref(), "40001" | "40P01" | "55P03")
        }),
        _ => false,
    }
}
