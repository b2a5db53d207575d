-- A segment may be deleted once no draft campaign waits to be started with it (the admin
-- checks, holding the segment's row): a started campaign's audience is its recipients by
-- then, and it keeps no more than that it had a segment.
ALTER TABLE campaigns
    DROP CONSTRAINT campaigns_segment_id_fkey,
    ADD CONSTRAINT campaigns_segment_id_fkey
        FOREIGN KEY (segment_id) REFERENCES segments (id) ON DELETE SET NULL;

-- What a deletion looks for (a draft waiting with it) and then sets null, without reading
-- every campaign while it holds the segment.
CREATE INDEX campaigns_segment ON campaigns (segment_id) WHERE segment_id IS NOT NULL;
