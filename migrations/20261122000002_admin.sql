-- The admin: API keys, contacts and segments, campaign controls (weight, quiet hours, expiry,
-- segment audience) and progress counters maintained as recipients change state.

ALTER TABLE tenants
    -- Default zone for the quiet hours of this tenant's campaigns (an IANA name).
    ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC';

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

CREATE TABLE segments (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- The filter as the tenant wrote it; compiled to parameterized SQL when used.
    filter      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

ALTER TABLE campaigns
    -- Share among the same tenant's campaigns (the tenant's weight splits across tenants).
    ADD COLUMN weight integer NOT NULL DEFAULT 1 CHECK (weight BETWEEN 1 AND 1000),
    -- Recipients not sent by then become `expired`; nothing is sent late.
    ADD COLUMN expires_at timestamptz,
    -- A daily window (local time in `time_zone`) in which nothing is released or sent.
    -- quiet_start > quiet_end wraps midnight (21:00–07:00).
    ADD COLUMN quiet_start time,
    ADD COLUMN quiet_end time,
    ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC',
    -- Audience chosen by a segment, materialized into recipients at start.
    ADD COLUMN segment_id uuid REFERENCES segments (id),
    ADD CONSTRAINT campaigns_quiet_both CHECK ((quiet_start IS NULL) = (quiet_end IS NULL)),
    ADD CONSTRAINT campaigns_quiet_nonempty CHECK (quiet_start IS DISTINCT FROM quiet_end OR quiet_start IS NULL);

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

-- Progress counters: recipients per (campaign, state), maintained by statement-level
-- triggers so progress never counts millions of rows. Each statement adds its deltas to the
-- shard of its own connection, so concurrent writers (scheduler, many workers) rarely wait
-- on one another's row locks; readers sum the shards.
CREATE TABLE campaign_counters (
    campaign_id  uuid NOT NULL REFERENCES campaigns (id),
    state        text NOT NULL,
    shard        smallint NOT NULL,
    n            bigint NOT NULL,
    PRIMARY KEY (campaign_id, state, shard)
);

-- Sends per campaign per second, for the send rate and ETA (trimmed by the scheduler).
CREATE TABLE campaign_sends_per_second (
    campaign_id  uuid NOT NULL REFERENCES campaigns (id),
    second       timestamptz NOT NULL,
    shard        smallint NOT NULL,
    sent         bigint NOT NULL,
    PRIMARY KEY (campaign_id, second, shard)
);

CREATE FUNCTION herald_count_recipients() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    my_shard smallint := (pg_backend_pid() % 8)::smallint;
BEGIN
    -- Sorted, so that two statements always lock counter rows in the same order (no
    -- deadlock between them).
    IF TG_OP = 'INSERT' THEN
        INSERT INTO campaign_counters AS cc (campaign_id, state, shard, n)
        SELECT campaign_id, state, my_shard, count(*) FROM new_rows
        GROUP BY campaign_id, state ORDER BY campaign_id, state
        ON CONFLICT (campaign_id, state, shard) DO UPDATE SET n = cc.n + excluded.n;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO campaign_counters AS cc (campaign_id, state, shard, n)
        SELECT campaign_id, state, my_shard, -count(*) FROM old_rows
        GROUP BY campaign_id, state ORDER BY campaign_id, state
        ON CONFLICT (campaign_id, state, shard) DO UPDATE SET n = cc.n + excluded.n;
    ELSE
        INSERT INTO campaign_counters AS cc (campaign_id, state, shard, n)
        SELECT campaign_id, state, my_shard, sum(delta) FROM (
            SELECT campaign_id, state, 1 AS delta FROM new_rows
            UNION ALL
            SELECT campaign_id, state, -1 AS delta FROM old_rows
        ) d
        GROUP BY campaign_id, state HAVING sum(delta) <> 0 ORDER BY campaign_id, state
        ON CONFLICT (campaign_id, state, shard) DO UPDATE SET n = cc.n + excluded.n;

        INSERT INTO campaign_sends_per_second AS s (campaign_id, second, shard, sent)
        SELECT campaign_id, date_trunc('second', now()), my_shard, sum(delta) FROM (
            SELECT campaign_id, 1 AS delta FROM new_rows WHERE state = 'sent'
            UNION ALL
            SELECT campaign_id, -1 AS delta FROM old_rows WHERE state = 'sent'
        ) d
        GROUP BY campaign_id HAVING sum(delta) > 0 ORDER BY campaign_id
        ON CONFLICT (campaign_id, second, shard) DO UPDATE SET sent = s.sent + excluded.sent;
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

-- Recipients that exist before this migration.
INSERT INTO campaign_counters (campaign_id, state, shard, n)
SELECT campaign_id, state, 0, count(*) FROM recipients GROUP BY campaign_id, state;

-- Errors by reason for the campaign detail page, without scanning the sent majority.
CREATE INDEX recipients_failed ON recipients (campaign_id) WHERE state = 'failed';
