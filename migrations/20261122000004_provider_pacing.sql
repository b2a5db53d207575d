-- Fleet-wide provider rate limits. A provider may allow `rate_limit` requests per
-- `rate_window_ms`; every worker reserves its send times from one row per provider (GCRA:
-- the next free send time moves forward by one spacing per request), so the limit holds
-- however many workers run, retries included.
ALTER TABLE providers
    ADD COLUMN rate_limit integer CHECK (rate_limit BETWEEN 1 AND 1000000),
    ADD COLUMN rate_window_ms integer NOT NULL DEFAULT 1000 CHECK (rate_window_ms BETWEEN 1 AND 86400000);

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
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Attempts refused by a throttling provider: they wait like retries (attempts > 0 keeps them
-- in the retry tier, which honours next_attempt_at) but do not count against max_attempts.
ALTER TABLE recipients ADD COLUMN throttles integer NOT NULL DEFAULT 0;
