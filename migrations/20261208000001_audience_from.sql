-- A campaign's lowest audience id beside its highest, so a campaign never claimed yet is
-- planned for the recipients it has, not for a whole batch.
--
-- The tick plans a campaign's first attempts from its row: at most `audience_through -
-- claimed_through` of them wait past its cursor (migration 20261204000001). The cursor
-- starts at 0, so until a campaign's first claim that bound was its highest id, capped by
-- its `batch_size` (1,000 by default): a small campaign looked as large as a whole batch
-- (all but those whose ids came first). With 10,000 campaigns of 10 recipients the fair
-- plan handed each pass's budget out as if each had 1,000 (the largest standings first),
-- the claims found 10 a campaign, and from the middle of a run the passes claimed a third
-- of their budgets or less: 2,800–3,300 msg/s, where campaigns claimed in two turns of 5
-- (`HERALD_SCHEDULER_MIN_BATCH=5`, whose second claims read an exact bound) sent
-- 7,700–8,000 (BENCHMARKS.md 2026-12-12).
--
-- Now the bound starts at the audience's lowest id: `audience_through -
-- greatest(claimed_through, audience_from - 1)`, exact when no other insert drew ids while
-- the audience was added, still an upper bound where other inserts' ids came between.
-- `audience_from` only falls (the trigger takes the least), so it stays at or below every
-- recipient of the campaign whatever order concurrent inserts commit in; 0 (a campaign
-- with no recipients yet) leaves the bound as it was.

ALTER TABLE campaigns ADD COLUMN audience_from bigint NOT NULL DEFAULT 0;

-- Only campaigns not yet finished, as for audience_through.
UPDATE campaigns c SET audience_from = r.first
FROM (SELECT campaign_id, min(id) AS first FROM recipients
      WHERE NOT transactional
        AND campaign_id IN (SELECT id FROM campaigns
                            WHERE status IN ('draft', 'scheduled', 'running', 'paused'))
      GROUP BY campaign_id) r
WHERE c.id = r.campaign_id;

CREATE OR REPLACE FUNCTION herald_extend_audience() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE campaigns c
    SET audience_through = greatest(c.audience_through, n.through),
        audience_from = CASE WHEN c.audience_from = 0 THEN n.first
                             ELSE least(c.audience_from, n.first) END
    FROM (SELECT campaign_id, min(id) AS first, max(id) AS through FROM new_rows
          WHERE NOT transactional GROUP BY campaign_id) n
    WHERE c.id = n.campaign_id
      AND (c.audience_through < n.through OR c.audience_from = 0 OR c.audience_from > n.first);
    RETURN NULL;
END
$$;
