-- Transactional messages: single messages a tenant's own services send (one-time codes,
-- reminders, notices) through the pipeline campaigns use.
--
-- Each (tenant, provider, channel, overflow provider, quiet hours) has one hidden campaign
-- of kind `messages`: a stream that is always running and never completes. Each message is
-- one of its recipients, so the claim, the lease, receipts, fairness, rate limits, live-call
-- caps, breakers, overflow and quiet hours apply to it unchanged; the scheduler serves a
-- tenant's stream before that tenant's campaigns, within the tenant's share. Most messages
-- (one-time codes) ask for no quiet hours; those that do wait in a stream of their own.

ALTER TABLE campaigns
    ADD COLUMN kind text NOT NULL DEFAULT 'campaign' CHECK (kind IN ('campaign', 'messages'));
-- No quiet hours is 00:00–00:00, a window no stream can have (campaigns_quiet_nonempty).
CREATE UNIQUE INDEX campaigns_message_stream
    ON campaigns (tenant_id, provider_id, channel,
                  coalesce(overflow_provider_id, '00000000-0000-0000-0000-000000000000'),
                  coalesce(quiet_start, '00:00'), coalesce(quiet_end, '00:00'), time_zone)
    WHERE kind = 'messages';

-- The provider (and overflow) a tenant's messages of a channel use when they name none.
CREATE TABLE tenant_default_providers (
    tenant_id             uuid NOT NULL REFERENCES tenants (id),
    channel               text NOT NULL CHECK (channel IN ('sms', 'whatsapp', 'voice', 'chat')),
    provider_id           uuid NOT NULL REFERENCES providers (id),
    overflow_provider_id  uuid REFERENCES providers (id),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, channel),
    CHECK (overflow_provider_id <> provider_id)
);

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

-- Committed volumes: messages a month the operator has agreed to send through a provider.
-- Between a campaign's (or message's) primary and overflow, routing prefers the one further
-- behind its commitment's pace while both have room; sends are counted per provider and
-- calendar month (UTC) by the counter fold.
ALTER TABLE providers
    ADD COLUMN monthly_commitment integer CHECK (monthly_commitment BETWEEN 1 AND 2000000000);
CREATE TABLE provider_month_sends (
    provider_id  uuid NOT NULL,
    month        date NOT NULL,
    sent         bigint NOT NULL,
    PRIMARY KEY (provider_id, month)
);

CREATE OR REPLACE FUNCTION herald_fold_counts() RETURNS bigint LANGUAGE sql VOLATILE AS $$
    WITH moved AS (
        DELETE FROM recipient_count_deltas RETURNING campaign_id, bucket, sent_via, changed_at, n
    ), counters AS (
        INSERT INTO campaign_counters AS cc (campaign_id, state, shard, n)
        SELECT campaign_id, bucket, 0, sum(n) FROM moved
        GROUP BY 1, 2 HAVING sum(n) <> 0 ORDER BY 1, 2
        ON CONFLICT (campaign_id, state, shard) DO UPDATE SET n = cc.n + excluded.n
    ), seconds AS (
        INSERT INTO campaign_sends_per_second AS s (campaign_id, second, shard, sent)
        SELECT campaign_id, changed_at, 0, sum(n) FROM moved WHERE bucket = 'sent'
        GROUP BY 1, 2 HAVING sum(n) > 0 ORDER BY 1, 2
        ON CONFLICT (campaign_id, second, shard) DO UPDATE SET sent = s.sent + excluded.sent
    ), per_provider AS (
        INSERT INTO campaign_provider_sends AS s (campaign_id, provider_id, shard, sent)
        SELECT campaign_id, sent_via, 0, sum(n) FROM moved
        WHERE bucket = 'sent' AND sent_via IS NOT NULL
        GROUP BY 1, 2 HAVING sum(n) <> 0 ORDER BY 1, 2
        ON CONFLICT (campaign_id, provider_id, shard) DO UPDATE SET sent = s.sent + excluded.sent
    ), per_month AS (
        INSERT INTO provider_month_sends AS s (provider_id, month, sent)
        SELECT sent_via, (date_trunc('month', changed_at AT TIME ZONE 'UTC'))::date, sum(n)
        FROM moved WHERE bucket = 'sent' AND sent_via IS NOT NULL
        GROUP BY 1, 2 HAVING sum(n) <> 0 ORDER BY 1, 2
        ON CONFLICT (provider_id, month) DO UPDATE SET sent = s.sent + excluded.sent
    )
    SELECT count(*) FROM moved
$$;

-- Sends per provider and month, exact between folds (as campaign_provider_sent).
CREATE VIEW provider_month_sent AS
SELECT provider_id, month, sent FROM provider_month_sends
UNION ALL
SELECT sent_via, (date_trunc('month', changed_at AT TIME ZONE 'UTC'))::date, n
FROM recipient_count_deltas WHERE bucket = 'sent' AND sent_via IS NOT NULL;

-- How far each provider with a commitment is into it this month: its sends, and the sends
-- its commitment's even pace asks of it by now.
CREATE VIEW provider_commitments AS
SELECT p.id AS provider_id, p.monthly_commitment,
       coalesce((SELECT sum(m.sent) FROM provider_month_sent m
                 WHERE m.provider_id = p.id AND m.month = t.month::date), 0)::int8 AS sent_this_month,
       -- The share of this month gone by (0–1): months have 28 to 31 days.
       (extract(epoch FROM t.now - t.month)
        / extract(epoch FROM t.month + interval '1 month' - t.month))::float8 AS month_elapsed
FROM providers p
CROSS JOIN (SELECT now() AT TIME ZONE 'UTC' AS now,
                   date_trunc('month', now() AT TIME ZONE 'UTC') AS month) t
WHERE p.monthly_commitment IS NOT NULL;
