//! Listening for the admin's wake-ups (`herald_shared::wake`): each names a provider whose
//! lane has new work waiting (transactional messages, or a campaign started or resumed now),
//! or one of whose campaigns was just paused or cancelled, or whose message streams new
//! credentials resumed.

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::time::Duration;
use tokio::sync::mpsc;
use uuid::Uuid;

/// Wake-ups not yet taken by the tick loop; past it they are dropped (a pass is already
/// due, and the next tick covers what it misses).
const BUFFER: usize = 1024;
/// After a lost connection, how long before listening again.
const RECONNECT: Duration = Duration::from_secs(1);

/// Providers named by wake-ups, as they arrive. Reconnects on its own; ends when the
/// receiver is dropped.
pub fn listen(pool: PgPool) -> mpsc::Receiver<Uuid> {
    let (sender, receiver) = mpsc::channel(BUFFER);
    tokio::spawn(async move {
        while !sender.is_closed() {
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
    listener.listen(herald_shared::wake::CHANNEL).await?;
    loop {
        let notification = listener.recv().await?;
        let Ok(provider) = notification.payload().parse::<Uuid>() else {
            continue;
        };
        match sender.try_send(provider) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
        }
    }
}
