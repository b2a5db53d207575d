//! Live calls: a call holds one of its provider's lines (and one of its tenant's) from the
//! moment it is placed until its final status callback, or the provider's live-call timeout.
//! The slot is taken in PostgreSQL (`herald_take_live_call`), one at a time per provider and
//! per tenant, so the caps hold across the whole fleet; the receiver frees it when the
//! call's final status arrives, the outcome when the call was never placed.

use crate::providers::Provider;
use herald_shared::domain::Channel;
use herald_shared::provider_config::ProviderConfig;
use herald_shared::queue::message::DispatchMessage;
use sqlx::PgPool;

/// Whether this message is a call (and so needs a line).
pub fn is_call(provider: &Provider, message: &DispatchMessage) -> bool {
    message.channel == Channel::Voice || matches!(provider.config, ProviderConfig::TwilioVoice(_))
}

/// Takes a line for the call; `false` when the provider's or the tenant's lines are all busy.
pub async fn take(
    pool: &PgPool,
    provider: &Provider,
    message: &DispatchMessage,
) -> Result<bool, sqlx::Error> {
    herald_shared::db::within(herald_store::providers::take_line(
        pool,
        message.recipient_id,
        message.seq,
        provider.id,
        message.tenant_id,
        i32::try_from(provider.live_call_hold.as_millis()).unwrap_or(i32::MAX),
    ))
    .await
}
