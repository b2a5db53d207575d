//! The worker's outcome after a provider call: what the provider's answer (or its absence)
//! makes of the recipient.

use super::by_recipient;
use super::lease::Dispatch;
use herald_shared::domain::RecipientState;
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

/// An outcome to record: what one provider call made of its recipient.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub dispatch: Dispatch,
    /// The provider the message went to (a campaign's primary or its overflow).
    pub provider: Uuid,
    /// `sent`, `failed`, `expired`, `unknown` (the answer never came), or `pending` (due
    /// again after `due_in`).
    pub state: RecipientState,
    /// The provider's id for the message it created.
    pub message_id: Option<String>,
    pub error: Option<String>,
    /// When the recipient is next due: a retry's backoff, or the end of an unknown
    /// outcome's window. `None` keeps the time it had.
    pub due_in: Option<Duration>,
    /// The attempt said nothing about the recipient (throttled, deferred, halted): it is
    /// not counted against its attempts.
    pub uncounted: bool,
    /// The provider would not take it (a 429, a 503, its breaker open, a lookup it did not
    /// answer): uncounted, and toward the deferral limit. Other uncounted outcomes (Herald's
    /// own gate held it back; a halt) neither start nor end a run of deferrals.
    pub put_off: bool,
    /// The provider refused the account: the campaign is paused with this reason.
    pub halt: Option<String>,
    /// The answer was lost, though the recipient is due again (`pending`) after `due_in`: its
    /// provider deduplicates requests by key. The attempt is kept as one whose outcome is
    /// unknown (when, and at which provider), so that the next request goes there.
    pub answer_lost: bool,
    /// The provider refused it because the recipient opted out (Twilio 21610): its address
    /// goes on the tenant's suppression list for the channel, so that no later message
    /// reaches it through any provider.
    pub opted_out: bool,
}

/// Records outcomes in one statement (and marks each campaign's first send).
///
/// An outcome lands while its dispatch is the recipient's current one and the recipient is
/// still `sending`, or was taken back by the sweeper while this outcome could not be written
/// (`unknown`, or `pending` for a provider that retries): what this worker learnt is newer
/// than the sweeper's guess. Anything else means someone else owns the recipient now, or a
/// receipt already settled it as sent: the outcome is ignored.
///
/// Only the delivery that holds the lease records (its `token`), once: the outcome clears
/// the token, so the same outcomes written again (their commit was lost in transit) change
/// nothing the second time.
///
/// A send whose receipts arrived first, under a message id not yet recorded (parked), takes
/// their status here. An outcome with a `halt` pauses its campaign, if it is running,
/// with the provider's answer as the reason.
///
/// A recipient put off by its provider (`put_off`) for longer than
/// `max_deferral` (since the first such outcome in a row, or its campaign's last resume if
/// later) ends `failed` instead: a provider that never takes it again would otherwise keep it,
/// and its campaign, going for ever. Answers the ids of the recipients so given up.
///
/// An outcome `opted_out` puts its address on its tenant's suppression list for its
/// campaign's channel, in the same statement (kept if it is there already).
pub async fn record(
    pool: &PgPool,
    outcomes: &[Outcome],
    max_deferral: Duration,
) -> Result<Vec<i64>, sqlx::Error> {
    let outcomes = by_recipient(outcomes, |o| o.dispatch.recipient_id);
    let mut ids = Vec::with_capacity(outcomes.len());
    let mut seqs = Vec::with_capacity(outcomes.len());
    let mut states = Vec::with_capacity(outcomes.len());
    let mut message_ids: Vec<Option<String>> = Vec::with_capacity(outcomes.len());
    let mut errors: Vec<Option<String>> = Vec::with_capacity(outcomes.len());
    let mut delays: Vec<Option<f64>> = Vec::with_capacity(outcomes.len());
    let mut throttles: Vec<i32> = Vec::with_capacity(outcomes.len());
    let mut pauses: Vec<Option<String>> = Vec::with_capacity(outcomes.len());
    let mut lost: Vec<bool> = Vec::with_capacity(outcomes.len());
    let mut put_off: Vec<bool> = Vec::with_capacity(outcomes.len());
    let mut opted_out: Vec<bool> = Vec::with_capacity(outcomes.len());
    let providers: Vec<Uuid> = outcomes.iter().map(|o| o.provider).collect();
    let tokens: Vec<Uuid> = outcomes.iter().map(|o| o.dispatch.token).collect();
    for outcome in outcomes {
        ids.push(outcome.dispatch.recipient_id);
        seqs.push(outcome.dispatch.seq);
        throttles.push(i32::from(outcome.uncounted));
        pauses.push(outcome.halt.clone());
        lost.push(outcome.answer_lost);
        put_off.push(outcome.put_off);
        opted_out.push(outcome.opted_out);
        states.push(outcome.state.as_str());
        message_ids.push(outcome.message_id.clone());
        errors.push(outcome.error.clone());
        delays.push(outcome.due_in.map(|d| d.as_secs_f64()));
    }
    let rows = sqlx::query!(
        "WITH o AS (
             SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::text[], $6::float8[], $7::int[], $8::uuid[], $10::text[], $11::bool[], $12::uuid[], $14::bool[], $15::bool[])
                 AS o(id, seq, state, message_id, error, delay, throttled, provider, pause, lost, token, put_off, opted_out)
         ),
         -- As in `begin`: primary-key lookups the planner cannot reorder. The row is locked
         -- here, and the state it has then is the one judged: the update below does not
         -- compare states again, since its scan sees the row as the statement's snapshot
         -- had it. A sweeper that took the recipient back (`sending` to `unknown`) and
         -- committed while this statement waited for the row would otherwise have its
         -- guess kept, and what this worker learnt dropped.
         -- `gave_up`: put off once more, past the deferral limit, counted from the first
         -- deferral in a row or the campaign's last resume (a pause is no deferral). Only
         -- while it may send: a recipient of a campaign cancelled or expired meanwhile (or a
         -- message past its own expiry) is left to the sweeper, which ends it so.
         leased AS MATERIALIZED (
             SELECT o.*, x.state AS row_state,
                    (o.put_off
                     AND x.deferred_since < now() - make_interval(secs => $13)
                     AND (x.expires_at IS NULL OR x.expires_at > now())
                     AND EXISTS (SELECT 1 FROM campaigns c WHERE c.id = x.campaign_id
                                 AND c.status = 'running'
                                 AND (c.expires_at IS NULL OR c.expires_at > now())
                                 AND (c.resumed_at IS NULL
                                      OR c.resumed_at <= now() - make_interval(secs => $13)))) AS gave_up
             FROM o CROSS JOIN LATERAL (
                 SELECT r.state, r.lease_token, r.deferred_since, r.campaign_id, r.expires_at
                 FROM recipients r
                 WHERE r.id = o.id AND r.dispatch_seq = o.seq OFFSET 0 FOR UPDATE
             ) x
             WHERE x.state IN ('sending', 'unknown', 'pending') AND x.lease_token = o.token
         ),
         -- Receipts parked under this send's message id (served by a partial index that
         -- holds only parked receipts, so this costs next to nothing when there are none).
         parked AS MATERIALIZED (
             SELECT l.id, p.status, p.rank, p.error_code FROM leased l CROSS JOIN LATERAL (
                 SELECT p.status, p.rank, p.error_code FROM receipts p
                 WHERE l.state = 'sent' AND l.message_id IS NOT NULL
                   AND p.provider_id = l.provider AND p.message_id = l.message_id
                   AND p.recipient_id IS NULL
                 -- Of copies (one rank, one status), the first: a copy's error code may
                 -- differ, and the first is the one a receipt not parked would have given.
                 ORDER BY p.rank DESC, p.duplicate, p.id LIMIT 1
             ) p
         ),
         adopted AS (
             UPDATE receipts p SET recipient_id = l.id
             FROM parked k JOIN leased l ON l.id = k.id
             WHERE p.provider_id = l.provider AND p.message_id = l.message_id
               AND p.recipient_id IS NULL
         ),
         recorded AS (
             UPDATE recipients r
             SET state = CASE WHEN o.gave_up THEN 'failed' ELSE o.state END,
                 provider_message_id = coalesce(o.message_id, r.provider_message_id),
                 throttles = r.throttles + o.throttled,
                 last_error = CASE WHEN o.gave_up AND r.outcome_unknown_at IS NOT NULL
                                   THEN 'an earlier request may have been sent, and its provider could not be asked '
                                        || 'for longer than the deferral limit; given up, not sent again (last: '
                                        || coalesce(o.error, 'no reason given') || ')'
                                   WHEN o.gave_up
                                   THEN 'put off longer than the deferral limit with no attempt spent; given up (last: '
                                        || coalesce(o.error, 'no reason given') || ')'
                                   ELSE o.error END,
                 -- Put off by the provider: a run of deferrals starts, or goes on. Held
                 -- back by Herald's own gate (or halted), uncounted: the run is kept as it
                 -- is. Judged: it ends.
                 deferred_since = CASE WHEN o.put_off THEN coalesce(r.deferred_since, now())
                                       WHEN o.throttled = 1 THEN r.deferred_since END,
                 next_attempt_at = CASE WHEN o.delay IS NULL THEN r.next_attempt_at
                                        ELSE now() + make_interval(secs => o.delay) END,
                 -- An unknown outcome is dated from when its attempt began: the lookup
                 -- before any resend searches from then (the outcome may be written long
                 -- after, once a database outage is over).
                 -- Due again knowing nothing went out (a refusal, a throttle, a request that
                 -- never left): an earlier attempt not yet ruled out is kept, but not the
                 -- sweeper's guess that this one may have been sent (dated from its start),
                 -- made while this outcome could not be written. Kept, the next attempt
                 -- would look for a message never created, and fail the recipient after. (An
                 -- earlier attempt's date is never this one's start.)
                 outcome_unknown_at = CASE WHEN o.state = 'unknown' OR o.lost THEN coalesce(r.outcome_unknown_at, r.attempted_at, now())
                                           WHEN o.state = 'pending' AND (o.row_state = 'sending'
                                                OR r.outcome_unknown_at <> r.attempted_at) THEN r.outcome_unknown_at END,
                 unknown_via = CASE WHEN o.state = 'unknown' OR o.lost THEN coalesce(r.unknown_via, o.provider)
                                    WHEN o.state = 'pending' AND (o.row_state = 'sending'
                                         OR r.outcome_unknown_at <> r.attempted_at) THEN r.unknown_via END,
                 sent_at = CASE WHEN o.state = 'sent' THEN now() ELSE r.sent_at END,
                 sent_via = o.provider,
                 delivery_status = CASE WHEN k.rank > r.delivery_rank THEN k.status ELSE r.delivery_status END,
                 delivery_error = CASE WHEN k.rank > r.delivery_rank THEN k.error_code ELSE r.delivery_error END,
                 delivery_updated_at = CASE WHEN k.rank > r.delivery_rank THEN now() ELSE r.delivery_updated_at END,
                 delivery_rank = greatest(r.delivery_rank, k.rank),
                 -- A call that was not placed holds no line, nor one whose final status came.
                 -- (A lost answer retried at once may be a live call too.)
                 live_until = CASE WHEN (o.state IN ('sent', 'unknown') OR o.lost) AND coalesce(k.rank, 0) < $9
                                   THEN r.live_until END,
                 lease_until = NULL, lease_token = NULL, queued_at = NULL, updated_at = now()
             FROM leased o LEFT JOIN parked k ON k.id = o.id
             WHERE r.id = o.id AND r.dispatch_seq = o.seq
             RETURNING r.id, r.campaign_id, r.state, r.address, o.pause, o.gave_up, o.opted_out, o.error
         ),
         -- Two outcomes of one batch may name one address (two campaigns of a tenant): the
         -- second finds the first's row and is skipped.
         suppressed AS (
             INSERT INTO suppressions (tenant_id, channel, address, source, reason)
             SELECT c.tenant_id, c.channel, d.address, 'provider', left(d.error, 500)
             FROM recorded d JOIN campaigns c ON c.id = d.campaign_id
             WHERE d.opted_out
             -- In key order, as the admin's additions are: two statements inserting the
             -- same addresses never wait on each other in a cycle.
             ORDER BY c.tenant_id, c.channel, d.address
             ON CONFLICT (tenant_id, channel, address) DO NOTHING
         ),
         -- Only the campaigns a send or a pause may change.
         touched AS (
             SELECT campaign_id, bool_or(state = 'sent') AS sent, max(pause) AS pause
             FROM recorded WHERE state = 'sent' OR pause IS NOT NULL
             GROUP BY campaign_id
         ),
         -- Locked in id order, as by every statement that writes several campaign rows (the
         -- scheduler's claim among them), so two never wait on each other in a cycle.
         pausing AS MATERIALIZED (
             SELECT c.id FROM campaigns c JOIN touched t ON t.campaign_id = c.id
             WHERE t.pause IS NOT NULL AND c.status = 'running'
             ORDER BY c.id FOR NO KEY UPDATE OF c
         ),
         -- A first send alone does not wait for its row: an upload into a campaign resumed
         -- to `scheduled` holds it for as long as it streams, and waiting would hold every
         -- tenant's outcomes of this batch (and the recipients' leases) behind it. The next
         -- send's outcome dates it, as a receipt leaves it to the next outcome.
         first_only AS MATERIALIZED (
             SELECT c.id FROM campaigns c JOIN touched t ON t.campaign_id = c.id
             WHERE c.first_sent_at IS NULL AND t.sent AND c.id NOT IN (SELECT id FROM pausing)
             ORDER BY c.id FOR NO KEY UPDATE OF c SKIP LOCKED
         ),
         changing AS (SELECT id FROM pausing UNION ALL SELECT id FROM first_only),
         -- One update per campaign, for its first send and for a pause: two updates of one
         -- row in a statement would keep only one of them. What applies is judged on the
         -- row as `changing` locked it (the CASEs below see that version), not again here,
         -- where the scan sees the statement's snapshot: a resume committed while this
         -- statement waited for the row would otherwise drop the provider's halt.
         firsts AS (
         UPDATE campaigns c
         SET first_sent_at = CASE WHEN c.first_sent_at IS NULL AND t.sent THEN now() ELSE c.first_sent_at END,
             status = CASE WHEN t.pause IS NOT NULL AND c.status = 'running' THEN 'paused' ELSE c.status END,
             pause_reason = CASE WHEN t.pause IS NOT NULL AND c.status = 'running' THEN t.pause ELSE c.pause_reason END,
             paused_at = CASE WHEN t.pause IS NOT NULL AND c.status = 'running' THEN now() ELSE c.paused_at END
         FROM touched t
         WHERE c.id = t.campaign_id AND c.id IN (SELECT id FROM changing)
         -- now() is the statement's transaction's time: equal only for a first send set here.
         RETURNING CASE WHEN t.sent AND c.first_sent_at = now()
                        THEN extract(epoch FROM c.first_sent_at - c.started_at)::float8 END AS first_send
         )
         SELECT first_send AS \"first_send?\", NULL::bigint AS \"gave_up?\" FROM firsts
         UNION ALL
         SELECT NULL::float8, id FROM recorded WHERE gave_up",
        &ids,
        &seqs,
        &states as _,
        &message_ids as _,
        &errors as _,
        &delays as _,
        &throttles,
        &providers,
        herald_shared::delivery::FINAL_RANK as _,
        &pauses as _,
        &lost,
        &tokens,
        max_deferral.as_secs_f64(),
        &put_off,
        &opted_out,
    )
    .fetch_all(pool)
    .await?;
    // The statement that records a campaign's first send is the one place that knows it.
    herald_shared::ops::metrics::first_sends(rows.iter().filter_map(|r| r.first_send));
    Ok(rows.iter().filter_map(|r| r.gave_up).collect())
}
