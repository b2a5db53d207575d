//! The worker's lease before a provider call: `queued → sending` (or `pending → sending`
//! for a first attempt its campaign claimed by range, see [`super::claim`]), or parked.
//!
//! [`begin`] takes a lease on recipients (`→ sending`, attempts + 1, `sent_via` = the
//! message's provider) only if the message still matches the row's `dispatch_seq` and the
//! campaign may send now (`herald_may_send`); anything else (finished, stale, re-dispatched)
//! is answered `None` and its message is acked unsent. Messages of a campaign that may not
//! send are parked where `herald_held_state` says: a paused campaign's, one inside its
//! quiet hours, or one not running for any other reason (a paused campaign resumed to wait
//! for a later start is `scheduled` again), back to `pending` (the scheduler releases it
//! again later, with no attempt spent; a first attempt claimed by range stays `pending` and
//! its campaign's cursor moves back below it); a cancelled one's to `cancelled`; one past its
//! expiry to `expired`. One whose address is on its tenant's suppression list for the
//! channel (the `suppressions` migration) ends `failed`, no attempt spent. So a message
//! already in the queue when a campaign is paused, reaches its quiet hours or expires is
//! never sent.
//!
//! A first attempt claimed by range goes `pending → sending` here. Neither state has a
//! counter bucket of its own (both are a campaign's unfinished recipients), so a lease
//! appends nothing to the counter ledger (a message it ends, parked as `cancelled` or
//! `expired` or failed for the suppression list, does, by the counters' trigger).
//!
//! This statement and [`super::record`]'s must look recipients up by primary key, and the
//! planner does not always see it: a generic plan is blind to the array's size (it guesses
//! 10 rows), and statistics taken before a big campaign was loaded make walking that
//! campaign's index look cheap (measured: 22 ms per lease statement of 40 rows, 60 ms for
//! 250, instead of about 2 ms). So each reads the rows through lookups the planner cannot
//! reorder (a lateral primary-key lookup behind `OFFSET 0`), which hold in the generic plan
//! of the statement prepared once per connection too.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

/// One message's claim on a recipient, as one delivery of it carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dispatch {
    pub recipient_id: i64,
    pub seq: i32,
    /// The provider the message goes to (the campaign's primary or its overflow): its
    /// timeout sizes the lease.
    pub provider: Uuid,
    /// Drawn for this delivery: its lease and its outcome carry it, so that a statement
    /// tried again after its commit was lost finds its own work done (see the migration
    /// `lease_tokens`). Another delivery of the same message has another.
    pub token: Uuid,
}

impl Dispatch {
    /// A delivery's dispatch, with a token of its own.
    pub fn new(recipient_id: i64, seq: i32, provider: Uuid) -> Self {
        Self {
            recipient_id,
            seq,
            provider,
            token: Uuid::new_v4(),
        }
    }
}

/// A lease this worker now holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begun {
    /// The attempt's number, attempts that said nothing about the recipient not counted.
    pub attempts: u32,
    /// An earlier attempt whose outcome is unknown: that request may have been sent, so the
    /// worker looks it up before sending again.
    pub unknown: Option<UnknownAttempt>,
    /// The revision of the message's provider when the lease was taken: a cached copy of
    /// the provider older than this is read again (its credentials were rotated).
    pub provider_revision: i32,
}

/// An attempt whose request may have been sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownAttempt {
    /// When it began (its request was made after).
    pub since: DateTime<Utc>,
    /// The provider it went to.
    pub via: Uuid,
}

/// Why a recipient whose address is on its tenant's suppression list ended unsent.
pub const SUPPRESSED: &str =
    "not sent: the address is on the tenant's suppression list for this channel (it opted out)";

/// `dispatches` in recipient order (see the module's note on locks), each dispatch once.
/// Two messages for one first attempt claimed by range carry the same dispatch (a cursor
/// moved back while the first was queued), maybe through different lanes: only the first
/// of them asks for the lease (the row would take one provider's timeout, `sent_via` and
/// lease token from whichever the update met first, and the token would not be the one
/// its worker holds); the others are answered `None` by [`begin`]. Sorted by dispatch, not
/// recipient alone: a stale message of the recipient between two copies would otherwise
/// keep both.
fn one_per_dispatch(dispatches: &[Dispatch]) -> Vec<&Dispatch> {
    let mut sorted: Vec<&Dispatch> = dispatches.iter().collect();
    // Stable: of equal dispatches the first stays.
    sorted.sort_by_key(|d| (d.recipient_id, d.seq));
    sorted.dedup_by_key(|d| (d.recipient_id, d.seq));
    sorted
}

/// Begins attempts; answers, per dispatch, the lease if this worker now holds it, or `None`
/// if the message must not be sent.
///
/// Only a `queued` recipient, or a `pending` one with no attempt made, is leased. One
/// `sending` under this dispatch's own lease (this statement's earlier try committed, its
/// answer lost) is leased again as it was, its lease renewed from now; one `sending` under
/// another's is that worker's, or the sweeper's to judge once the lease runs out (its
/// request may have been sent): its message is acked unsent.
pub async fn begin(
    pool: &PgPool,
    dispatches: &[Dispatch],
    lease_grace: Duration,
) -> Result<Vec<Option<Begun>>, sqlx::Error> {
    let sorted = one_per_dispatch(dispatches);
    let ids: Vec<i64> = sorted.iter().map(|d| d.recipient_id).collect();
    let seqs: Vec<i32> = sorted.iter().map(|d| d.seq).collect();
    let providers: Vec<Uuid> = sorted.iter().map(|d| d.provider).collect();
    let tokens: Vec<Uuid> = sorted.iter().map(|d| d.token).collect();
    let rows = sqlx::query!(
        r#"WITH m AS (SELECT * FROM unnest($1::bigint[], $2::int[], $4::uuid[], $5::uuid[]) AS m(id, seq, provider, token)),
         -- One primary-key lookup per message, whatever the statistics say (OFFSET 0 keeps
         -- the planner from merging it into a join that walks a campaign's index instead).
         current AS MATERIALIZED (
             SELECT x.* FROM m CROSS JOIN LATERAL (
                 SELECT r.id, r.dispatch_seq AS seq, r.state, r.attempts, r.campaign_id, r.address, m.provider,
                        r.expires_at AS own_expiry, m.token, r.lease_token = m.token AS own_lease
                 FROM recipients r WHERE r.id = m.id AND r.dispatch_seq = m.seq OFFSET 0 FOR UPDATE
             ) x
         ),
         -- Each message's campaign by its primary key, whatever the statistics say: joined
         -- plainly, a plan made while few campaigns were running walks every running
         -- campaign (`campaigns_active`) once per message, seen after ten thousand started.
         with_campaign AS MATERIALIZED (
             -- A transactional message's own expiry counts beside its stream's (LEAST skips NULLs).
             -- An address on its tenant's suppression list for the channel is not sent to:
             -- the one gate every send passes, whatever provider it would go to.
             SELECT k.*, c.status, least(c.expires_at, k.own_expiry) AS expires_at,
                    c.quiet_start, c.quiet_end, c.time_zone, c.tenant_id,
                    EXISTS (SELECT 1 FROM suppressions s WHERE s.tenant_id = c.tenant_id
                            AND s.channel = c.channel AND s.address = k.address) AS suppressed
             FROM current k CROSS JOIN LATERAL (
                 SELECT c.status, c.expires_at, c.quiet_start, c.quiet_end, c.time_zone, c.tenant_id, c.channel
                 FROM campaigns c WHERE c.id = k.campaign_id OFFSET 0
             ) c
             -- Queued by a row claim, or a first attempt claimed by range (no attempt made
             -- yet: a second message for it finds it taken).
             WHERE k.state = 'queued' OR (k.state = 'pending' AND k.attempts = 0)
         ),
         -- The lease covers the provider the message goes to: an overflow provider's
         -- timeout may be longer than the primary's. And, in `begun` and `relet`, the
         -- provider an earlier attempt whose outcome is unknown went to (`unknown_via`):
         -- the worker may look it up there, or send again through it alone (one that
         -- deduplicates by its key), whatever lane the message came by; a request
         -- outliving the lease would race the sweeper's judgement and the next dispatch's
         -- request. (Read only for such a recipient: a CASE evaluates the branch it takes.)
         startable AS MATERIALIZED (
             SELECT k.id, k.seq, k.state, k.attempts, k.provider, k.token, p.timeout_ms, p.revision
             FROM with_campaign k JOIN providers p ON p.id = k.provider
             WHERE herald_may_send(k.status, k.expires_at, k.quiet_start, k.quiet_end, k.time_zone, now())
               AND NOT k.suppressed
         ),
         -- The state is compared with the row as read above, not with a constant, so no
         -- partial index on state looks like a shortcut to the planner. The scan sees the
         -- row as the statement's snapshot had it: a change committed while `current` waited
         -- for the row (a claim's or a sweeper's) leaves it unleased, its message acked
         -- unsent, and the recipient to whoever changed it (unlike an outcome, a lease
         -- may be given up).
         begun AS (
             UPDATE recipients r
             SET state = 'sending', attempts = r.attempts + 1, updated_at = now(), sent_via = s.provider,
                 attempted_at = now(), lease_token = s.token,
                 lease_until = now() + make_interval(secs => CASE WHEN r.unknown_via IS NULL THEN s.timeout_ms
                                                   ELSE greatest(s.timeout_ms, (SELECT u.timeout_ms FROM providers u WHERE u.id = r.unknown_via)) END / 1000.0 + $3::float8)
             FROM startable s
             WHERE r.id = s.id AND r.dispatch_seq = s.seq AND r.state = s.state AND r.attempts = s.attempts
             RETURNING r.id, r.dispatch_seq, r.attempts - r.throttles AS attempts,
                       r.outcome_unknown_at, r.unknown_via, s.revision
         ),
         -- This dispatch's own lease, taken by an earlier try of this statement whose answer
         -- was lost: leased again as it was, renewed from now (the worker's deadline counts
         -- from its first try, so it ends before the lease does). Not past the message's own
         -- expiry (an erasure of its address sets it): the lease then runs out unused.
         relet AS (
             UPDATE recipients r
             SET lease_until = now() + make_interval(secs => CASE WHEN r.unknown_via IS NULL THEN p.timeout_ms
                                                   ELSE greatest(p.timeout_ms, (SELECT u.timeout_ms FROM providers u WHERE u.id = r.unknown_via)) END / 1000.0 + $3::float8),
                 updated_at = now()
             FROM current k JOIN providers p ON p.id = k.provider
             WHERE r.id = k.id AND r.dispatch_seq = k.seq AND k.state = 'sending' AND k.own_lease
               AND (k.own_expiry IS NULL OR k.own_expiry > now())
             RETURNING r.id, r.dispatch_seq, r.attempts - r.throttles AS attempts,
                       r.outcome_unknown_at, r.unknown_via, p.revision
         ),
         -- A suppressed address fails only where it would be sent now: held back (a pause,
         -- quiet hours) it waits like the others, and the list is read again when it is
         -- released (an opt-out may be withdrawn meanwhile); cancelled or expired, it ends so.
         parkable AS MATERIALIZED (
             SELECT k.id, k.seq, k.state, k.campaign_id, k.tenant_id, k.provider,
                    CASE WHEN herald_may_send(k.status, k.expires_at, k.quiet_start, k.quiet_end, k.time_zone, now())
                         THEN 'failed' ELSE herald_held_state(k.status, k.expires_at, now()) END AS final_state
             FROM with_campaign k
             WHERE k.suppressed
                OR NOT herald_may_send(k.status, k.expires_at, k.quiet_start, k.quiet_end, k.time_zone, now())
         ),
         parked AS (
             UPDATE recipients r
             SET state = p.final_state, queued_at = NULL, updated_at = now(),
                 last_error = CASE WHEN p.final_state = 'pending' THEN r.last_error
                                   WHEN p.final_state = 'failed'
                                   THEN herald_ended_unsent_error(r.outcome_unknown_at, $6)
                                   ELSE herald_ended_unsent_error(r.outcome_unknown_at, r.last_error) END
             FROM parkable p
             -- A first attempt claimed by range that goes back to waiting is not written:
             -- its campaign's cursor moves back below it instead (`rewound`).
             WHERE r.id = p.id AND r.dispatch_seq = p.seq AND r.state = p.state AND p.state <> p.final_state
             RETURNING r.id, r.state
         ), unclaimed AS MATERIALIZED (
             SELECT campaign_id, min(id) AS lowest, max(id) AS highest FROM parkable
             WHERE state = 'pending' AND final_state = 'pending' GROUP BY campaign_id
         ),
         -- Campaign rows locked in id order, as by every statement that writes several (the
         -- claim among them). One locked by someone else is skipped, not waited for (an
         -- upload to a campaign scheduled again holds its row as long as it streams, and
         -- the lease must not wait on it; so may another lease parking the same campaign's
         -- messages at the same moment, as when it is paused).
         cursors AS MATERIALIZED (
             SELECT c.id FROM campaigns c WHERE c.id IN (SELECT campaign_id FROM unclaimed)
             ORDER BY c.id FOR NO KEY UPDATE SKIP LOCKED
         ), rewound AS (
             UPDATE campaigns c SET claimed_through = h.lowest - 1
             FROM unclaimed h
             WHERE c.id = h.campaign_id AND c.id IN (SELECT id FROM cursors)
               AND c.claimed_through >= h.lowest
         ),
         -- A skipped cursor is owed a move back below the range parked: recorded for the
         -- sweeper's next pass (`sweep::rewind_stale_first_claims`) rather than left to
         -- its stale-claim pass a requeue window later, when a resumed campaign's parked
         -- recipients would go out a minute behind the rest. Not for a cursor already
         -- below them (only claims move it forward, past what they publish).
         owed AS (
             INSERT INTO first_claims (campaign_id, owed_from, through)
             SELECT h.campaign_id, h.lowest, h.highest
             FROM unclaimed h JOIN campaigns c ON c.id = h.campaign_id
             WHERE h.campaign_id NOT IN (SELECT id FROM cursors) AND c.kind = 'campaign'
               AND c.claimed_through >= h.lowest
         )
         SELECT id AS "id!", dispatch_seq AS "dispatch_seq!", attempts AS "attempts!",
                outcome_unknown_at AS "outcome_unknown_at?", unknown_via AS "unknown_via?",
                revision AS "revision!", NULL::uuid AS "suppressed_tenant?",
                NULL::uuid AS "suppressed_campaign?", NULL::uuid AS "suppressed_provider?"
         FROM begun
         UNION ALL
         SELECT id, dispatch_seq, attempts, outcome_unknown_at, unknown_via, revision, NULL, NULL, NULL FROM relet
         UNION ALL
         -- Failed here for the suppression list: counted as outcomes are, once written.
         SELECT p.id, p.seq, 0, NULL, NULL, 0, p.tenant_id, p.campaign_id, p.provider
         FROM parkable p JOIN parked d ON d.id = p.id WHERE d.state = 'failed'"#,
        &ids,
        &seqs,
        lease_grace.as_secs_f64(),
        &providers,
        &tokens,
        SUPPRESSED,
    )
    .fetch_all(pool)
    .await?;
    let (suppressed, rows): (Vec<_>, Vec<_>) = rows
        .into_iter()
        .partition(|row| row.suppressed_campaign.is_some());
    for row in suppressed {
        if let (Some(tenant), Some(campaign), Some(provider)) = (
            row.suppressed_tenant,
            row.suppressed_campaign,
            row.suppressed_provider,
        ) {
            herald_shared::ops::metrics::message(&tenant, &campaign, &provider, "suppressed");
        }
    }
    let mut begun: HashMap<(i64, i32), Begun> = rows
        .into_iter()
        .map(|row| {
            let lease = Begun {
                attempts: u32::try_from(row.attempts).unwrap_or(0),
                unknown: row
                    .outcome_unknown_at
                    .zip(row.unknown_via)
                    .map(|(since, via)| UnknownAttempt { since, via }),
                provider_revision: row.revision,
            };
            ((row.id, row.dispatch_seq), lease)
        })
        .collect();
    Ok(dispatches
        .iter()
        // Taken, not copied: the row's one lease goes to the first message for it only.
        .map(|d| begun.remove(&(d.recipient_id, d.seq)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_dispatch_asks_once_its_first_message_kept() {
        let provider = Uuid::new_v4();
        let first = Dispatch::new(7, 3, provider);
        let stale = Dispatch::new(7, 2, provider);
        let copy = Dispatch::new(7, 3, provider);
        let other = Dispatch::new(5, 1, provider);
        let messages = [first, stale, copy, other];
        let asked = one_per_dispatch(&messages);
        // Recipients in id order; the copy behind the stale message dropped, the first kept.
        let tokens: Vec<Uuid> = asked.iter().map(|d| d.token).collect();
        assert_eq!(tokens, vec![other.token, stale.token, first.token]);
    }
}
