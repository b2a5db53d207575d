//! Listening on a PostgreSQL `LISTEN`/`NOTIFY` channel whose payloads are ids (the admin's
//! wake-ups of the scheduler, [`crate::wake`]; providers changed, for the receivers,
//! [`crate::provider_changes`]). A notification lost to a dropped connection costs only what
//! each channel says: every listener has a slower path that covers it.

use crate::db::{CHECK_WITHIN, listener_pool, no_answer};
use sqlx::postgres::{PgConnectOptions, PgListener};
use sqlx::{Executor, PgPool};
use std::time::Duration;
use tokio::sync::mpsc;
use uuid::Uuid;

/// A channel, and what its listener logs.
#[derive(Debug)]
pub struct Channel {
    pub name: &'static str,
    /// Logged once listening.
    pub listening: &'static str,
    /// Logged when the connection is lost (what covers for it meanwhile).
    pub unavailable: &'static str,
}

/// Ids not yet taken by the listener's reader; past it they are dropped (each channel's
/// slower path covers what it misses).
const BUFFER: usize = 1024;
/// After a lost connection, how long before listening again.
const RECONNECT: Duration = Duration::from_secs(1);
/// After how long without a notification the listener's connection is pinged. A listener
/// only reads, so when its connection leads nowhere (a failover, a cut network) nothing
/// tells it: notifications would stop until the kernel gave up (about 15 minutes).
const PING_AFTER_SILENCE: Duration = Duration::from_secs(5);

/// The ids `channel`'s notifications name, as they arrive, on a connection of its own (not
/// one of a pool's). Reconnects on its own; ends when the receiver is dropped.
pub fn listen(options: PgConnectOptions, channel: &'static Channel) -> mpsc::Receiver<Uuid> {
    let (sender, receiver) = mpsc::channel(BUFFER);
    tokio::spawn(async move {
        while !sender.is_closed() {
            // A pool of its own each time: sqlx drops a listener by sending `UNLISTEN` on its
            // connection and handing it back, which on one that leads nowhere waits for TCP,
            // the pool's one connection with it.
            let pool = listener_pool(options.clone());
            if let Err(error) = relay(&pool, channel, &sender).await {
                tracing::warn!(%error, channel = channel.name, "{}", channel.unavailable);
            }
            tokio::time::sleep(RECONNECT).await;
        }
    });
    receiver
}

async fn relay(
    pool: &PgPool,
    channel: &Channel,
    sender: &mpsc::Sender<Uuid>,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    tokio::time::timeout(CHECK_WITHIN, listener.listen(channel.name))
        .await
        .map_err(|_| no_answer(CHECK_WITHIN))??;
    tracing::info!(channel = channel.name, "{}", channel.listening);
    loop {
        let notification = match tokio::time::timeout(PING_AFTER_SILENCE, listener.recv()).await {
            Ok(notification) => notification?,
            Err(_) => {
                // Notifications that arrive during the ping are buffered for the next `recv`.
                tokio::time::timeout(CHECK_WITHIN, listener.execute("SELECT 1"))
                    .await
                    .map_err(|_| no_answer(CHECK_WITHIN))??;
                continue;
            }
        };
        let Ok(id) = notification.payload().parse::<Uuid>() else {
            continue;
        };
        match sender.try_send(id) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
        }
    }
}
