-- Delivery receipts, ambiguous outcomes and live calls.
--
-- A request whose answer never came may have been sent: the recipient waits in `unknown`
-- for a receipt (which settles it as sent) or for its provider's window to pass (then it is
-- retried, after a reconciliation lookup where the API has one). Receipts are kept
-- append-only and applied to the recipient by rank: a status never moves backwards.

ALTER TABLE recipients DROP CONSTRAINT recipients_state_check;
ALTER TABLE recipients ADD CONSTRAINT recipients_state_check
    CHECK (state IN ('pending', 'queued', 'sending', 'unknown', 'sent', 'failed', 'cancelled', 'expired'));

ALTER TABLE recipients
    -- When the latest attempt's lease was taken: when its request was made, at the latest.
    ADD COLUMN attempted_at timestamptz,
    -- When the attempt whose outcome is unknown began, and the provider it went to; set
    -- until a receipt, a lookup or a later answer settles it (the worker looks the message
    -- up there, from that time on, before sending again).
    ADD COLUMN outcome_unknown_at timestamptz,
    ADD COLUMN unknown_via uuid,
    -- The provider's latest word on the message or call (herald_shared::delivery) and its
    -- rank; receipts only ever raise the rank.
    ADD COLUMN delivery_status text,
    ADD COLUMN delivery_rank smallint NOT NULL DEFAULT 0,
    ADD COLUMN delivery_error text,
    ADD COLUMN delivery_updated_at timestamptz,
    -- A call counts against its provider's and tenant's live-call caps until then (its final
    -- status callback clears it).
    ADD COLUMN live_until timestamptz;

-- `sent_via` now names the provider of the latest attempt from the moment its lease is
-- taken (not only once sent), so a recovered lease is judged by the provider it went to.

CREATE INDEX recipients_unknown ON recipients (next_attempt_at) WHERE state = 'unknown';
-- Receipts that do not echo Herald's reference are matched by the provider's message id.
CREATE INDEX recipients_message_id ON recipients (provider_message_id) WHERE provider_message_id IS NOT NULL;
CREATE INDEX recipients_live ON recipients (live_until) WHERE live_until IS NOT NULL;

ALTER TABLE providers
    -- What to do when a request's answer never came: `retry` at once (a provider that
    -- honours Herald's idempotency key), `await_receipt` for `unknown_window_ms` and then
    -- retry (after a lookup where the API has one), or `fail` after the window.
    ADD COLUMN unknown_outcome text NOT NULL DEFAULT 'await_receipt'
        CHECK (unknown_outcome IN ('retry', 'await_receipt', 'fail')),
    ADD COLUMN unknown_window_ms integer NOT NULL DEFAULT 120000
        CHECK (unknown_window_ms BETWEEN 0 AND 86400000),
    -- Calls live at once through this provider (its lines), fleet-wide; NULL: no cap.
    ADD COLUMN max_live_calls integer CHECK (max_live_calls BETWEEN 1 AND 100000),
    -- A call without a final status callback stops counting as live after this long.
    ADD COLUMN live_call_timeout_ms integer NOT NULL DEFAULT 600000
        CHECK (live_call_timeout_ms BETWEEN 1000 AND 86400000);

ALTER TABLE tenants
    ADD COLUMN max_live_calls integer CHECK (max_live_calls BETWEEN 1 AND 100000);

-- Every receipt received, as received (normalised status beside the raw one). Appended,
-- never changed but for `recipient_id` (set when a parked receipt finds its recipient) and
-- `orphaned_at` (set when one never does); pruned after the retention period.
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

-- Delivery statuses per campaign and provider, maintained like campaign_counters (sharded
-- per connection) as recipients' delivery statuses change.
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

-- Progress gains the recipients whose outcome is unknown (their own counter bucket: the
-- trigger counts every state other than queued/sending under its own name).
DROP VIEW campaign_state_counts;
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
    FROM campaign_counters GROUP BY campaign_id
) g
CROSS JOIN LATERAL (
    SELECT count(*)::int8 AS sending FROM recipients r
    WHERE r.campaign_id = g.campaign_id AND r.state = 'sending'
) s;

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
