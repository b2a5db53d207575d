//! Listening for the admin's wake-ups (`herald_shared::wake`): each names a provider whose
//! lane has new work waiting (transactional messages, or a campaign started or resumed now),
//! or one of whose campaigns was just paused or cancelled, or whose message streams new
//! credentials resumed.

use herald_shared::db::{CHECK_WITHIN, listener_pool, no_answer};
use sqlx::postgres::{PgConnectOptions, PgListener};
use sqlx::{Executor, PgPool};
use std::time::Duration;
use tokio::sync::mpsc;
use uuid::Uuid;

/// Wake-ups not yet taken by the tick loop; past it they are dropped (a pass is already
/// due, and the next tick covers what it misses).
const BUFFER: usize = 1024;
/// After a lost connection, how long before listening again.
const RECONNECT: Duration = Duration::from_secs(1);
/// After how long without a wake-up the listener's connection is pinged. A listener only
/// reads, so when its connection leads nowhere (a failover, a cut network) nothing tells
/// it: wake-ups would stop until the kernel gave up (about 15 minutes), every start and
/// transactional message waiting for a tick meanwhile.
const PING_AFTER_SILENCE: Duration = Duration::from_secs(5);

/// Providers named by wake-ups, as they arrive. Reconnects on its own; ends when the
/// receiver is dropped.
pub fn listen(options: PgConnectOptions) -> mpsc::Receiver<Uuid> {
    let (sender, receiver) = mpsc::channel(BUFFER);
    tokio::spawn(async move {
        while !sender.is_closed() {
            // A pool of its own each time: sqlx drops a listener by sending `UNLISTEN` on its
            // connection and handing it back, which on one that leads nowhere waits for TCP,
            // the pool's one connection with it.
            let pool = listener_pool(options.clone());
            if let Err(error) = relay(&pool, &sender).await {
                tracing::warn!(%error, "wake-ups unavailable for now; ticks still dispatch everything");
            }
            tokio::time::sleep(RECONNECT).await;
        }
    });
    receiver
}

async fn relay(pool: &PgPool, sender: &mpsc::Sender<Uuid>) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    tokio::time::timeout(CHECK_WITHIN, listener.listen(herald_shared::wake::CHANNEL))
        .await
        .map_err(|_| no_answer(CHECK_WITHIN))??;
    tracing::info!("listening for wake-ups");
    loop {
        let notification = match tokio::time::timeout(PING_AFTER_SILENCE, listener.recv()).await {
            Ok(notification) => notification?,
            Err(_) => {
                // Wake-ups that arrive during the ping are buffered for the next `recv`.
                tokio::time::timeout(CHECK_WITHIN, listener.execute("SELECT 1"))
                    .await
                    .map_err(|_| no_answer(CHECK_WITHIN))??;
                continue;
            }
        };
        let Ok(provider) = notification.payload().parse::<Uuid>() else {
            continue;
        };
        match sender.try_send(provider) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
        }
    }
}
