-- A provider's pacing row holds absolute times of the database's clock (`next_at`,
-- `open_until`, `throttled_at`). Should that clock step back (a failover to a server whose
-- clock is behind, a virtual machine's clock corrected), they would lie ahead by the step,
-- and the provider stall, or its breaker stay open fleet-wide, that long: hours, for a
-- clock an hour off. The row's `updated_at`, written with them, shows the step: a row
-- written "in the future" has its times read that much earlier, and every change of the
-- row writes them back so (store/src/pacing.rs), as does the scheduler's housekeeping for a
-- row nobody changes. A time relative to the row's last change is kept; how long the row
-- then stood is not known, so a wait runs at most its whole length again.
CREATE FUNCTION herald_pacing_time(at timestamptz, written timestamptz) RETURNS timestamptz
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT at - greatest(written - clock_timestamp(), interval '0')
$$;

-- Unused since the scheduler reads the open breakers once a tick (store/src/campaigns.rs),
-- and it read `open_until` as written.
DROP FUNCTION herald_breaker_open(uuid);
