//! What each provider call writes: the worker's decision ([`Decision`]) turned into the
//! store's transition ([`Outcome`]). The statements themselves, the lease before the call and
//! the outcome after it, are the store's (`herald_store::recipients`); [`crate::writes`]
//! batches them.

use crate::outcome::Decision;
use std::time::Duration;
use uuid::Uuid;

pub use herald_store::recipients::RecipientState;
pub use herald_store::recipients::lease::{Begun, Dispatch, UnknownAttempt};
pub use herald_store::recipients::record::Outcome;

/// The outcome `decision` writes for the message `dispatch`, sent to `provider`.
pub fn outcome(dispatch: Dispatch, provider: Uuid, decision: &Decision) -> Outcome {
    // Found by a lookup: recorded at the provider whose request created it.
    let provider = match decision {
        Decision::Found { via, .. } => *via,
        _ => provider,
    };
    let row = |state, message_id: Option<&String>, error: Option<&str>, due_in| Outcome {
        dispatch,
        provider,
        state,
        message_id: message_id.cloned(),
        error: error.map(str::to_owned),
        due_in,
        // Attempts that say nothing about the recipient are not counted against it.
        uncounted: matches!(
            decision,
            Decision::Throttled { .. }
                | Decision::Deferred { .. }
                | Decision::Postponed { .. }
                | Decision::Halted { .. }
        ),
        // The provider would not take it: toward the deferral limit.
        put_off: matches!(
            decision,
            Decision::Throttled { .. } | Decision::Deferred { .. }
        ),
        halt: match decision {
            Decision::Halted { error, .. } => Some(error.clone()),
            _ => None,
        },
        opted_out: matches!(decision, Decision::OptedOut { .. }),
        answer_lost: matches!(
            decision,
            Decision::Resend { .. }
                | Decision::Halted {
                    maybe_sent: true,
                    ..
                }
        ),
    };
    match decision {
        Decision::Sent {
            provider_message_id,
        }
        | Decision::Found {
            provider_message_id,
            ..
        } => row(
            RecipientState::Sent,
            provider_message_id.as_ref(),
            None,
            None,
        ),
        Decision::Retry { error, delay }
        | Decision::Resend { error, delay }
        | Decision::Throttled { error, delay }
        | Decision::Deferred { error, delay }
        | Decision::Postponed { error, delay } => {
            row(RecipientState::Pending, None, Some(error), Some(*delay))
        }
        // Due again at once: its campaign is paused, so nothing claims it before resume.
        Decision::Halted { error, .. } => row(
            RecipientState::Pending,
            None,
            Some(error),
            Some(Duration::ZERO),
        ),
        Decision::Failed { error } | Decision::OptedOut { error } => {
            row(RecipientState::Failed, None, Some(error), None)
        }
        Decision::Expired => row(
            RecipientState::Expired,
            None,
            Some("the campaign expired before it could be sent"),
            None,
        ),
        Decision::Unknown { error, window } => row(
            RecipientState::Unknown,
            None,
            Some(&format!("{error}; outcome unknown, waiting for a receipt")),
            Some(*window),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dispatch() -> Dispatch {
        Dispatch::new(7, 2, Uuid::nil())
    }

    fn of(decision: Decision) -> Outcome {
        outcome(dispatch(), Uuid::nil(), &decision)
    }

    #[test]
    fn a_send_records_the_providers_id_and_nothing_else() {
        let sent = of(Decision::Sent {
            provider_message_id: Some("SM1".into()),
        });
        assert_eq!(sent.state, RecipientState::Sent);
        assert_eq!(sent.message_id.as_deref(), Some("SM1"));
        assert_eq!(
            (sent.error, sent.due_in, sent.uncounted, sent.halt),
            (None, None, false, None)
        );
    }

    #[test]
    fn only_attempts_that_judged_the_recipient_count_against_it() {
        let delay = Duration::from_secs(3);
        let error = || "e".to_owned();
        let counted = of(Decision::Retry {
            error: error(),
            delay,
        });
        assert!(!counted.uncounted);
        assert_eq!(
            (counted.state, counted.due_in, counted.answer_lost),
            (RecipientState::Pending, Some(delay), false)
        );
        // A lost answer at a provider that deduplicates: due again, counted, and kept as an
        // attempt whose outcome is unknown.
        let resent = of(Decision::Resend {
            error: error(),
            delay,
        });
        assert_eq!(
            (
                resent.state,
                resent.due_in,
                resent.uncounted,
                resent.answer_lost
            ),
            (RecipientState::Pending, Some(delay), false, true)
        );
        for decision in [
            Decision::Throttled {
                error: error(),
                delay,
            },
            Decision::Deferred {
                error: error(),
                delay,
            },
            Decision::Postponed {
                error: error(),
                delay,
            },
            Decision::Halted {
                error: error(),
                maybe_sent: false,
            },
        ] {
            let o = of(decision);
            assert!(o.uncounted, "{o:?}");
            assert_eq!(o.state, RecipientState::Pending);
        }
        assert!(!counted.put_off && !resent.put_off);
    }

    #[test]
    fn only_a_provider_that_would_not_take_it_counts_toward_the_deferral_limit() {
        let delay = Duration::from_secs(1);
        let error = || "e".to_owned();
        let put_off = |decision| of(decision).put_off;
        assert!(put_off(Decision::Throttled {
            error: error(),
            delay
        }));
        assert!(put_off(Decision::Deferred {
            error: error(),
            delay
        }));
        // Herald's own gate (quiet hours begun, no send slot in time) or a refused account:
        // no provider refusing this recipient.
        assert!(!put_off(Decision::Postponed {
            error: error(),
            delay
        }));
        assert!(!put_off(Decision::Halted {
            error: error(),
            maybe_sent: true,
        }));
    }

    #[test]
    fn a_halt_pauses_the_campaign_and_leaves_the_recipient_due() {
        let o = of(Decision::Halted {
            error: "account suspended".into(),
            maybe_sent: false,
        });
        assert_eq!(o.halt.as_deref(), Some("account suspended"));
        assert_eq!(o.due_in, Some(Duration::ZERO));
        assert!(!o.answer_lost);
        // A request the provider answered with a redirect may have been taken: looked up
        // before it is sent again.
        let redirected = of(Decision::Halted {
            error: "HTTP 303".into(),
            maybe_sent: true,
        });
        assert_eq!(
            (
                redirected.halt.as_deref(),
                redirected.uncounted,
                redirected.answer_lost
            ),
            (Some("HTTP 303"), true, true)
        );
    }

    #[test]
    fn an_unknown_outcome_waits_out_its_window() {
        let window = Duration::from_secs(120);
        let o = of(Decision::Unknown {
            error: "timed out".into(),
            window,
        });
        assert_eq!((o.state, o.due_in), (RecipientState::Unknown, Some(window)));
        assert!(o.error.unwrap().starts_with("timed out; outcome unknown"));
        let failed = of(Decision::Failed {
            error: "400".into(),
        });
        assert_eq!(
            (failed.state, failed.due_in),
            (RecipientState::Failed, None)
        );
    }
}
