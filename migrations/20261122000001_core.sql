-- Herald's core schema: tenants, providers, campaigns and their recipients.
-- PostgreSQL is the source of truth for every recipient's state; RabbitMQ only carries work.

CREATE TABLE tenants (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    -- Share of dispatch capacity relative to other tenants with work (2 = twice a 1).
    weight      integer NOT NULL DEFAULT 1 CHECK (weight BETWEEN 1 AND 1000),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE providers (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- NULL: an operator-owned provider any tenant's campaign may use.
    tenant_id        uuid REFERENCES tenants (id),
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    kind             text NOT NULL DEFAULT 'http' CHECK (kind IN ('http')),
    endpoint         text NOT NULL CHECK (endpoint ~ '^https?://'),
    -- Secrets for the provider's API; write-only through every interface.
    credentials      jsonb NOT NULL DEFAULT '{}'::jsonb,
    timeout_ms       integer NOT NULL DEFAULT 10000 CHECK (timeout_ms BETWEEN 10 AND 300000),
    -- Requests to this provider one worker keeps in flight at most.
    max_in_flight    integer NOT NULL DEFAULT 100 CHECK (max_in_flight BETWEEN 1 AND 100000),
    -- Attempts in all (the first included) before a transient failure becomes final.
    max_attempts     integer NOT NULL DEFAULT 5 CHECK (max_attempts BETWEEN 1 AND 100),
    retry_base_ms    integer NOT NULL DEFAULT 1000 CHECK (retry_base_ms BETWEEN 1 AND 86400000),
    retry_max_ms     integer NOT NULL DEFAULT 300000 CHECK (retry_max_ms BETWEEN 1 AND 86400000),
    created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE campaigns (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid NOT NULL REFERENCES tenants (id),
    provider_id     uuid NOT NULL REFERENCES providers (id),
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    channel         text NOT NULL CHECK (channel IN ('sms', 'whatsapp', 'voice', 'chat')),
    template        text NOT NULL,
    status          text NOT NULL DEFAULT 'draft'
                    CHECK (status IN ('draft', 'scheduled', 'running', 'paused', 'completed', 'cancelled')),
    start_at        timestamptz,
    -- Most recipients the scheduler releases for this campaign in one tick.
    batch_size      integer NOT NULL DEFAULT 1000 CHECK (batch_size BETWEEN 1 AND 100000),
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    first_sent_at   timestamptz,
    completed_at    timestamptz
);

-- The scheduler's per-tick scan of campaigns that may need dispatching.
CREATE INDEX campaigns_active ON campaigns (status, start_at) WHERE status IN ('scheduled', 'running');
CREATE INDEX campaigns_tenant ON campaigns (tenant_id);

CREATE TABLE recipients (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    campaign_id          uuid NOT NULL REFERENCES campaigns (id),
    address              text NOT NULL,
    variables            jsonb NOT NULL DEFAULT '{}'::jsonb,
    state                text NOT NULL DEFAULT 'pending'
                         CHECK (state IN ('pending', 'queued', 'sending', 'sent', 'failed', 'cancelled', 'expired')),
    attempts             integer NOT NULL DEFAULT 0,
    -- Fencing token: bumped at every claim and carried by the published message, so a stale
    -- or duplicated message (an older dispatch of the same recipient) is recognised and dropped.
    dispatch_seq         integer NOT NULL DEFAULT 0,
    next_attempt_at      timestamptz NOT NULL DEFAULT '-infinity',
    queued_at            timestamptz,
    -- A worker's lease while `sending`; past it, the sweeper hands the recipient back.
    lease_until          timestamptz,
    last_error           text,
    provider_message_id  text,
    sent_at              timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (campaign_id, address)
);

-- The claim query reads two tiers without scanning the millions already finished: retries
-- whose time has come (by due time), then first attempts (in id order). Keeping them apart
-- means a retry is not stuck behind the rest of a big campaign, and recipients waiting for a
-- backoff are never scanned.
CREATE INDEX recipients_fresh ON recipients (campaign_id, id) WHERE state = 'pending' AND attempts = 0;
CREATE INDEX recipients_retry ON recipients (campaign_id, next_attempt_at) WHERE state = 'pending' AND attempts > 0;
-- Completion checks and the sweeper only look at the few rows in flight.
CREATE INDEX recipients_in_flight ON recipients (campaign_id) WHERE state IN ('queued', 'sending');
CREATE INDEX recipients_queued_at ON recipients (queued_at) WHERE state = 'queued';
CREATE INDEX recipients_lease ON recipients (lease_until) WHERE state = 'sending';
