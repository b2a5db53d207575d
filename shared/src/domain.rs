//! The vocabulary every part of Herald shares: channels, campaign states and recipient states.
//!
//! States are stored as lowercase text in PostgreSQL (checked by constraints in the migrations);
//! these enums are the typed side of those columns.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The text stored in PostgreSQL.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(UnknownValue { kind: stringify!($name), value: other.to_owned() }),
                }
            }
        }
    };
}

/// A text value that names no known variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{value}`")]
pub struct UnknownValue {
    pub kind: &'static str,
    pub value: String,
}

text_enum!(
    /// How a message reaches its recipient.
    Channel {
        Sms => "sms",
        Whatsapp => "whatsapp",
        Voice => "voice",
        Chat => "chat",
    }
);

text_enum!(
    /// A campaign's life cycle. Only `running` campaigns are dispatched.
    CampaignStatus {
        /// Being prepared; never dispatched.
        Draft => "draft",
        /// Waits for its start time, then the scheduler makes it `running`.
        Scheduled => "scheduled",
        Running => "running",
        Paused => "paused",
        /// Every recipient reached a terminal state.
        Completed => "completed",
        Cancelled => "cancelled",
    }
);

text_enum!(
    /// Where one recipient is in the pipeline.
    ///
    /// `pending → sending → sent | failed` for a campaign's first attempt (claimed by range:
    /// it stays `pending` while its message is in the queue), `pending → queued → sending`
    /// for retries and transactional messages (claimed row by row), with `sending → pending`
    /// for a retry that waits for `next_attempt_at`, and `sending → unknown` when the
    /// provider's answer never came: the recipient then waits for a receipt (→ `sent`) or
    /// for the provider's window to pass (→ `pending`, reconciled before any second
    /// request). `cancelled` and `expired` come from campaign operations.
    RecipientState {
        /// Waiting for the scheduler (first attempt or a retry whose time has come), or a
        /// campaign's first attempt claimed by range whose message waits for a worker.
        Pending => "pending",
        /// A retry or transactional message claimed by the scheduler and published to the
        /// dispatch queue.
        Queued => "queued",
        /// A worker holds a lease on it and is calling the provider.
        Sending => "sending",
        /// The request went out but no answer came (timeout, reset, a worker that died
        /// mid-call): it may have been sent. Waits for a receipt or the provider's window.
        Unknown => "unknown",
        Sent => "sent",
        Failed => "failed",
        Cancelled => "cancelled",
        Expired => "expired",
    }
);

text_enum!(
    /// What a provider does with a request whose answer never came (a timeout, a connection
    /// reset after the request was written, a worker that died mid-call): it may have been
    /// sent, and no API Herald speaks, but a generic one that honours the idempotency key,
    /// would refuse a second copy.
    UnknownOutcome {
        /// Retry at once, with the same idempotency key: for a provider that deduplicates.
        Retry => "retry",
        /// Wait the provider's window for a receipt (which settles it as sent); without one,
        /// look the message up where the API allows it, then retry. Where it does not, retry
        /// only once the provider has reported on messages sent after the request (its
        /// receipts are then known to flow), and fail after ten windows without (half an hour at least).
        AwaitReceipt => "await_receipt",
        /// Wait the window likewise; without a receipt or a lookup that finds the message,
        /// fail the recipient rather than risk a second message.
        Fail => "fail",
    }
);

impl RecipientState {
    /// Terminal states never change again; a redelivered message for one is acked unsent.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Sent | Self::Failed | Self::Cancelled | Self::Expired
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_text() {
        for state in RecipientState::ALL {
            assert_eq!(state.as_str().parse::<RecipientState>().unwrap(), *state);
        }
        for status in CampaignStatus::ALL {
            assert_eq!(
                status.to_string().parse::<CampaignStatus>().unwrap(),
                *status
            );
        }
        assert!("telegram".parse::<Channel>().is_err());
    }

    #[test]
    fn only_final_states_are_terminal() {
        let terminal: Vec<_> = RecipientState::ALL
            .iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [
                &RecipientState::Sent,
                &RecipientState::Failed,
                &RecipientState::Cancelled,
                &RecipientState::Expired
            ]
        );
    }
}
