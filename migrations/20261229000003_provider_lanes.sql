-- Workers consume the lanes of providers in use and of retired ones only while something
-- unfinished names them: whether a campaign (or transactional stream) still needs its
-- providers is written here once, for that and for the retirement's own check.
--
-- Unfinished: a campaign not completed; a cancelled one while requests are in flight or
-- lost answers still settle (not once settled: `settled_at`); a stream while its messages
-- are not final (lost answers among them).
CREATE FUNCTION herald_campaign_unfinished(c campaigns) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN c.status = 'completed' THEN false
        WHEN c.status = 'cancelled' THEN
            c.settled_at IS NULL
            AND (EXISTS (SELECT 1 FROM recipients r
                         WHERE r.campaign_id = c.id AND r.state = 'sending')
                 OR (SELECT coalesce(sum(k.n), 0) FROM campaign_bucket_counts k
                     WHERE k.campaign_id = c.id AND k.state = 'unknown') > 0)
        WHEN c.kind = 'messages' THEN
            (SELECT coalesce(sum(herald_unfinished(k.state, k.n, true)), 0)
             FROM campaign_bucket_counts k WHERE k.campaign_id = c.id) > 0
        ELSE true
    END
$$;

-- A retired provider's uses, looked up by every worker's refresh (every 2 s) and by each
-- retirement: among the campaigns that may be unfinished only (the function answers false
-- for the others), so neither reads a provider's whole history of campaigns. Callers
-- repeat this predicate beside the function's call, for the planner to take these.
CREATE INDEX campaigns_provider_unfinished ON campaigns (provider_id)
    WHERE status <> 'completed' AND settled_at IS NULL;
CREATE INDEX campaigns_overflow_provider_unfinished ON campaigns (overflow_provider_id)
    WHERE overflow_provider_id IS NOT NULL AND status <> 'completed' AND settled_at IS NULL;
