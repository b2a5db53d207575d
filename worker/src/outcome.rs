//! What a provider's answer means for the recipient: a pure decision, no I/O.

use herald_shared::backoff::RetryPolicy;
use herald_shared::domain::UnknownOutcome;
use std::time::Duration;
use uuid::Uuid;

/// A provider's policy for what comes back: retries, and what an unknown outcome means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub retry: RetryPolicy,
    pub unknown: UnknownOutcome,
    /// How long a recipient whose outcome is unknown waits for a receipt.
    pub window: Duration,
}

/// The provider call's result, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallResult {
    Accepted {
        provider_message_id: Option<String>,
    },
    /// The provider asks to slow down (HTTP 429, Twilio 20429, WhatsApp 130429, …): the
    /// request was not processed and says nothing about the recipient. Kept apart from
    /// [`CallResult::Transient`] so that a provider-wide rate limiter can back off without
    /// spending the recipient's attempts; until then it is retried like a transient error.
    Throttled {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The provider will not send to this recipient again so soon (WhatsApp 131056, its
    /// limit on messages from one business number to one user): nothing was sent and
    /// nothing is wrong with the provider, whose other recipients go on at its pace. The
    /// recipient is put off, as by a provider's deferral.
    RecipientBusy {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// An error answer (500, 408, …): the same request may succeed later.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The provider is down or unreachable (503, connection refused): nothing was sent and
    /// nothing is wrong with the recipient, so no attempt is charged.
    Unavailable {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The request went out and no answer came (a timeout, a connection reset after the
    /// request was written, a gateway's 502 or 504): the provider may have taken it. Never
    /// retried blindly, since no API Herald speaks honours an idempotency key; see
    /// [`UnknownOutcome`].
    Unknown {
        reason: String,
        /// A 5xx's `Retry-After`: a provider whose policy is to retry is asked again no
        /// sooner.
        retry_after: Option<Duration>,
    },
    /// The provider refuses our credentials or configuration (HTTP 401, Twilio 20003,
    /// WhatsApp 190): no recipient can succeed until an operator fixes the provider, so the
    /// campaign stops rather than its audience failing (see [`Decision::Halted`]).
    Misconfigured {
        reason: String,
    },
    /// A redirect Herald does not follow (see `egress`) that may come after the request was
    /// taken: 303 See Other answers a POST the server processed, and 301 and 302 do in the
    /// Post/Redirect/Get pattern (307 and 308, which ask for the same request elsewhere, are
    /// [`Misconfigured`](Self::Misconfigured)). The campaign stops as for a refused account,
    /// and the request's outcome is unknown: the recipient is looked up before it is sent
    /// again.
    Redirected {
        reason: String,
    },
    /// Any other 4xx: this request will never succeed.
    Permanent {
        reason: String,
    },
    /// The provider will not send to this recipient because it opted out (Twilio 21610, a
    /// STOP reply): permanent, and true of every later message to it on this channel,
    /// whichever provider would carry it.
    OptedOut {
        reason: String,
    },
}

impl CallResult {
    /// The same result with its reason rewritten (say, scrubbed of secrets).
    pub fn map_reason(self, f: impl FnOnce(String) -> String) -> Self {
        match self {
            CallResult::Accepted { .. } => self,
            CallResult::Throttled {
                reason,
                retry_after,
            } => CallResult::Throttled {
                reason: f(reason),
                retry_after,
            },
            CallResult::RecipientBusy {
                reason,
                retry_after,
            } => CallResult::RecipientBusy {
                reason: f(reason),
                retry_after,
            },
            CallResult::Transient {
                reason,
                retry_after,
            } => CallResult::Transient {
                reason: f(reason),
                retry_after,
            },
            CallResult::Unavailable {
                reason,
                retry_after,
            } => CallResult::Unavailable {
                reason: f(reason),
                retry_after,
            },
            CallResult::Unknown {
                reason,
                retry_after,
            } => CallResult::Unknown {
                reason: f(reason),
                retry_after,
            },
            CallResult::Misconfigured { reason } => CallResult::Misconfigured { reason: f(reason) },
            CallResult::Redirected { reason } => CallResult::Redirected { reason: f(reason) },
            CallResult::Permanent { reason } => CallResult::Permanent { reason: f(reason) },
            CallResult::OptedOut { reason } => CallResult::OptedOut { reason: f(reason) },
        }
    }
}

/// What to record.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Sent {
        provider_message_id: Option<String>,
    },
    /// A lookup found the message an earlier request created, that request's answer lost:
    /// sent through `via`, the provider that request went to (not always this dispatch's:
    /// a retry may be routed to an overflow), which its counts and receipts are under.
    Found {
        provider_message_id: Option<String>,
        via: Uuid,
    },
    Retry {
        error: String,
        delay: Duration,
    },
    /// The answer was lost at a provider that deduplicates requests by their idempotency key
    /// (`unknown_outcome = retry`): asked again after `delay`, and only through it, since
    /// no other provider knows the key (see `delivery::settle_unknown`). Recorded as an
    /// attempt whose outcome is unknown, at that provider.
    Resend {
        error: String,
        delay: Duration,
    },
    Failed {
        error: String,
    },
    /// Failed because the recipient opted out: its address goes on the tenant's suppression
    /// list for the channel, which every later message's lease reads.
    OptedOut {
        error: String,
    },
    /// The campaign expired before the provider call could be made: never sent late.
    Expired,
    /// The provider said "too fast": the recipient waits and tries again without spending
    /// an attempt (the provider's pace is slowed down separately).
    Throttled {
        error: String,
        delay: Duration,
    },
    /// Nothing was sent, through no fault of the recipient: the provider is down (its
    /// circuit breaker is open, or it answered that it is unavailable), cannot be asked
    /// about an earlier request, or cannot be read (gone, its credentials unopenable). The
    /// recipient waits (for the cool-down, if any) without spending an attempt, up to the
    /// worker's deferral limit in a row.
    Deferred {
        error: String,
        delay: Duration,
    },
    /// Nothing was sent, and neither the provider nor the recipient is the reason: Herald's
    /// own gate held the request back (no send slot or live-call line before the lease ran
    /// out, its campaign stopped sending meanwhile, a lookup took the time, the database
    /// did not answer). The recipient waits without spending an attempt; the wait does not
    /// count toward the deferral limit (a night of quiet hours is no provider refusing).
    Postponed {
        error: String,
        delay: Duration,
    },
    /// The provider may have taken the request: the recipient waits `window` for a receipt
    /// before anything is sent again.
    Unknown {
        error: String,
        window: Duration,
    },
    /// The provider refused the account, not the recipient (its credentials, its sender):
    /// every recipient would fail the same way. The campaign is paused with `error` as the
    /// reason and the recipient waits, no attempt spent, for an operator to fix the provider
    /// and resume it. `maybe_sent`: the request may have been taken all the same (a
    /// [`CallResult::Redirected`]), so it is recorded as an attempt whose outcome is unknown.
    Halted {
        error: String,
        maybe_sent: bool,
    },
}

impl CallResult {
    /// What this answer says about the provider's health, for its circuit breaker.
    pub fn health(&self) -> crate::breaker::Health {
        match self {
            // A refused account counts against the provider too: its breaker holds back the
            // other campaigns' requests that would be refused the same way.
            CallResult::Transient { .. }
            | CallResult::Unavailable { .. }
            | CallResult::Unknown { .. }
            | CallResult::Misconfigured { .. }
            | CallResult::Redirected { .. } => crate::breaker::Health::Failing,
            _ => crate::breaker::Health::Up,
        }
    }
}

/// Classifies an HTTP status.
pub fn classify_status(status: u16) -> StatusClass {
    match status {
        200..=299 => StatusClass::Success,
        408 | 425 | 429 => StatusClass::Transient,
        400..=499 => StatusClass::Permanent,
        503 => StatusClass::Unavailable,
        // A POST that failed on the server (500) or behind a gateway (502, 504) may have
        // had its effect: HTTP says nothing of a failed request's side effects.
        // And a status outside HTTP's classes (600 and up) says nothing of what was done.
        500.. => StatusClass::Ambiguous,
        _ => StatusClass::Transient,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    Success,
    Transient,
    /// The provider says it cannot serve now: nothing was done.
    Unavailable,
    /// The provider failed while handling the request (500 and the other 5xx but 503), or
    /// a gateway in front of it lost its answer (502) or gave up waiting for it (504): the
    /// provider may have taken the request.
    Ambiguous,
    Permanent,
}

impl Decision {
    /// The `outcome` label of `herald_messages_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Decision::Sent { .. } | Decision::Found { .. } => "sent",
            Decision::Retry { .. } | Decision::Resend { .. } => "retried",
            Decision::Failed { .. } | Decision::OptedOut { .. } => "failed",
            Decision::Expired => "expired",
            Decision::Throttled { .. } => "throttled",
            Decision::Deferred { .. } | Decision::Postponed { .. } => "deferred",
            Decision::Unknown { .. } => "unknown",
            Decision::Halted { .. } => "halted",
        }
    }
}

/// How long a recipient the provider will not send to again so soon waits, without a
/// `Retry-After`: WhatsApp allows one message from a business number to a user about every
/// 6 seconds.
const PAIR_PAUSE: Duration = Duration::from_secs(6);

/// Decides the recipient's next state after its `attempts`-th attempt. `unit` is a random
/// number in `[0, 1)` for the backoff's jitter.
pub fn decide(result: CallResult, attempts: u32, policy: &Policy, unit: f64) -> Decision {
    let retry = &policy.retry;
    match result {
        CallResult::Accepted {
            provider_message_id,
        } => Decision::Sent {
            provider_message_id,
        },
        CallResult::Permanent { reason } => Decision::Failed { error: reason },
        CallResult::OptedOut { reason } => Decision::OptedOut { error: reason },
        CallResult::Misconfigured { reason } => Decision::Halted {
            error: reason,
            maybe_sent: false,
        },
        CallResult::Redirected { reason } => Decision::Halted {
            error: reason,
            maybe_sent: true,
        },
        CallResult::Throttled {
            reason,
            retry_after,
        } => Decision::Throttled {
            error: reason,
            // Without a Retry-After (or with one of 0: a throttled request asked again at
            // once is throttled again), the first backoff step is a reasonable pause.
            delay: retry_after
                .filter(|d| !d.is_zero())
                .unwrap_or_else(|| retry.delay(1, unit)),
        },
        CallResult::RecipientBusy {
            reason,
            retry_after,
        } => Decision::Deferred {
            error: reason,
            delay: retry_after.unwrap_or(PAIR_PAUSE).max(retry.delay(1, unit)),
        },
        CallResult::Unavailable {
            reason,
            retry_after,
        } => Decision::Deferred {
            error: reason,
            delay: retry.delay(1, unit).max(retry_after.unwrap_or_default()),
        },
        CallResult::Unknown { reason, .. } if policy.unknown != UnknownOutcome::Retry => {
            Decision::Unknown {
                error: reason,
                window: policy.window,
            }
        }
        CallResult::Transient {
            reason,
            retry_after,
        } => transient(reason, retry_after, attempts, retry, unit),
        CallResult::Unknown {
            reason,
            retry_after,
        } => match transient(reason.clone(), retry_after, attempts, retry, unit) {
            Decision::Retry { error, delay } => Decision::Resend { error, delay },
            // Its last attempt may have been sent: not failed, but waiting for a receipt,
            // and then failed by the lookup if none came (no attempt is left to resend).
            _ => Decision::Unknown {
                error: reason,
                window: policy.window,
            },
        },
    }
}

/// A failure that may pass: another attempt after a backoff, unless this was the last.
fn transient(
    reason: String,
    retry_after: Option<Duration>,
    attempts: u32,
    policy: &RetryPolicy,
    unit: f64,
) -> Decision {
    if policy.allows_another(attempts) {
        let delay = policy
            .delay(attempts, unit)
            .max(retry_after.unwrap_or_default());
        Decision::Retry {
            error: reason,
            delay,
        }
    } else {
        Decision::Failed {
            error: format!("{reason} (gave up after {attempts} attempts)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            retry: RetryPolicy {
                max_attempts: 4,
                base: Duration::from_millis(100),
                cap: Duration::from_secs(5),
            },
            unknown: UnknownOutcome::AwaitReceipt,
            window: Duration::from_secs(120),
        }
    }

    #[test]
    fn statuses_are_classified() {
        assert_eq!(classify_status(200), StatusClass::Success);
        assert_eq!(classify_status(201), StatusClass::Success);
        assert_eq!(classify_status(429), StatusClass::Transient);
        assert_eq!(classify_status(500), StatusClass::Ambiguous);
        assert_eq!(classify_status(599), StatusClass::Ambiguous);
        assert_eq!(classify_status(600), StatusClass::Ambiguous);
        assert_eq!(classify_status(999), StatusClass::Ambiguous);
        assert_eq!(classify_status(503), StatusClass::Unavailable);
        assert_eq!(classify_status(502), StatusClass::Ambiguous);
        assert_eq!(classify_status(504), StatusClass::Ambiguous);
        assert_eq!(classify_status(400), StatusClass::Permanent);
        assert_eq!(classify_status(404), StatusClass::Permanent);
        assert_eq!(classify_status(408), StatusClass::Transient);
    }

    #[test]
    fn transient_failures_retry_until_the_last_attempt() {
        let transient = || CallResult::Transient {
            reason: "HTTP 500".into(),
            retry_after: None,
        };
        assert!(
            matches!(decide(transient(), 1, &policy(), 0.0), Decision::Retry { delay, .. } if delay == Duration::from_millis(50))
        );
        assert!(
            matches!(decide(transient(), 3, &policy(), 1.0), Decision::Retry { delay, .. } if delay == Duration::from_millis(400))
        );
        assert!(matches!(
            decide(transient(), 4, &policy(), 0.0),
            Decision::Failed { .. }
        ));
    }

    #[test]
    fn retry_after_is_a_floor_on_the_delay() {
        let throttled = CallResult::Transient {
            reason: "HTTP 429".into(),
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(
            decide(throttled, 1, &policy(), 0.0),
            Decision::Retry {
                error: "HTTP 429".into(),
                delay: Duration::from_secs(3)
            }
        );
    }

    #[test]
    fn a_recipient_the_provider_will_not_take_again_so_soon_is_put_off() {
        let busy = |retry_after| CallResult::RecipientBusy {
            reason: "whatsapp 131056 (HTTP 400): pair rate limit hit".into(),
            retry_after,
        };
        // On its last attempt too, and the provider's health is not in question.
        assert!(busy(None).health() == crate::breaker::Health::Up);
        let Decision::Deferred { delay, .. } = decide(busy(None), 4, &policy(), 0.0) else {
            panic!("not put off")
        };
        assert!(delay >= Duration::from_secs(6), "{delay:?}");
        let Decision::Deferred { delay, .. } =
            decide(busy(Some(Duration::from_secs(30))), 1, &policy(), 0.0)
        else {
            panic!("not put off")
        };
        assert!(delay >= Duration::from_secs(30), "{delay:?}");
    }

    #[test]
    fn throttling_waits_without_spending_attempts() {
        let throttled = |retry_after| CallResult::Throttled {
            reason: "twilio 20429 (HTTP 429): Too Many Requests".into(),
            retry_after,
        };
        assert_eq!(
            decide(throttled(Some(Duration::from_secs(2))), 1, &policy(), 0.0),
            Decision::Throttled {
                error: "twilio 20429 (HTTP 429): Too Many Requests".into(),
                delay: Duration::from_secs(2)
            }
        );
        // Even on what would be the last attempt: a throttle is not the recipient's failure.
        assert!(matches!(
            decide(throttled(None), 4, &policy(), 0.0),
            Decision::Throttled { .. }
        ));
        // "Retry-After: 0" is no pause at all: the first backoff step, as without one.
        let Decision::Throttled { delay, .. } =
            decide(throttled(Some(Duration::ZERO)), 1, &policy(), 0.0)
        else {
            panic!("not throttled");
        };
        assert!(delay > Duration::ZERO);
    }

    #[test]
    fn a_refused_account_halts_the_campaign_and_spends_no_attempt() {
        let refused = || CallResult::Misconfigured {
            reason: "twilio 20003 (HTTP 401): Authenticate".into(),
        };
        // On any attempt, the last included: the account, not the recipient, is at fault.
        for attempt in [1, 4, 9] {
            assert_eq!(
                decide(refused(), attempt, &policy(), 0.0),
                Decision::Halted {
                    error: "twilio 20003 (HTTP 401): Authenticate".into(),
                    maybe_sent: false,
                }
            );
        }
        assert_eq!(refused().health(), crate::breaker::Health::Failing);
        // A redirect that may follow a request taken: halted too, its outcome unknown.
        let see_other = CallResult::Redirected {
            reason: "HTTP 303".into(),
        };
        assert_eq!(see_other.health(), crate::breaker::Health::Failing);
        assert_eq!(
            decide(see_other, 1, &policy(), 0.0),
            Decision::Halted {
                error: "HTTP 303".into(),
                maybe_sent: true,
            }
        );
        assert_eq!(
            CallResult::Permanent {
                reason: "twilio 21211".into()
            }
            .health(),
            crate::breaker::Health::Up
        );
    }

    #[test]
    fn an_unavailable_provider_costs_no_attempt() {
        let down = CallResult::Unavailable {
            reason: "HTTP 503".into(),
            retry_after: Some(Duration::from_secs(7)),
        };
        // Even on the last attempt: the provider being down is not the recipient's failure.
        assert_eq!(
            decide(down, 4, &policy(), 0.0),
            Decision::Deferred {
                error: "HTTP 503".into(),
                delay: Duration::from_secs(7)
            }
        );
    }

    #[test]
    fn an_unknown_outcome_waits_for_a_receipt_unless_the_provider_deduplicates() {
        let lost = || CallResult::Unknown {
            reason: "no answer within 5s".into(),
            retry_after: None,
        };
        assert_eq!(
            decide(lost(), 4, &policy(), 0.0),
            Decision::Unknown {
                error: "no answer within 5s".into(),
                window: Duration::from_secs(120)
            }
        );
        let fail = Policy {
            unknown: UnknownOutcome::Fail,
            ..policy()
        };
        assert!(matches!(
            decide(lost(), 1, &fail, 0.0),
            Decision::Unknown { .. }
        ));
        let retry = Policy {
            unknown: UnknownOutcome::Retry,
            ..policy()
        };
        assert!(matches!(
            decide(lost(), 1, &retry, 0.0),
            Decision::Resend { .. }
        ));
        // No attempt left: it may still have been sent, so it waits for a receipt.
        assert!(matches!(
            decide(lost(), 4, &retry, 0.0),
            Decision::Unknown { .. }
        ));
        // A 500 with a Retry-After, retried: no sooner than the provider asked.
        let asked_to_wait = CallResult::Unknown {
            reason: "HTTP 500".into(),
            retry_after: Some(Duration::from_secs(90)),
        };
        assert_eq!(
            decide(asked_to_wait, 1, &retry, 0.0),
            Decision::Resend {
                error: "HTTP 500".into(),
                delay: Duration::from_secs(90)
            }
        );
    }

    #[test]
    fn permanent_failures_and_successes_are_final() {
        assert_eq!(
            decide(
                CallResult::Permanent {
                    reason: "HTTP 400".into()
                },
                1,
                &policy(),
                0.5
            ),
            Decision::Failed {
                error: "HTTP 400".into()
            }
        );
        assert_eq!(
            decide(
                CallResult::Accepted {
                    provider_message_id: Some("x".into())
                },
                2,
                &policy(),
                0.5
            ),
            Decision::Sent {
                provider_message_id: Some("x".into())
            }
        );
    }
}
