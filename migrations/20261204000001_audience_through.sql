-- Whether a campaign has first attempts left to claim, read from its row instead of counted.
--
-- Each tick counts, per running campaign, the first attempts past its `claimed_through`
-- cursor (`store::campaigns::dispatchable`): with 10,000 running campaigns that was 10,000
-- index probes and 200,000 heap fetches, the largest phase of the tick. A campaign's
-- recipients have distinct ids, none above `audience_through` (its highest), so at most
-- `audience_through - claimed_through` of them wait past the cursor: the tick plans with
-- that bound (exact for an audience whose ids run unbroken and none of them attempted past
-- the cursor; over where other inserts' ids came between, or after a cursor moved back),
-- and a claim that finds fewer than it asked for has read every first attempt left (as of
-- its snapshot) and moves the cursor to `audience_through` (`store::recipients::claim`).
--
-- Kept by the insert, whichever path adds a campaign's recipients (an upload, a segment, a
-- catalog), so no path can add one above the bound. Transactional messages are left out:
-- their stream is claimed row by row and counted by probe, and a row write per message on
-- the stream's campaign would make it a hot row.
ALTER TABLE campaigns ADD COLUMN audience_through bigint NOT NULL DEFAULT 0;

-- Only campaigns not yet finished: the ALTER holds `campaigns` exclusively until the end.
UPDATE campaigns c SET audience_through = r.through
FROM (SELECT campaign_id, max(id) AS through FROM recipients
      WHERE NOT transactional
        AND campaign_id IN (SELECT id FROM campaigns
                            WHERE status IN ('draft', 'scheduled', 'running', 'paused'))
      GROUP BY campaign_id) r
WHERE c.id = r.campaign_id;

CREATE FUNCTION herald_extend_audience() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE campaigns c SET audience_through = n.through
    FROM (SELECT campaign_id, max(id) AS through FROM new_rows WHERE NOT transactional
          GROUP BY campaign_id) n
    WHERE c.id = n.campaign_id AND c.audience_through < n.through;
    RETURN NULL;
END
$$;

CREATE TRIGGER recipients_extend_audience AFTER INSERT ON recipients
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION herald_extend_audience();
