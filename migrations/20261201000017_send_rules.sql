-- Two decisions a recipient's transitions share, written once here instead of in each
-- statement that needs them (the tick's due counts, the worker's lease, the sweeper):
-- they had been copied into three statements, and copies drift.
--
-- Both are single SQL expressions, so the planner inlines them into each statement: the
-- indexes on the campaign's columns (`campaigns_active` on `status`) still serve.

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
