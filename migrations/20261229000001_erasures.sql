-- A person's erasure (`POST /api/v1/erasures`, `store::erasures`): a tenant asked Herald to
-- forget an address (a data subject's request to be forgotten). Its contact and a recorded
-- START go; every message to it that was still waiting ends `cancelled` unsent; every
-- finished one keeps its state, counts and receipts but loses its address, variables (a
-- campaign's copy of the contact's attributes, a transactional message's text), the
-- address inside its error texts and its request's hash. The suppression list keeps an
-- opt-out, and `consents` a STOP (so that it still holds; the tenant may take it off).
--
-- A message in flight is stopped by its own `expires_at`, now set on a campaign's
-- recipient too (until now only transactional messages had one): the lease, the retry
-- claim, the lookup before a resend and the sweeper's expiry already honour it.
--
-- Transactional messages are found by address here: a column written once, when the
-- message is accepted, and never updated (as `campaign_addresses` is for campaigns), rather
-- than an index on `recipients.address`, which every lease and outcome update of a message
-- would add an entry to. Cleared once the message is erased. Filled in for messages
-- accepted before (the one rewrite of the table, in the migration's transaction: seconds
-- for millions of messages; accepting messages waits meanwhile; docs/operations.md,
-- Upgrades, says how to do it beforehand).
ALTER TABLE messages ADD COLUMN IF NOT EXISTS address text;

UPDATE messages m SET address = r.address FROM recipients r
WHERE r.id = m.recipient_id AND m.address IS NULL;

-- An erasure's lookup, and the list of messages to one address (`GET /messages?to=`), an
-- operator's of every tenant too. (IF NOT EXISTS: a deployment with many messages may
-- build it CONCURRENTLY beforehand, after the column is added.)
CREATE INDEX IF NOT EXISTS messages_address ON messages (address, tenant_id)
    WHERE address IS NOT NULL;

-- Erasures still waiting for messages that were in flight when they were asked (`sending`,
-- or `unknown`: a request whose answer was lost). Those are not stopped (their request may
-- be on its way), but never sent again: each one's own expiry is set to the erasure's
-- time, so that a retry ends `expired`. The scheduler's housekeeping erases each once it
-- has settled (`store::erasures::finish`), and drops the row once none waits. No address
-- is kept here: the recipients still have theirs until then.
CREATE TABLE erasures (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    requested_at  timestamptz NOT NULL DEFAULT now(),
    waiting       bigint[] NOT NULL CHECK (cardinality(waiting) > 0)
);
