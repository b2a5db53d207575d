-- Each worker reports, per provider, how many requests it may have in flight (its cap,
-- plus requests still running from a larger one it gave up): a worker takes only what the
-- others leave of a fleet-wide cap, so joining, leaving and outages never overshoot it.
ALTER TABLE workers ADD COLUMN caps jsonb NOT NULL DEFAULT '{}'::jsonb;
