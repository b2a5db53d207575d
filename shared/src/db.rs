//! PostgreSQL: the pool and the migrations.

use crate::config::{Connections, Tls};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};
use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

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

/// `options` with the session settings by which PostgreSQL ends, on its side, the sessions
/// of a process that is gone (cut off, or failed over from): one left idle inside a
/// transaction (its locks held) after [`deadline`], one whose answers go unacknowledged that
/// long, and an idle one (a scheduler's leadership lock) once TCP keepalives, from a
/// deadline's silence on, go unanswered three times 5 s apart. For the services that carry
/// work, not for migrations.
pub fn bounded_sessions(options: PgConnectOptions, deadline: Duration) -> PgConnectOptions {
    within_tcp_bounds(options, deadline).options([(
        "idle_in_transaction_session_timeout",
        format!("{}ms", deadline.as_millis()),
    )])
}

/// `options` with the settings by which PostgreSQL gives up, on its side, the connection of a
/// client gone quiet: TCP keepalives from a `deadline`'s silence on, three 5 s apart, and
/// answers unacknowledged for a `deadline` (`tcp_user_timeout`). The session, and any lock it
/// holds, then ends within about a deadline and 15 s, not the kernel's 15 minutes or more.
/// These are the server's settings; how long the client waits is the client's to bound.
pub fn within_tcp_bounds(options: PgConnectOptions, deadline: Duration) -> PgConnectOptions {
    options.options([
        ("tcp_user_timeout", format!("{}ms", deadline.as_millis())),
        ("tcp_keepalives_idle", deadline.as_secs().max(1).to_string()),
        ("tcp_keepalives_interval", "5".to_owned()),
        ("tcp_keepalives_count", "3".to_owned()),
    ])
}

/// `options` whose statements PostgreSQL cancels a fifth of the [`deadline`] before the
/// process gives them up: a write held up by a lock is then rolled back, not carried out
/// after the process has moved on to its retry (a worker's lease taken so would be found
/// taken by that retry, and its recipient judged like a lost answer). For the worker and
/// the receiver, whose statements are short; not the scheduler's, whose housekeeping folds
/// or trims what may have piled up while no scheduler led.
pub fn cancel_late_statements(options: PgConnectOptions, deadline: Duration) -> PgConnectOptions {
    options.options([(
        "statement_timeout",
        format!("{}ms", (deadline * 4 / 5).as_millis()),
    )])
}

/// The pool of a service whose statements are short (a worker, a receiver): this process's
/// [`deadline`] set from `connections`, its sessions [bounded](bounded_sessions) by it, and
/// their statements [cancelled](cancel_late_statements) a fifth before it.
pub async fn connect_for_short_statements(connections: &Connections) -> Result<PgPool, DbError> {
    let deadline = connections.db_deadline();
    set_deadline(deadline);
    let options = options(connections.database_url.expose(), &connections.tls())?;
    connect_with(
        cancel_late_statements(bounded_sessions(options, deadline), deadline),
        connections.db_pool_size,
    )
    .await
}

/// Opens a pool; fails fast (5 s) if the database cannot be reached at start.
pub async fn connect(url: &str, max_connections: u32, tls: &Tls) -> Result<PgPool, DbError> {
    connect_with(options(url, tls)?, max_connections).await
}

/// How long a connection may take to answer a ping when taken from the pool or handed back
/// to it. sqlx pings at both: when taken, within the pool's 5 s wait for a connection
/// (which then fails, rather than opening a new one); when handed back, with no deadline
/// at all, so a connection that leads nowhere (a failover, a cut network), handed back by
/// a statement given up at its [`deadline`], held its place in the pool until the kernel
/// gave up on it (about 15 minutes). A connection handed back mid-statement answers once
/// that statement ends.
pub const CHECK_WITHIN: Duration = Duration::from_secs(2);

/// [`connect`] with options of the caller's (session settings, say).
pub async fn connect_with(
    options: PgConnectOptions,
    max_connections: u32,
) -> Result<PgPool, DbError> {
    Checks::default()
        .on(PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5)))
        .connect_with(options)
        .await
        .map_err(DbError::Connect)
}

/// A pool's checks of its connections, when taken and when handed back: the same ping as
/// sqlx's own, under [`CHECK_WITHIN`] (handed back, sqlx's own ping follows when this one
/// answers: a second round trip, no cost measured, BENCHMARKS.md). After a failover every
/// connection opened before it leads nowhere, and pinging each in turn would hold whoever
/// takes them up 2 s a pooled connection; so once an idle one goes unanswered when taken,
/// those opened before its ping are closed unpinged (a healthy one among them costs a
/// reconnect).
#[derive(Clone, Default)]
struct Checks {
    /// When the latest unanswered ping was sent.
    unanswered_since: Arc<Mutex<Option<Instant>>>,
}

impl Checks {
    fn on(self, pool: PgPoolOptions) -> PgPoolOptions {
        let released = self.clone();
        pool.test_before_acquire(false)
            .before_acquire(move |connection, meta| {
                let checks = self.clone();
                Box::pin(async move { checks.answers(connection, meta.age, Idle::Yes).await })
            })
            .after_release(move |connection, meta| {
                let checks = released.clone();
                Box::pin(async move { checks.answers(connection, meta.age, Idle::No).await })
            })
    }

    /// Whether `connection`, `age` old, answers a ping in time; an error (the pool then
    /// closes it without a goodbye) if not, or if it is as old as an idle one that did not.
    async fn answers(
        &self,
        connection: &mut sqlx::PgConnection,
        age: Duration,
        idle: Idle,
    ) -> Result<bool, sqlx::Error> {
        let pinged = Instant::now();
        if opened_before(pinged, age, *self.unanswered()) {
            return Err(sqlx::Error::Io(std::io::Error::other(
                "opened before one of its pool's connections went unanswered; closed unpinged",
            )));
        }
        match tokio::time::timeout(CHECK_WITHIN, connection.ping()).await {
            Ok(answered) => answered.map(|()| true),
            Err(_) => {
                if idle == Idle::Yes {
                    let mut since = self.unanswered();
                    *since = Some(since.map_or(pinged, |earlier| earlier.max(pinged)));
                }
                Err(no_answer(CHECK_WITHIN))
            }
        }
    }

    fn unanswered(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.unanswered_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether a pinged connection was idle. One handed back mid-statement (its statement given
/// up) answers only once that statement ends: its silence says nothing of the others.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Idle {
    Yes,
    No,
}

/// Whether a connection `age` old at `now` was opened before `unanswered_since`.
fn opened_before(now: Instant, age: Duration, unanswered_since: Option<Instant>) -> bool {
    unanswered_since.is_some_and(|since| now.checked_sub(age).is_some_and(|opened| opened < since))
}

static DEADLINE: OnceLock<Duration> = OnceLock::new();

/// The deadline [`within`] holds statements to when none was set.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(15);

/// Sets this process's [`deadline`] (`HERALD_DB_DEADLINE_MS`), once, at start; later calls
/// change nothing.
pub fn set_deadline(deadline: Duration) {
    let _ = DEADLINE.set(deadline);
}

/// How long a write, or a pass of statements, waits for PostgreSQL's answer.
pub fn deadline() -> Duration {
    DEADLINE.get().copied().unwrap_or(DEFAULT_DEADLINE)
}

/// `work` (statements on the pool), given up after [`deadline`]; see [`within_for`].
pub async fn within<T>(
    work: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    within_for(deadline(), work).await
}

/// `work` (statements on the pool), given up after `deadline` with an I/O error (which
/// [`is_transient`] takes for one that may pass: the next try takes a new connection, the
/// pool having closed the one abandoned if it does not answer within [`CHECK_WITHIN`]).
///
/// A statement given up may still be carried out: [`cancel_late_statements`] has PostgreSQL
/// cancel it first when it is only slow, but one the network delivers late (a cut that
/// heals) runs then, as one whose connection broke after its commit has run. The worker's
/// lease and outcome statements carry a token of their delivery, so that a retry finds such
/// a commit its own (the migration `lease_tokens`).
pub async fn within_for<T>(
    deadline: Duration,
    work: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    tokio::time::timeout(deadline, work)
        .await
        .unwrap_or_else(|_| Err(no_answer(deadline)))
}

/// The error for a wait on PostgreSQL given up after `waited`: an I/O time-out, which
/// [`is_transient`] takes for one that may pass.
pub fn no_answer(waited: Duration) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("PostgreSQL did not answer within {waited:?}"),
    ))
}

/// A pool of one connection, opened when first asked for, for a listener (or a health
/// check): `LISTEN` holds its connection for as long as it listens, so taken from the pool
/// the process's statements share it would leave them one connection fewer (and a pool of
/// one, none). Connections here are never retired for age or idleness: the listener holds
/// one until it is lost.
pub fn listener_pool(options: PgConnectOptions) -> PgPool {
    Checks::default()
        .on(PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .max_lifetime(None)
            .idle_timeout(None))
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
            // intervention (shutdown, crash, not accepting connections yet); 57014: a
            // statement cancelled (by `cancel_late_statements`' statement timeout, or an
            // operator); 40001/40P01: serialisation failure, deadlock; 55P03: lock not
            // available.
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P")
                || matches!(code.as_ref(), "57014" | "40001" | "40P01" | "55P03")
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_opened_before_an_unanswered_ping_are_not_pinged_again() {
        let now = Instant::now() + Duration::from_secs(600);
        let unanswered = Some(now - Duration::from_secs(10));
        // Opened a minute ago, before the ping that went unanswered 10 s ago.
        assert!(opened_before(now, Duration::from_secs(60), unanswered));
        // Opened since (on the server that took over).
        assert!(!opened_before(now, Duration::from_secs(5), unanswered));
        // No ping went unanswered.
        assert!(!opened_before(now, Duration::from_secs(60), None));
    }

    #[tokio::test(start_paused = true)]
    async fn a_statement_that_never_answers_is_given_up_as_one_that_may_pass() {
        let started = tokio::time::Instant::now();
        let error = within(std::future::pending::<Result<(), sqlx::Error>>())
            .await
            .expect_err("never answered");
        assert_eq!(started.elapsed(), deadline());
        assert!(is_transient(&error), "{error}");
        assert!(
            error.to_string().contains("did not answer within"),
            "{error}"
        );
        assert_eq!(
            within(async { Ok::<_, sqlx::Error>(7) }).await.ok(),
            Some(7)
        );
    }
}
