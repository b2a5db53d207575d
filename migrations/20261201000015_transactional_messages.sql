-- Transactional messages: single messages a tenant's own services send (one-time codes,
-- reminders, notices) through the pipeline campaigns use.
--
-- Each (tenant, provider, channel, overflow provider) has one hidden campaign of kind
-- `messages`: a stream that is always running and never completes. Each message is one of
-- its recipients, so the claim, the lease, receipts, fairness, rate limits, live-call caps,
-- breakers and overflow apply to it unchanged; the scheduler serves a tenant's stream before
-- that tenant's campaigns, within the tenant's share.

ALTER TABLE campaigns
    ADD COLUMN kind text NOT NULL DEFAULT 'campaign' CHECK (kind IN ('campaign', 'messages'));
CREATE UNIQUE INDEX campaigns_message_stream
    ON campaigns (tenant_id, provider_id, channel,
                  coalesce(overflow_provider_id, '00000000-0000-0000-0000-000000000000'))
    WHERE kind = 'messages';

-- A stream sends to the same address many times; a campaign's audience names each once.
ALTER TABLE recipients
    ADD COLUMN transactional boolean NOT NULL DEFAULT false,
    -- A transactional message's own expiry (a campaign's recipients use the campaign's).
    ADD COLUMN expires_at timestamptz;
ALTER TABLE recipients DROP CONSTRAINT recipients_campaign_id_address_key;
CREATE UNIQUE INDEX recipients_campaign_address ON recipients (campaign_id, address)
    WHERE NOT transactional;
CREATE INDEX recipients_expiring ON recipients (expires_at)
    WHERE state = 'pending' AND expires_at IS NOT NULL;

-- Backpressure: messages a tenant may have accepted and not yet finished (past it: 429),
-- and, if the operator sets one, messages it may send a day (its time zone's day).
ALTER TABLE tenants
    ADD COLUMN max_queued_messages integer NOT NULL DEFAULT 10000
        CHECK (max_queued_messages BETWEEN 1 AND 10000000),
    ADD COLUMN max_messages_per_day integer CHECK (max_messages_per_day BETWEEN 1 AND 100000000);

-- What the API said about each message: its id, and the client's idempotency key with a
-- hash of the request it came with (the same key with another request is refused).
CREATE TABLE messages (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id        uuid NOT NULL REFERENCES tenants (id),
    recipient_id     bigint NOT NULL UNIQUE REFERENCES recipients (id),
    idempotency_key  text,
    request_hash     bytea NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
-- A key is kept 24 hours; an older one is released when it is used again.
CREATE UNIQUE INDEX messages_idempotency ON messages (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX messages_tenant ON messages (tenant_id, created_at DESC, id DESC);
CREATE INDEX messages_newest ON messages (created_at DESC, id DESC);
