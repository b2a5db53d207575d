//! Leader election through a PostgreSQL advisory lock.
//!
//! The lock lives on one dedicated connection: if the leader dies, PostgreSQL drops the
//! connection and frees the lock, and a standby's next attempt (every tick) takes over. The
//! leader checks its connection every tick and steps down the moment it is lost.

use herald_store as store;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub struct Leadership {
    options: PgConnectOptions,
    connection: Option<PgConnection>,
    leading: bool,
    /// `leading` as every check leaves it, for tasks beside the tick (the housekeeping).
    shared: Arc<AtomicBool>,
    /// How many times this process has become the leader ([`term`](Self::term)).
    terms: u64,
    /// This process, as its session's mark names it (`store::leadership::try_lock`).
    id: uuid::Uuid,
}

impl Leadership {
    pub fn new(options: PgConnectOptions) -> Self {
        Self {
            options,
            connection: None,
            leading: false,
            shared: Arc::default(),
            terms: 0,
            id: uuid::Uuid::new_v4(),
        }
    }

    /// Whether this process leads, as the last check (or [`resign`](Self::resign)) left it.
    pub fn shared(&self) -> Arc<AtomicBool> {
        self.shared.clone()
    }

    pub fn is_leader(&self) -> bool {
        self.leading
    }

    /// Which of this process's terms as leader the last check is in (0 before the first):
    /// it changes each time leadership is gained, so what was kept from an earlier term,
    /// while others led, can be told apart and dropped.
    pub fn term(&self) -> u64 {
        self.terms
    }

    /// Confirms or tries to gain leadership; returns whether this process leads now.
    pub async fn refresh(&mut self) -> bool {
        let was_leading = self.leading;
        self.leading = match tokio::time::timeout(Duration::from_secs(5), self.try_lead()).await {
            Ok(Ok(leading)) => leading,
            Ok(Err(error)) => {
                if was_leading {
                    tracing::warn!(%error, "lost the leader connection; stepping down");
                } else {
                    tracing::debug!(%error, "cannot reach the database to contend for leadership");
                }
                self.connection = None;
                false
            }
            Err(_) => {
                tracing::warn!("leadership check timed out; stepping down");
                self.connection = None;
                false
            }
        };
        match (was_leading, self.leading) {
            (false, true) => {
                self.terms += 1;
                tracing::info!(term = self.terms, "became the leader scheduler");
            }
            (true, false) => tracing::warn!("no longer the leader scheduler"),
            _ => {}
        }
        self.shared.store(self.leading, Ordering::Relaxed);
        self.leading
    }

    async fn try_lead(&mut self) -> Result<bool, sqlx::Error> {
        if self.connection.is_none() {
            self.connection = Some(PgConnection::connect_with(&self.options).await?);
        }
        let Some(connection) = self.connection.as_mut() else {
            return Ok(false);
        };
        if self.leading {
            if store::leadership::still_held(connection, self.id).await? {
                return Ok(true);
            }
            tracing::error!(
                "the leadership lock is not this scheduler's session's alone any more (is \
                 HERALD_DATABASE_URL a pooler in transaction mode? the scheduler needs a \
                 session of its own); stepping down"
            );
            // Let go of what this session may still hold, before leaving it.
            let _ = store::leadership::unlock(connection).await;
            self.connection = None;
            return Ok(false);
        }
        store::leadership::try_lock(connection, self.id).await
    }

    /// Releases the lock (at shutdown, or when this process cannot publish) so a standby
    /// need not wait for the connection to drop (bounded: on a connection that leads
    /// nowhere, this would wait for TCP).
    pub async fn resign(&mut self) {
        if let Some(mut connection) = self.connection.take() {
            let goodbye = async {
                if self.leading {
                    let _ = store::leadership::unlock(&mut connection).await;
                }
                let _ = connection.close().await;
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), goodbye).await;
        }
        self.leading = false;
        self.shared.store(false, Ordering::Relaxed);
    }
}
