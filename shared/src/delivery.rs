//! What became of a message or call after the provider took it, as its receipts (status
//! callbacks) report it.
//!
//! Receipts arrive late, out of order and more than once. Each status has a rank, and a
//! recipient's delivery status only ever moves to a higher rank, so merging receipts is
//! taking the maximum under one total order: commutative, associative and idempotent. Any
//! order and any number of copies of the same receipts end in the same status.
//!
//! Messages: `queued < sending < sent < failed < canceled < undelivered <
//! partially_delivered < delivered < read`. Calls: `initiated < ringing < in-progress <
//! failed < canceled < no-answer < busy < completed`. The statuses from `failed` up are
//! final (a message can still go from `delivered` to `read`); where two finals conflict, the
//! one that says more reached the recipient wins.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The lowest rank of a final status (where SQL compares ranks).
pub const FINAL_RANK: i16 = 40;

/// A provider's report on one message or call, in Herald's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DeliveryStatus {
    // Messages.
    Queued,
    Sending,
    Sent,
    Undelivered,
    PartiallyDelivered,
    Delivered,
    Read,
    // Calls.
    Initiated,
    Ringing,
    InProgress,
    NoAnswer,
    Busy,
    Completed,
    // Both.
    Failed,
    Canceled,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 15] = [
        DeliveryStatus::Queued,
        DeliveryStatus::Sending,
        DeliveryStatus::Sent,
        DeliveryStatus::Undelivered,
        DeliveryStatus::PartiallyDelivered,
        DeliveryStatus::Delivered,
        DeliveryStatus::Read,
        DeliveryStatus::Initiated,
        DeliveryStatus::Ringing,
        DeliveryStatus::InProgress,
        DeliveryStatus::NoAnswer,
        DeliveryStatus::Busy,
        DeliveryStatus::Completed,
        DeliveryStatus::Failed,
        DeliveryStatus::Canceled,
    ];

    /// The text stored in PostgreSQL and shown by the admin (Twilio's spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::Sending => "sending",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Undelivered => "undelivered",
            DeliveryStatus::PartiallyDelivered => "partially_delivered",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Read => "read",
            DeliveryStatus::Initiated => "initiated",
            DeliveryStatus::Ringing => "ringing",
            DeliveryStatus::InProgress => "in-progress",
            DeliveryStatus::NoAnswer => "no-answer",
            DeliveryStatus::Busy => "busy",
            DeliveryStatus::Completed => "completed",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Canceled => "canceled",
        }
    }

    /// Where the status stands: a receipt is applied only if its rank is higher than the
    /// recipient's. Ranks 40 and up are final. No two statuses share a rank, so the merge is
    /// a total order (message and call statuses interleave; a recipient only ever gets one
    /// kind).
    pub fn rank(self) -> i16 {
        match self {
            DeliveryStatus::Queued => 10,
            DeliveryStatus::Initiated => 11,
            DeliveryStatus::Sending => 20,
            DeliveryStatus::Ringing => 21,
            DeliveryStatus::Sent => 30,
            DeliveryStatus::InProgress => 31,
            DeliveryStatus::Failed => 40,
            DeliveryStatus::Canceled => 41,
            DeliveryStatus::Undelivered => 42,
            DeliveryStatus::NoAnswer => 43,
            DeliveryStatus::PartiallyDelivered => 44,
            DeliveryStatus::Busy => 45,
            DeliveryStatus::Delivered => 46,
            DeliveryStatus::Completed => 47,
            DeliveryStatus::Read => 50,
        }
    }

    /// The provider has finished with it (a message may still be read later).
    pub fn is_final(self) -> bool {
        self.rank() >= FINAL_RANK
    }

    /// A final status of a call: the line is free again.
    pub fn ends_call(self) -> bool {
        matches!(
            self,
            DeliveryStatus::Completed
                | DeliveryStatus::Busy
                | DeliveryStatus::NoAnswer
                | DeliveryStatus::Canceled
                | DeliveryStatus::Failed
        )
    }

    /// Twilio's `MessageStatus` (of an outbound message); `None` for statuses that are not
    /// about a message Herald sent (`receiving`, `received`) or that Herald does not know.
    pub fn from_twilio_message(status: &str) -> Option<Self> {
        Some(match status {
            "queued" | "accepted" | "scheduled" => DeliveryStatus::Queued,
            "sending" => DeliveryStatus::Sending,
            "sent" => DeliveryStatus::Sent,
            "delivered" => DeliveryStatus::Delivered,
            "undelivered" => DeliveryStatus::Undelivered,
            "failed" => DeliveryStatus::Failed,
            "read" => DeliveryStatus::Read,
            "canceled" => DeliveryStatus::Canceled,
            "partially_delivered" => DeliveryStatus::PartiallyDelivered,
            _ => return None,
        })
    }

    /// Twilio's `CallStatus`.
    pub fn from_twilio_call(status: &str) -> Option<Self> {
        Some(match status {
            "queued" | "initiated" => DeliveryStatus::Initiated,
            "ringing" => DeliveryStatus::Ringing,
            "in-progress" | "answered" => DeliveryStatus::InProgress,
            "completed" => DeliveryStatus::Completed,
            "busy" => DeliveryStatus::Busy,
            "no-answer" => DeliveryStatus::NoAnswer,
            "canceled" => DeliveryStatus::Canceled,
            "failed" => DeliveryStatus::Failed,
            _ => return None,
        })
    }

    /// A WhatsApp Cloud API status notification's `status`.
    pub fn from_whatsapp(status: &str) -> Option<Self> {
        Some(match status {
            "sent" => DeliveryStatus::Sent,
            "delivered" => DeliveryStatus::Delivered,
            "read" => DeliveryStatus::Read,
            "failed" => DeliveryStatus::Failed,
            _ => return None,
        })
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Herald's own spelling (what the generic provider's receipts use), plus `accepted` for
/// `queued`.
impl FromStr for DeliveryStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "accepted" {
            return Ok(DeliveryStatus::Queued);
        }
        DeliveryStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown delivery status `{0}`")]
pub struct UnknownStatus(pub String);

/// The status a recipient ends in after `current` and one more receipt: the higher rank.
pub fn merge(current: Option<DeliveryStatus>, receipt: DeliveryStatus) -> DeliveryStatus {
    match current {
        Some(current) if current.rank() >= receipt.rank() => current,
        _ => receipt,
    }
}

/// The status after all of `receipts`, in the order given (any order gives the same).
pub fn resolve(receipts: impl IntoIterator<Item = DeliveryStatus>) -> Option<DeliveryStatus> {
    receipts
        .into_iter()
        .fold(None, |current, receipt| Some(merge(current, receipt)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn every_status_has_its_own_rank_and_text() {
        let ranks: HashSet<i16> = DeliveryStatus::ALL.iter().map(|s| s.rank()).collect();
        assert_eq!(ranks.len(), DeliveryStatus::ALL.len());
        for status in DeliveryStatus::ALL {
            assert_eq!(status.as_str().parse::<DeliveryStatus>(), Ok(status));
        }
        // Within one kind (messages, calls) no two statuses share a rank.
        let messages = [
            DeliveryStatus::Queued,
            DeliveryStatus::Sending,
            DeliveryStatus::Sent,
            DeliveryStatus::Failed,
            DeliveryStatus::Canceled,
            DeliveryStatus::Undelivered,
            DeliveryStatus::PartiallyDelivered,
            DeliveryStatus::Delivered,
            DeliveryStatus::Read,
        ];
        let calls = [
            DeliveryStatus::Initiated,
            DeliveryStatus::Ringing,
            DeliveryStatus::InProgress,
            DeliveryStatus::Failed,
            DeliveryStatus::Canceled,
            DeliveryStatus::NoAnswer,
            DeliveryStatus::Busy,
            DeliveryStatus::Completed,
        ];
        for ladder in [&messages[..], &calls[..]] {
            let ranks: Vec<i16> = ladder.iter().map(|s| s.rank()).collect();
            assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{ladder:?}");
        }
        assert_eq!(
            "bogus".parse::<DeliveryStatus>(),
            Err(UnknownStatus("bogus".into()))
        );
        assert_eq!("accepted".parse(), Ok(DeliveryStatus::Queued));
    }

    #[test]
    fn never_backwards() {
        let delivered = resolve([DeliveryStatus::Delivered, DeliveryStatus::Sent]);
        assert_eq!(delivered, Some(DeliveryStatus::Delivered));
        let read = resolve([
            DeliveryStatus::Read,
            DeliveryStatus::Delivered,
            DeliveryStatus::Sent,
        ]);
        assert_eq!(read, Some(DeliveryStatus::Read));
        // A failure after delivery does not undo the delivery; before it, it is final.
        assert_eq!(
            resolve([DeliveryStatus::Sent, DeliveryStatus::Undelivered]),
            Some(DeliveryStatus::Undelivered)
        );
        assert_eq!(
            resolve([DeliveryStatus::Undelivered, DeliveryStatus::Sent]),
            Some(DeliveryStatus::Undelivered)
        );
        assert_eq!(
            resolve([
                DeliveryStatus::Completed,
                DeliveryStatus::Ringing,
                DeliveryStatus::InProgress
            ]),
            Some(DeliveryStatus::Completed)
        );
        assert_eq!(resolve([]), None);
    }

    #[test]
    fn provider_spellings_map_to_statuses() {
        assert_eq!(
            DeliveryStatus::from_twilio_message("accepted"),
            Some(DeliveryStatus::Queued)
        );
        assert_eq!(
            DeliveryStatus::from_twilio_message("undelivered"),
            Some(DeliveryStatus::Undelivered)
        );
        assert_eq!(DeliveryStatus::from_twilio_message("received"), None);
        assert_eq!(
            DeliveryStatus::from_twilio_call("no-answer"),
            Some(DeliveryStatus::NoAnswer)
        );
        assert_eq!(
            DeliveryStatus::from_twilio_call("answered"),
            Some(DeliveryStatus::InProgress)
        );
        assert_eq!(
            DeliveryStatus::from_whatsapp("read"),
            Some(DeliveryStatus::Read)
        );
        assert_eq!(DeliveryStatus::from_whatsapp("deleted"), None);
        assert!(DeliveryStatus::Busy.ends_call());
        assert!(!DeliveryStatus::InProgress.ends_call());
        assert!(!DeliveryStatus::Delivered.ends_call());
    }

    fn statuses() -> impl Strategy<Value = Vec<DeliveryStatus>> {
        prop::collection::vec(prop::sample::select(DeliveryStatus::ALL.to_vec()), 1..8)
    }

    proptest! {
        /// However receipts are reordered and repeated, the recipient ends in one status.
        #[test]
        fn any_order_and_any_copies_end_the_same(
            receipts in statuses(),
            copies in prop::collection::vec(0usize..3, 8),
            seed in any::<u64>(),
        ) {
            let expected = resolve(receipts.iter().copied());
            let mut arrived: Vec<DeliveryStatus> = receipts
                .iter()
                .zip(copies.iter().cycle())
                .flat_map(|(&status, &extra)| std::iter::repeat_n(status, 1 + extra))
                .collect();
            // A permutation from the seed (Fisher–Yates with a small LCG).
            let mut state = seed | 1;
            for i in (1..arrived.len()).rev() {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let j = (state >> 33) as usize % (i + 1);
                arrived.swap(i, j);
            }
            prop_assert_eq!(resolve(arrived), expected);
        }

        /// Applying a receipt never lowers the rank.
        #[test]
        fn a_receipt_never_lowers_the_rank(current in prop::sample::select(DeliveryStatus::ALL.to_vec()),
                                           receipt in prop::sample::select(DeliveryStatus::ALL.to_vec())) {
            let merged = merge(Some(current), receipt);
            prop_assert!(merged.rank() >= current.rank());
            prop_assert!(merged.rank() >= receipt.rank());
        }
    }
}
