-- An endpoint that keeps failing is probed, not flooded: after a round of posts answered
-- only 5xx, 408 or 429, or not at all, a tenant's events wait until `resume_at`, then one
-- post goes at a time in the fleet (`take_due`'s probe hold) until the endpoint answers as
-- a working one does. The wait grows with how long the endpoint has been failing
-- (`failing_since`), so a dead endpoint costs workers a post now and then, and the other
-- tenants' events keep their places. Any other answer, or a `PUT` of the webhook, ends it.
ALTER TABLE tenant_webhooks
    ADD COLUMN failing_since timestamptz,
    ADD COLUMN resume_at     timestamptz;

-- Events given up can be posted again on the tenant's word (`POST …/webhook/recover`): a
-- day more from then, retried as a new event is (`retry_base`: the posts before it).
ALTER TABLE message_events
    ADD COLUMN recovered_at timestamptz,
    ADD COLUMN retry_base   integer NOT NULL DEFAULT 0;

-- Events still waiting a day after they happened (or were recovered) are given up without a
-- post (an endpoint held back may not be posted to for minutes at a time): found by age
-- among the waiting ones only, not among the delivered ones kept for the retention.
-- (IF NOT EXISTS: a deployment with a large table may build it CONCURRENTLY beforehand.)
CREATE INDEX IF NOT EXISTS message_events_waiting_since
    ON message_events ((coalesce(recovered_at, occurred_at)))
    WHERE delivered_at IS NULL AND abandoned_at IS NULL;

-- What an event is called in its posts: random, so that a tenant learns nothing from its
-- events' ids (the row's own id counts every tenant's events). Added without a default and
-- given one after, so that no row is rewritten (a volatile default would rewrite the table
-- under its lock); rows from before get theirs when next taken.
ALTER TABLE message_events ADD COLUMN public_id uuid;
ALTER TABLE message_events ALTER COLUMN public_id SET DEFAULT gen_random_uuid();
