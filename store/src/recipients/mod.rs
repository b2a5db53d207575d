//! A recipient's state machine: every statement that moves a recipient from one state to
//! another. States are [`RecipientState`]; the transitions, and who makes them:
//!
//! | from | to | by | where |
//! |---|---|---|---|
//! | `pending` | `queued` | the scheduler's row claim of retries and transactional messages (bumps `dispatch_seq`, the fencing token) | [`claim::claim`] |
//! | `pending` (unchanged) | | the scheduler's range claim of a campaign's first attempts: the campaign's `claimed_through` cursor moves past them | [`claim::claim`] |
//! | `queued` | `pending` | the scheduler, when a publish was not confirmed (a range-claimed first attempt: its cursor moves back) | [`claim::release`] |
//! | `queued` / range-claimed `pending` | `failed` | the scheduler, when the message cannot be rendered | [`claim::fail_unrenderable`] |
//! | `queued` / `pending` with no attempt made | `sending` | the worker's lease, if the campaign may send now | [`lease::begin`] |
//! | `queued` / range-claimed `pending` | `pending` / `cancelled` / `expired` | the worker's lease, parking a message whose campaign may not send (a range-claimed one back to waiting: its cursor moves back) | [`lease::begin`] |
//! | `queued` / `pending` with no attempt made | `failed` | the worker's lease, a message whose campaign may send now to an address on its tenant's suppression list for the channel (no attempt spent) | [`lease::begin`] |
//! | `sending` | `failed`, and its address onto the suppression list | the worker, a provider's refusal because the recipient opted out (Twilio 21610) | [`record::record`] |
//! | `sending` (or a sweeper's guess) | `sent` / `failed` / `pending` / `unknown` / `expired` | the worker, after the provider's answer (`failed` too for one put off, no attempt spent, past the deferral limit) | [`record::record`] |
//! | `queued` | `pending` | the sweeper, a claim whose message may be lost | [`sweep::requeue_stale_claims`] |
//! | range-claimed `pending` | `pending` | the sweeper, a range claim whose message may be lost, or first attempts handed back whose campaign's row was busy then: its cursor moves back | [`sweep::rewind_stale_first_claims`] |
//! | `sending` | `unknown` / `pending` | the sweeper, a lease that ran out | [`sweep::recover_expired_leases`] |
//! | `unknown` | `pending` | the sweeper, a provider's window passed without a receipt | [`sweep::retry_unknown_outcomes`] |
//! | `sending` (unchanged) | | the worker, once its lookup ruled out an earlier attempt whose outcome was unknown, before it sends again: the next unknown outcome is this attempt's | [`reconcile::rule_out_earlier_attempt`] |
//! | `pending` | `cancelled` / `expired` | the sweeper, a cancelled or expired campaign | [`sweep::end_waiting_recipients`] |
//! | `pending` | `expired` | the sweeper, a transactional message past its own expiry, or a recipient whose address was erased while it was in flight | [`sweep::expire_messages`] |
//! | `pending` / `queued` | `cancelled` | the admin, a transactional message its tenant withdrew, no earlier request of which may have been sent (a `queued` one's dispatch is then acked unsent by the lease) | [`crate::messages::cancel`] |
//! | `pending` / `queued` (range-claimed too) | `cancelled` | the admin, a recipient or message whose address its tenant erased (a dispatch already published is acked unsent by the lease); one `sending` or `unknown` gets its own expiry set to now instead, so that it is never sent again | [`crate::erasures::erase`] |
//!
//! Receipts (in `herald_store::receipts`) change a recipient's delivery status and settle
//! an `unknown` outcome as `sent`. Terminal states (`sent`, `failed`, `cancelled`,
//! `expired`) never change again.
//!
//! Every statement that updates several recipients looks each up by primary key and locks
//! them in id order, up front (`by_recipient`), so two of them never wait on each other in
//! a cycle, whatever join the planner picks for the update. Campaign rows are the same for
//! the statements that lock several of them while others may: the claim's cursors, the
//! cursor rewinds, a worker's first sends and pauses, and receipts' first sends lock them in
//! id order first, and after their recipients (the claim waits for none of its recipients:
//! it reads a range's, and skips locked retries). The scheduler's activation and completion
//! of campaigns touch campaigns no claim holds (not yet running, or with nothing due).

pub mod audience;
pub mod claim;
pub mod lease;
pub mod reconcile;
pub mod record;
pub mod sweep;

pub use herald_shared::domain::RecipientState;

/// A recipient's state in the OpenAPI document: one of [`RecipientState::ALL`].
pub fn state_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(RecipientState::ALL.iter().map(|s| s.as_str())))
        .build()
}

/// `items` in recipient order (see the module's note on locks).
pub(crate) fn by_recipient<T>(items: &[T], id: impl Fn(&T) -> i64) -> Vec<&T> {
    let mut sorted: Vec<&T> = items.iter().collect();
    sorted.sort_by_key(|item| id(item));
    sorted
}

#[cfg(test)]
mod tests {
    use super::by_recipient;

    #[test]
    fn recipients_are_taken_in_id_order() {
        let items = [(7_i64, 'a'), (3, 'b'), (5, 'c'), (3, 'd')];
        let sorted: Vec<char> = by_recipient(&items, |i| i.0).iter().map(|i| i.1).collect();
        // Stable: equal ids keep their order.
        assert_eq!(sorted, vec!['b', 'd', 'c', 'a']);
    }
}
