-- The error a recipient keeps when it is ended unsent (`cancelled`, `expired`) while an
-- earlier request of it may have been sent (its answer was lost, `outcome_unknown_at`): said,
-- so that neither the campaign's owner nor an auditor takes `cancelled` or `expired` for
-- "never sent" (a receipt that comes later still makes it `sent`). `reason` is the error it
-- would have had otherwise.
CREATE FUNCTION herald_ended_unsent_error(outcome_unknown_at timestamptz, reason text)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN outcome_unknown_at IS NULL THEN reason
                ELSE 'an earlier request may have reached the recipient (its answer was lost); '
                     || 'not sent again' || coalesce(' (last: ' || reason || ')', '') END
$$;
