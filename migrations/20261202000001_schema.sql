-- Herald's schema: tenants and their keys, providers, audiences, campaigns and transactional
-- messages, the recipients every send goes through, receipts, progress counters and the
-- worker fleet.
--
-- PostgreSQL is the source of truth for every recipient's state; RabbitMQ only carries work.
--
-- Columns are listed in the order the tables have them (the order `pg_dump` prints).


-- ════════════════════════════════════════════════════════════════════════════════════════
-- Tenants and API keys
-- ════════════════════════════════════════════════════════════════════════════════════════

CREATE TABLE tenants (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name                  text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    -- Share of dispatch capacity relative to other tenants with work (2 = twice a 1).
    weight                integer NOT NULL DEFAULT 1 CHECK (weight BETWEEN 1 AND 1000),
    created_at            timestamptz NOT NULL DEFAULT now(),
    -- Default zone for the quiet hours of this tenant's campaigns (an IANA name).
    time_zone             text NOT NULL DEFAULT 'UTC',
    -- Calls live at once across this tenant's campaigns and messages, fleet-wide; NULL: no
    -- cap (see herald_take_live_call).
    max_live_calls        integer CHECK (max_live_calls BETWEEN 1 AND 100000),
    -- Where the tenant's numbers written without a country code are from (ISO 3166-1
    -- alpha-2, `FR`): uploads read `06 12 34 56 78` as +33612345678. NULL: every number
    -- needs its country code.
    default_region        text CHECK (default_region ~ '^[A-Z]{2}$'),
    -- Backpressure: messages the tenant may have accepted and not yet finished (past it:
    -- 429), and, if the operator sets one, messages it may send a day (its time zone's day).
    max_queued_messages   integer NOT NULL DEFAULT 10000
                          CHECK (max_queued_messages BETWEEN 1 AND 10000000),
    max_messages_per_day  integer CHECK (max_messages_per_day BETWEEN 1 AND 100000000)
);

-- API keys are random 256-bit tokens, so a plain SHA-256 is enough to store them safely (no
-- password stretching needed); the prefix lets an operator tell keys apart in listings.
CREATE TABLE api_keys (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- NULL: an operator key (manages tenants, sees everything).
    tenant_id   uuid REFERENCES tenants (id),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    prefix      text NOT NULL,
    key_hash    bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);


-- ════════════════════════════════════════════════════════════════════════════════════════
-- Providers, their pacing and circuit breakers, and committed volumes
-- ════════════════════════════════════════════════════════════════════════════════════════

-- Providers speak one of several APIs (`kind`): a generic HTTP JSON API, Twilio Messaging,
-- Twilio Voice and the WhatsApp Cloud API. For the generic kind `endpoint` is the whole URL;
-- for the others it is the API's base URL (the real host by default, the simulator in
-- tests).
--
-- Rate limits are fleet-wide: a provider may allow `rate_limit` requests per
-- `rate_window_ms`, and every worker reserves its send times from the provider's one
-- `provider_pacing` row (GCRA: the next free send time moves forward by one spacing per
-- request), so the limit holds however many workers run, retries included.
--
-- Cost-aware overflow: a campaign may name an overflow provider; its recipients go to the
-- primary provider up to what the primary's lane drains (its rate limit, in practice), and
-- only what the primary cannot take this tick (or everything, while the primary's breaker
-- is open) goes to the overflow. Each provider may carry a cost per message; each sent
-- recipient records the provider that sent it, and sends are counted per provider.
--
-- Committed volumes: `monthly_commitment` is the messages a month the operator has agreed
-- to send through a provider. Between a campaign's (or message's) primary and overflow,
-- routing prefers the one further behind its commitment's pace while both have room; sends
-- are counted per provider and calendar month (UTC) by the counter fold
-- (provider_month_sends and the provider_commitments view, with the counters below).
CREATE TABLE providers (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- NULL: an operator-owned provider any tenant's campaign may use.
    tenant_id             uuid REFERENCES tenants (id),
    name                  text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    kind                  text NOT NULL DEFAULT 'http'
                          CHECK (kind IN ('http', 'twilio_sms', 'twilio_voice', 'whatsapp')),
    endpoint              text NOT NULL CHECK (endpoint ~ '^https?://'),
    -- Secrets for the provider's API; write-only through every interface.
    credentials           jsonb NOT NULL DEFAULT '{}'::jsonb,
    timeout_ms            integer NOT NULL DEFAULT 10000 CHECK (timeout_ms BETWEEN 10 AND 300000),
    -- Requests to this provider one worker keeps in flight at most.
    max_in_flight         integer NOT NULL DEFAULT 100 CHECK (max_in_flight BETWEEN 1 AND 100000),
    -- Attempts in all (the first included) before a transient failure becomes final.
    max_attempts          integer NOT NULL DEFAULT 5 CHECK (max_attempts BETWEEN 1 AND 100),
    retry_base_ms         integer NOT NULL DEFAULT 1000 CHECK (retry_base_ms BETWEEN 1 AND 86400000),
    retry_max_ms          integer NOT NULL DEFAULT 300000 CHECK (retry_max_ms BETWEEN 1 AND 86400000),
    created_at            timestamptz NOT NULL DEFAULT now(),
    -- Non-secret per-kind settings (Twilio `from`, WhatsApp `phone_number_id`, a generic
    -- body template, …); secrets stay in the write-only `credentials`. Both are validated by
    -- herald_shared::provider_config, the one definition the admin and the workers share.
    settings              jsonb NOT NULL DEFAULT '{}'::jsonb
                          CONSTRAINT providers_settings_object CHECK (jsonb_typeof(settings) = 'object'),
    rate_limit            integer CHECK (rate_limit BETWEEN 1 AND 1000000),
    rate_window_ms        integer NOT NULL DEFAULT 1000 CHECK (rate_window_ms BETWEEN 1 AND 86400000),
    cost_per_message      numeric(12, 6) CHECK (cost_per_message >= 0),
    -- What to do when a request's answer never came: `retry` at once (a provider that
    -- honours Herald's idempotency key), `await_receipt` for `unknown_window_ms` and then
    -- retry (after a lookup where the API has one), or `fail` after the window.
    unknown_outcome       text NOT NULL DEFAULT 'await_receipt'
                          CHECK (unknown_outcome IN ('retry', 'await_receipt', 'fail')),
    unknown_window_ms     integer NOT NULL DEFAULT 120000
                          CHECK (unknown_window_ms BETWEEN 0 AND 86400000),
    -- Calls live at once through this provider (its lines), fleet-wide; NULL: no cap.
    max_live_calls        integer CHECK (max_live_calls BETWEEN 1 AND 100000),
    -- A call without a final status callback stops counting as live after this long.
    live_call_timeout_ms  integer NOT NULL DEFAULT 600000
                          CHECK (live_call_timeout_ms BETWEEN 1000 AND 86400000),
    -- Bumped whenever the provider's credentials are replaced. A lease reports the
    -- provider's revision, and a worker whose cached copy is older reads it again, so
    -- rotated credentials are used from the first request after the rotation (not up to a
    -- cache period later).
    revision              integer NOT NULL DEFAULT 0,
    monthly_commitment    integer CHECK (monthly_commitment BETWEEN 1 AND 2000000000)
);

-- One row per provider, shared by the whole fleet: its pacing (GCRA) and its circuit
-- breaker.
CREATE TABLE provider_pacing (
    provider_id  uuid PRIMARY KEY REFERENCES providers (id),
    -- The earliest time the next request may be sent.
    next_at      timestamptz NOT NULL DEFAULT '-infinity',
    -- ≥ 1: how much slower than the configured rate to go after the provider throttled us
    -- (doubles at each throttle, decays back to 1 while it does not).
    slowdown     float8 NOT NULL DEFAULT 1.0 CHECK (slowdown >= 1.0),
    -- The last throttle answer: throttles within a second of it count as the same episode
    -- (a burst of 429s for requests already in flight doubles the slowdown only once).
    throttled_at timestamptz NOT NULL DEFAULT '-infinity',
    updated_at   timestamptz NOT NULL DEFAULT now(),
    -- Circuit breakers are fleet-wide: a worker whose breaker for the provider opens records
    -- until when; the scheduler releases none of the provider's recipients before then
    -- (herald_breaker_open), and the other workers hold back too.
    open_until   timestamptz NOT NULL DEFAULT '-infinity'
);


-- ════════════════════════════════════════════════════════════════════════════════════════
-- Contacts and segments: a tenant's address book, and the audiences chosen from it
-- ════════════════════════════════════════════════════════════════════════════════════════

-- A tenant's address book; segments select from it.
CREATE TABLE contacts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    address     text NOT NULL,
    attributes  jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(attributes) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, address)
);

-- Keyset pagination of the admin's lists (store/src/keyset.rs): each list's filter and
-- order is one index range, so the thousandth page costs what the first does. A tenant's
-- contacts are listed by id.
CREATE INDEX contacts_tenant ON contacts (tenant_id, id);

CREATE TABLE segments (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- The filter as the tenant wrote it; compiled to parameterized SQL when used.
    filter      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

-- Segment filters compare dates stored as text in contact attributes: unparsable text is
-- simply not a date (NULL), never an error that aborts the whole query.
CREATE FUNCTION herald_try_timestamptz(t text) RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    IF t IS NULL OR t !~ '^\d{4}-\d{2}-\d{2}' THEN
        RETURN NULL;
    END IF;
    RETURN t::timestamptz;
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$;


-- ════════════════════════════════════════════════════════════════════════════════════════
-- Campaigns, and the message streams transactional messages travel in
-- ════════════════════════════════════════════════════════════════════════════════════════

-- A campaign of kind `campaign` sends a template to an audience. Transactional messages
-- (one-time codes, reminders, notices a tenant's own services send) go through the same
-- pipeline: each (tenant, provider, channel, overflow provider, quiet hours) has one hidden
-- campaign of kind `messages`, a stream that is always running and never completes. Each
-- message is one of its recipients, so the claim, the lease, receipts, fairness, rate
-- limits, live-call caps, breakers, overflow and quiet hours apply to it unchanged; the
-- scheduler serves a tenant's stream before that tenant's campaigns, within the tenant's
-- share. Most messages (one-time codes) ask for no quiet hours; those that do wait in a
-- stream of their own.
CREATE TABLE campaigns (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id             uuid NOT NULL REFERENCES tenants (id),
    provider_id           uuid NOT NULL REFERENCES providers (id),
    name                  text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    channel               text NOT NULL CHECK (channel IN ('sms', 'whatsapp', 'voice', 'chat')),
    template              text NOT NULL,
    status                text NOT NULL DEFAULT 'draft'
                          CHECK (status IN ('draft', 'scheduled', 'running', 'paused', 'completed', 'cancelled')),
    start_at              timestamptz,
    -- Most recipients the scheduler releases for this campaign in one tick.
    batch_size            integer NOT NULL DEFAULT 1000 CHECK (batch_size BETWEEN 1 AND 100000),
    created_at            timestamptz NOT NULL DEFAULT now(),
    started_at            timestamptz,
    first_sent_at         timestamptz,
    completed_at          timestamptz,
    -- Share among the same tenant's campaigns (the tenant's weight splits across tenants).
    weight                integer NOT NULL DEFAULT 1 CHECK (weight BETWEEN 1 AND 1000),
    -- Recipients not sent by then become `expired`; nothing is sent late.
    expires_at            timestamptz,
    -- A daily window (local time in `time_zone`) in which nothing is released or sent.
    -- quiet_start > quiet_end wraps midnight (21:00–07:00).
    quiet_start           time,
    quiet_end             time,
    time_zone             text NOT NULL DEFAULT 'UTC',
    -- Audience chosen by a segment, materialized into recipients at start.
    segment_id            uuid REFERENCES segments (id),
    -- See "cost-aware overflow" at `providers`.
    overflow_provider_id  uuid REFERENCES providers (id),
    -- Why Herald paused the campaign itself: its provider refused the account's credentials
    -- or configuration (Twilio 20003, Meta 190, HTTP 401), which no recipient can fix. An
    -- operator's pause leaves it empty; resume clears it.
    pause_reason          text,
    kind                  text NOT NULL DEFAULT 'campaign' CHECK (kind IN ('campaign', 'messages')),
    CONSTRAINT campaigns_quiet_both CHECK ((quiet_start IS NULL) = (quiet_end IS NULL)),
    CONSTRAINT campaigns_quiet_nonempty CHECK (quiet_start IS DISTINCT FROM quiet_end OR quiet_start IS NULL),
    CONSTRAINT campaigns_overflow_differs CHECK (overflow_provider_id <> provider_id)
);

-- The scheduler's per-tick scan of campaigns that may need dispatching.
CREATE INDEX campaigns_active ON campaigns (status, start_at) WHERE status IN ('scheduled', 'running');
-- The admin's lists (keyset pagination), newest first: one tenant's campaigns, or all of
-- them (operator).
CREATE INDEX campaigns_tenant ON campaigns (tenant_id, created_at DESC, id DESC);
CREATE INDEX campaigns_newest ON campaigns (created_at DESC, id DESC);
-- One stream per (tenant, provider, channel, overflow provider, quiet hours). No quiet hours
-- is 00:00–00:00, a window no stream can have (campaigns_quiet_nonempty).
CREATE UNIQUE INDEX campaigns_message_stream
    ON campaigns (tenant_id, provider_id, channel,
                  coalesce(overflow_provider_id, '00000000-0000-0000-0000-000000000000'),
                  coalesce(quiet_start, '00:00'), coalesce(quiet_end, '00:00'), time_zone)
    WHERE kind = 'messages';


-- ════════════════════════════════════════════════════════════════════════════════════════
-- Recipients: the state machine every send goes through
-- ════════════════════════════════════════════════════════════════════════════════════════

-- One row per send: a member of a campaign's audience, or one transactional message.
-- `pending → queued` (the scheduler's claim) `→ sending` (a worker's lease) `→ sent |
-- failed`, with `sending → pending` for a retry, and `cancelled` / `expired` for those a
-- campaign will not send (store/src/recipients/ holds every transition).
--
-- A request whose answer never came may have been sent: the recipient waits in `unknown`
-- for a receipt (which settles it as sent) or for its provider's window to pass (then it is
-- retried, after a reconciliation lookup where the API has one).
CREATE TABLE recipients (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    campaign_id          uuid NOT NULL REFERENCES campaigns (id),
    address              text NOT NULL,
    variables            jsonb NOT NULL DEFAULT '{}'::jsonb,
    state                text NOT NULL DEFAULT 'pending'
                         CHECK (state IN ('pending', 'queued', 'sending', 'unknown', 'sent', 'failed', 'cancelled', 'expired')),
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
    -- Attempts refused by a throttling provider: they wait like retries (attempts > 0 keeps
    -- them in the retry tier, which honours next_attempt_at) but do not count against
    -- max_attempts.
    throttles            integer NOT NULL DEFAULT 0,
    -- The provider of the latest attempt, from the moment its lease is taken (not only once
    -- sent), so a recovered lease is judged by the provider it went to; once sent, the
    -- provider that sent it. No foreign key: it would add a lookup to every outcome written,
    -- and providers are never deleted while they have campaigns.
    sent_via             uuid,
    -- When the latest attempt's lease was taken: when its request was made, at the latest.
    attempted_at         timestamptz,
    -- When the attempt whose outcome is unknown began, and the provider it went to; set
    -- until a receipt, a lookup or a later answer settles it (the worker looks the message
    -- up there, from that time on, before sending again).
    outcome_unknown_at   timestamptz,
    unknown_via          uuid,
    -- The provider's latest word on the message or call (herald_shared::delivery) and its
    -- rank; receipts only ever raise the rank, so a status never moves backwards.
    delivery_status      text,
    delivery_rank        smallint NOT NULL DEFAULT 0,
    delivery_error       text,
    delivery_updated_at  timestamptz,
    -- A call counts against its provider's and tenant's live-call caps until then (its final
    -- status callback clears it).
    live_until           timestamptz,
    -- A transactional message (a recipient of a `messages` stream).
    transactional        boolean NOT NULL DEFAULT false,
    -- A transactional message's own expiry (a campaign's recipients use the campaign's).
    expires_at           timestamptz
);

-- A campaign's audience names each address once; a stream sends to the same address many
-- times. A campaign's recipients are also listed by address along this index (its predicate
-- repeated in the query): an index for listing alone would take a new entry at each of a
-- send's updates.
CREATE UNIQUE INDEX recipients_campaign_address ON recipients (campaign_id, address)
    WHERE NOT transactional;

-- The claim query reads two tiers without scanning the millions already finished: retries
-- whose time has come (by due time), then first attempts (in id order). Keeping them apart
-- means a retry is not stuck behind the rest of a big campaign, and recipients waiting for a
-- backoff are never scanned.
CREATE INDEX recipients_fresh ON recipients (campaign_id, id) WHERE state = 'pending' AND attempts = 0;
CREATE INDEX recipients_retry ON recipients (campaign_id, next_attempt_at) WHERE state = 'pending' AND attempts > 0;

-- The sweeper's scans read only the few rows each concerns: claims gone stale, leases run
-- out, unknown outcomes due, calls still counted live (also counted by
-- herald_take_live_call), transactional messages past their own expiry.
CREATE INDEX recipients_queued_at ON recipients (queued_at) WHERE state = 'queued';
CREATE INDEX recipients_lease ON recipients (lease_until) WHERE state = 'sending';
CREATE INDEX recipients_unknown ON recipients (next_attempt_at) WHERE state = 'unknown';
CREATE INDEX recipients_live ON recipients (live_until) WHERE live_until IS NOT NULL;
CREATE INDEX recipients_expiring ON recipients (expires_at)
    WHERE state = 'pending' AND expires_at IS NOT NULL;

-- How many of a campaign's recipients are being sent right now (campaign_state_counts).
-- There is deliberately no partial index over all in-flight (queued or sending)
-- recipients: every lease and every outcome would add an entry to it, and while autovacuum
-- lagged, the planner took such an index (full of dead entries) for the lease statement
-- instead of the primary key (measured: 11 ms per lease statement of 31 rows instead of
-- about 2). Completion reads the counters instead.
CREATE INDEX recipients_sending ON recipients (campaign_id) WHERE state = 'sending';

-- Errors by reason for the campaign detail page, without scanning the sent majority.
CREATE INDEX recipients_failed ON recipients (campaign_id) WHERE state = 'failed';

-- Receipts that do not echo Herald's reference are matched by the provider's message id.
CREATE INDEX recipients_message_id ON recipients (provider_message_id) WHERE provider_message_id IS NOT NULL;


-- ════════════════════════════════════════════════════════════════════════════════════════
-- Transactional messages
-- ════════════════════════════════════════════════════════════════════════════════════════

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

-- What the API said about each message: its id, and the client's idempotency key with a
-- hash of the request it came with (the same key with another request is refused).
CREATE TABLE messages (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id        uuid NOT NULL REFERENCES tenants (id),
    -- No foreign key: accepting a message writes its recipient and this row in one
    -- statement, and no recipient is ever deleted, so the key could never fail, yet its
    -- check locked every new recipient row again (FOR KEY SHARE) and doubled the cost of
    -- this insert (19 ms instead of 9 per batch of 1,000, measured), the insert that was
    -- half of what PostgreSQL spent accepting a burst of messages.
    recipient_id     bigint NOT NULL UNIQUE,
    idempotency_key  text,
    request_hash     bytea NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- A key is kept 24 hours; an older one is released when it is used again.
CREATE UNIQUE INDEX messages_idempotency ON messages (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- The admin's lists (keyset pagination), newest first: one tenant's messages, or all.
CREATE INDEX messages_tenant ON messages (tenant_id, created_at DESC, id DESC);
CREATE INDEX messages_newest ON messages (created_at DESC, id DESC);


-- ════════════════════════════════════════════════════════════════════════════════════════
-- Receipts
-- ════════════════════════════════════════════════════════════════════════════════════════

-- Every receipt received, as received (normalised status beside the raw one). Appended,
-- never changed but for `recipient_id` (set when a parked receipt finds its recipient) and
-- `orphaned_at` (set when one never does); pruned after the retention period. Receipts are
-- applied to their recipient by rank (recipients.delivery_rank): a status never moves
-- backwards.
CREATE TABLE receipts (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider_id    uuid NOT NULL,
    -- The provider's id of the message or call (Twilio SID, WhatsApp wamid, …).
    message_id     text NOT NULL,
    -- NULL while parked: no recipient had sent this message id yet.
    recipient_id   bigint,
    status         text NOT NULL,
    raw_status     text NOT NULL,
    rank           smallint NOT NULL,
    error_code     text,
    error_message  text,
    -- When the provider says it happened, if it says.
    provider_time  timestamptz,
    received_at    timestamptz NOT NULL DEFAULT now(),
    -- The same (provider, message, status) was received before: kept, not applied again.
    duplicate      boolean NOT NULL DEFAULT false,
    orphaned_at    timestamptz
);

-- The first of each (provider, message, status); later copies are kept with `duplicate`.
CREATE UNIQUE INDEX receipts_first ON receipts (provider_id, message_id, status) WHERE NOT duplicate;
-- Receipts waiting for their send (orphans included: a send recorded late still adopts them).
CREATE INDEX receipts_parked ON receipts (provider_id, message_id) WHERE recipient_id IS NULL;
-- Pruning by age: rows arrive in time order, so a BRIN index stays tiny.
CREATE INDEX receipts_received ON receipts USING brin (received_at);


-- ════════════════════════════════════════════════════════════════════════════════════════
-- Counters: progress without counting millions of rows
-- ════════════════════════════════════════════════════════════════════════════════════════

-- Counters come from a ledger. A statement-level trigger on recipients appends each
-- statement's deltas to recipient_count_deltas (a plain insert), and the scheduler folds
-- them into the counter tables every few ticks (herald_fold_counts). Upserting the counter
-- tables from the trigger itself would be most of an outcome statement's cost: with many
-- small campaigns an outcome statement touches a different campaign per recipient
-- (measured on 10,000 campaigns: upserts took 2.0–4.0 ms of a 3.1–6.4 ms statement of 22
-- outcomes, about 35 µs a row, where a plain insert into an unindexed table takes about
-- 2 µs). Readers see the counters and the unfolded deltas together through the views
-- below, so counts stay exact between folds, and with no scheduler running at all.
--
-- The folded tables (campaign_counters, campaign_sends_per_second,
-- campaign_provider_sends, provider_month_sends) have no foreign keys: their rows come
-- only from recipients' deltas, and a recipient's own foreign key already says its
-- campaign exists (campaigns are never deleted). Checking it again per new row would cost
-- a fold of 10,000 campaigns 189 ms of its 477 (EXPLAIN ANALYZE: a row per campaign and
-- second in campaign_sends_per_second, 19 µs a check). Only the leading scheduler folds,
-- so the three per-campaign tables have one writer: their `shard` is always 0 (a column
-- kept for spreading the writes of several folders, should there ever be more than one),
-- and readers sum over it.

-- The counter bucket of a recipient state: queued and sending share one, `in_flight`;
-- every other state is a bucket of its own. Every lease a worker takes moves a recipient
-- from queued to sending: counted apart, each lease statement would change two counters, on
-- the hottest path of all (measured: the lease statement took twice as long). Counted
-- together, a lease changes no counter. How many of the in-flight recipients are being sent
-- right now is small (at most the workers' prefetch) and is counted when progress is read
-- (campaign_state_counts).
CREATE FUNCTION herald_count_bucket(state text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN state IN ('queued', 'sending') THEN 'in_flight' ELSE state END
$$;

-- Recipients per (campaign, state bucket).
CREATE TABLE campaign_counters (
    campaign_id  uuid NOT NULL,
    state        text NOT NULL,
    shard        smallint NOT NULL,
    n            bigint NOT NULL,
    PRIMARY KEY (campaign_id, state, shard)
);

-- Sends per campaign per second, for the send rate and ETA (trimmed by the scheduler).
CREATE TABLE campaign_sends_per_second (
    campaign_id  uuid NOT NULL,
    second       timestamptz NOT NULL,
    shard        smallint NOT NULL,
    sent         bigint NOT NULL,
    PRIMARY KEY (campaign_id, second, shard)
);

-- Sends per campaign and provider (primary and overflow).
CREATE TABLE campaign_provider_sends (
    campaign_id  uuid NOT NULL,
    provider_id  uuid NOT NULL,
    shard        smallint NOT NULL,
    sent         bigint NOT NULL,
    PRIMARY KEY (campaign_id, provider_id, shard)
);

-- Sends per provider and calendar month (UTC), for committed volumes.
CREATE TABLE provider_month_sends (
    provider_id  uuid NOT NULL,
    month        date NOT NULL,
    sent         bigint NOT NULL,
    PRIMARY KEY (provider_id, month)
);

-- The ledger: deltas appended by the trigger, not folded yet.
CREATE TABLE recipient_count_deltas (
    -- No foreign key: it would add a lookup to every delta written.
    campaign_id  uuid NOT NULL,
    -- The counter bucket (`herald_count_bucket`): pending, in_flight, sent, unknown, failed...
    bucket       text NOT NULL,
    -- For the `sent` bucket: the provider that sent (the per-provider counts).
    sent_via     uuid,
    -- The second of the change (the send-rate samples).
    changed_at   timestamptz NOT NULL,
    n            bigint NOT NULL
);
-- Progress reads one campaign's unfolded deltas at a time.
CREATE INDEX recipient_count_deltas_campaign ON recipient_count_deltas (campaign_id);

CREATE FUNCTION herald_count_recipients() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Transition tables exist per event: `new_rows` for INSERT and UPDATE, `old_rows` for
    -- UPDATE and DELETE.
    IF TG_OP = 'INSERT' THEN
        INSERT INTO recipient_count_deltas (campaign_id, bucket, sent_via, changed_at, n)
        SELECT campaign_id, herald_count_bucket(state), CASE WHEN state = 'sent' THEN sent_via END,
               date_trunc('second', now()), count(*)
        FROM new_rows GROUP BY 1, 2, 3;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO recipient_count_deltas (campaign_id, bucket, sent_via, changed_at, n)
        SELECT campaign_id, herald_count_bucket(state), CASE WHEN state = 'sent' THEN sent_via END,
               date_trunc('second', now()), -count(*)
        FROM old_rows GROUP BY 1, 2, 3;
    ELSE
        INSERT INTO recipient_count_deltas (campaign_id, bucket, sent_via, changed_at, n)
        SELECT campaign_id, bucket, sent_via, date_trunc('second', now()), sum(delta) FROM (
            SELECT campaign_id, herald_count_bucket(state) AS bucket,
                   CASE WHEN state = 'sent' THEN sent_via END AS sent_via, 1 AS delta
            FROM new_rows
            UNION ALL
            SELECT campaign_id, herald_count_bucket(state),
                   CASE WHEN state = 'sent' THEN sent_via END, -1
            FROM old_rows
        ) d
        GROUP BY 1, 2, 3 HAVING sum(delta) <> 0;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER recipients_count_insert AFTER INSERT ON recipients
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION herald_count_recipients();
CREATE TRIGGER recipients_count_update AFTER UPDATE ON recipients
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION herald_count_recipients();
CREATE TRIGGER recipients_count_delete AFTER DELETE ON recipients
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION herald_count_recipients();

-- Moves every committed delta into the counters, in one statement; returns how many deltas
-- it folded. Deltas committed meanwhile stay for the next fold: the DELETE sees only what
-- its snapshot does, and the views count what is left. Only the leading scheduler folds,
-- so the counters have one writer and shard 0 serves; the sort keeps a second folder (a
-- leader change mid-fold) from deadlocking with the first.
CREATE FUNCTION herald_fold_counts() RETURNS bigint LANGUAGE sql VOLATILE AS $$
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

-- What every reader of the counters reads: the folded counters and the deltas not folded
-- yet.
CREATE VIEW campaign_bucket_counts AS
SELECT campaign_id, state, n FROM campaign_counters
UNION ALL
SELECT campaign_id, bucket, n FROM recipient_count_deltas;

CREATE VIEW campaign_send_seconds AS
SELECT campaign_id, second, sent FROM campaign_sends_per_second
UNION ALL
SELECT campaign_id, changed_at, n FROM recipient_count_deltas WHERE bucket = 'sent';

CREATE VIEW campaign_provider_sent AS
SELECT campaign_id, provider_id, sent FROM campaign_provider_sends
UNION ALL
SELECT campaign_id, sent_via, n FROM recipient_count_deltas
WHERE bucket = 'sent' AND sent_via IS NOT NULL;

-- Sends per provider and month, exact between folds (as campaign_provider_sent).
CREATE VIEW provider_month_sent AS
SELECT provider_id, month, sent FROM provider_month_sends
UNION ALL
SELECT sent_via, (date_trunc('month', changed_at AT TIME ZONE 'UTC'))::date, n
FROM recipient_count_deltas WHERE bucket = 'sent' AND sent_via IS NOT NULL;

-- Recipients per state of each campaign that has any: what progress reads. The in-flight
-- bucket is split into queued and sending here, by counting the few being sent.
CREATE VIEW campaign_state_counts AS
SELECT g.campaign_id, g.total, g.pending, g.in_flight - s.sending AS queued, s.sending,
       g.unknown, g.sent, g.failed, g.cancelled, g.expired
FROM (
    SELECT campaign_id,
           sum(n)::int8 AS total,
           coalesce(sum(n) FILTER (WHERE state = 'pending'), 0)::int8 AS pending,
           coalesce(sum(n) FILTER (WHERE state = 'in_flight'), 0)::int8 AS in_flight,
           coalesce(sum(n) FILTER (WHERE state = 'unknown'), 0)::int8 AS unknown,
           coalesce(sum(n) FILTER (WHERE state = 'sent'), 0)::int8 AS sent,
           coalesce(sum(n) FILTER (WHERE state = 'failed'), 0)::int8 AS failed,
           coalesce(sum(n) FILTER (WHERE state = 'cancelled'), 0)::int8 AS cancelled,
           coalesce(sum(n) FILTER (WHERE state = 'expired'), 0)::int8 AS expired
    FROM campaign_bucket_counts GROUP BY campaign_id
) g
CROSS JOIN LATERAL (
    -- Served by recipients_sending.
    SELECT count(*)::int8 AS sending FROM recipients r
    WHERE r.campaign_id = g.campaign_id AND r.state = 'sending'
) s;

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

-- Delivery statuses (the providers' latest word, from receipts) per campaign and provider.
-- Not kept through the ledger: a statement trigger on recipients adds each statement's
-- deltas to the shard of its own connection, so concurrent writers rarely wait on one
-- another's row locks; readers sum the shards. Sorted, so that two statements always
-- lock counter rows in the same order (no deadlock between them).
CREATE TABLE campaign_delivery_counts (
    campaign_id  uuid NOT NULL REFERENCES campaigns (id),
    provider_id  uuid NOT NULL,
    status       text NOT NULL,
    shard        smallint NOT NULL,
    n            bigint NOT NULL,
    PRIMARY KEY (campaign_id, provider_id, status, shard)
);

CREATE FUNCTION herald_count_deliveries() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    my_shard smallint := (pg_backend_pid() % 8)::smallint;
BEGIN
    INSERT INTO campaign_delivery_counts AS d (campaign_id, provider_id, status, shard, n)
    SELECT campaign_id, provider_id, status, my_shard, sum(delta) FROM (
        SELECT campaign_id, sent_via AS provider_id, delivery_status AS status, 1 AS delta
        FROM new_rows WHERE delivery_status IS NOT NULL AND sent_via IS NOT NULL
        UNION ALL
        SELECT campaign_id, sent_via, delivery_status, -1
        FROM old_rows WHERE delivery_status IS NOT NULL AND sent_via IS NOT NULL
    ) x
    GROUP BY 1, 2, 3 HAVING sum(delta) <> 0 ORDER BY 1, 2, 3
    ON CONFLICT (campaign_id, provider_id, status, shard) DO UPDATE SET n = d.n + excluded.n;
    RETURN NULL;
END
$$;

CREATE TRIGGER recipients_count_deliveries AFTER UPDATE ON recipients
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION herald_count_deliveries();


-- ════════════════════════════════════════════════════════════════════════════════════════
-- Workers
-- ════════════════════════════════════════════════════════════════════════════════════════

-- Live workers, each with a heartbeat. A provider's in-flight cap holds across the fleet:
-- every worker takes an equal share of it (cap / live workers) as the prefetch of that
-- provider's lane, so however many replicas run, their requests in flight add up to at
-- most the cap.
CREATE TABLE workers (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    seen_at     timestamptz NOT NULL DEFAULT now(),
    -- Per provider, how many requests the worker may have in flight (its cap, plus requests
    -- still running from a larger one it gave up): a worker takes only what the others
    -- leave of a fleet-wide cap, so joining, leaving and outages never overshoot it.
    caps        jsonb NOT NULL DEFAULT '{}'::jsonb
);


-- ════════════════════════════════════════════════════════════════════════════════════════
-- Shared rules: decisions the scheduler, the worker and the sweeper share, written once
-- here rather than copied into each statement that needs them (copies drift)
-- ════════════════════════════════════════════════════════════════════════════════════════

-- Whether `at` falls inside the daily quiet window [quiet_start, quiet_end) in zone `tz`.
-- One definition, used by the scheduler (release nothing) and the worker (send nothing).
CREATE FUNCTION herald_in_quiet_hours(quiet_start time, quiet_end time, tz text, at timestamptz)
RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN quiet_start IS NULL OR quiet_end IS NULL THEN false
        WHEN quiet_start < quiet_end
            THEN (at AT TIME ZONE tz)::time >= quiet_start AND (at AT TIME ZONE tz)::time < quiet_end
        ELSE (at AT TIME ZONE tz)::time >= quiet_start OR (at AT TIME ZONE tz)::time < quiet_end
    END
$$;

-- herald_may_send and herald_held_state are the two decisions a recipient's transitions
-- share (the tick's due counts, the worker's lease, the sweeper). Both are single SQL
-- expressions, so the planner inlines them into each statement: the indexes on the
-- campaign's columns (`campaigns_active` on `status`) still serve.

-- May a campaign's recipients be sent now: running, before its expiry, outside its quiet
-- hours. (A provider's open circuit breaker is the lane's matter, not the campaign's.)
CREATE FUNCTION herald_may_send(status text, expires_at timestamptz, quiet_start time,
                                quiet_end time, time_zone text, at timestamptz)
RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT status = 'running'
       AND (expires_at IS NULL OR expires_at > at)
       AND NOT herald_in_quiet_hours(quiet_start, quiet_end, time_zone, at)
$$;

-- Where a waiting recipient goes when its campaign may not send: a cancelled campaign's
-- ends `cancelled`, an expired one's `expired`; a paused one's, or one inside its quiet
-- hours, waits `pending` for the campaign to send again.
CREATE FUNCTION herald_held_state(status text, expires_at timestamptz, at timestamptz)
RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN status = 'cancelled' THEN 'cancelled'
                WHEN expires_at <= at THEN 'expired'
                ELSE 'pending' END
$$;

-- Whether a provider's circuit breaker is open now (one definition for the scheduler).
CREATE FUNCTION herald_breaker_open(provider uuid) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT EXISTS (SELECT 1 FROM provider_pacing p WHERE p.provider_id = provider AND p.open_until > now())
$$;

-- Takes a live-call slot for a recipient about to be called: true if neither its provider's
-- nor its tenant's cap of live calls is reached, and then the call counts as live until
-- `hold_ms` from now (or its final status callback). Slots of one provider and of one tenant
-- are taken one at a time (advisory locks, always provider then tenant, so two callers never
-- wait on each other in a cycle); every statement here sees the previous holder's commit.
CREATE FUNCTION herald_take_live_call(recipient bigint, seq integer, provider uuid, tenant uuid, hold_ms integer)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    provider_cap integer;
    tenant_cap integer;
BEGIN
    SELECT max_live_calls INTO provider_cap FROM providers WHERE id = provider;
    SELECT max_live_calls INTO tenant_cap FROM tenants WHERE id = tenant;
    IF provider_cap IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtext('herald-live-calls'), hashtext(provider::text));
        IF (SELECT count(*) FROM recipients r
            WHERE r.live_until > now() AND r.sent_via = provider AND r.id <> recipient) >= provider_cap THEN
            RETURN false;
        END IF;
    END IF;
    IF tenant_cap IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtext('herald-live-calls'), hashtext(tenant::text));
        IF (SELECT count(*) FROM recipients r JOIN campaigns c ON c.id = r.campaign_id
            WHERE r.live_until > now() AND c.tenant_id = tenant AND r.id <> recipient) >= tenant_cap THEN
            RETURN false;
        END IF;
    END IF;
    UPDATE recipients SET live_until = now() + make_interval(secs => hold_ms / 1000.0)
    WHERE id = recipient AND dispatch_seq = seq AND state = 'sending';
    RETURN FOUND;
END
$$;
