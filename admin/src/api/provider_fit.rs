//! Whether a provider may carry a tenant's messages on a channel: the tenant's own or an
//! operator's shared one, of a kind whose requests carry that channel
//! ([`Kind::serves`]). Checked wherever a provider is bound to a channel: a campaign, a
//! transactional message (its default provider included), a tenant's default provider.

use herald_shared::domain::Channel;
use herald_shared::provider_config::Kind;
use herald_store::providers::Usable;
use sqlx::PgPool;
use uuid::Uuid;

/// Why `provider` cannot carry `tenant`'s messages on `channel`, if it cannot. With no
/// channel (one that did not parse, reported on its own) only its use is checked.
pub async fn misfit(
    pool: &PgPool,
    provider: Uuid,
    tenant: Uuid,
    channel: Option<Channel>,
) -> Result<Option<String>, sqlx::Error> {
    let usable = herald_store::providers::usable_by(pool, provider, tenant).await?;
    Ok(judge(usable.as_ref(), channel))
}

/// The decision, given the provider if the tenant may use it.
pub fn judge(usable: Option<&Usable>, channel: Option<Channel>) -> Option<String> {
    let Some(usable) = usable else {
        return Some("no such provider".into());
    };
    if usable.retired {
        return Some("the provider is retired: choose another".into());
    }
    let (Some(kind), Some(channel)) = (Kind::parse(&usable.kind), channel) else {
        return None;
    };
    kind.serves(channel).err()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usable(kind: &str) -> Usable {
        Usable {
            kind: kind.to_owned(),
            retired: false,
        }
    }

    #[test]
    fn a_provider_fits_when_usable_and_its_kind_serves_the_channel() {
        assert_eq!(
            judge(None, Some(Channel::Sms)).as_deref(),
            Some("no such provider")
        );
        assert_eq!(judge(Some(&usable("twilio_sms")), Some(Channel::Sms)), None);
        assert!(judge(Some(&usable("twilio_sms")), Some(Channel::Voice)).is_some());
        // A channel that did not parse is its own field's error.
        assert_eq!(judge(Some(&usable("twilio_voice")), None), None);
        let retired = Usable {
            retired: true,
            ..usable("twilio_sms")
        };
        assert!(
            judge(Some(&retired), Some(Channel::Sms)).is_some_and(|why| why.contains("retired"))
        );
        assert!(judge(Some(&retired), None).is_some());
    }
}
