-- The counter ledger no longer records moves between unfinished states.
--
-- The ledger (`recipient_count_deltas`) took a delta row per campaign and counter bucket
-- that a statement moved recipients between. With first attempts claimed by range, a
-- worker's lease moves them `pending` → `sending`, two buckets, so each lease statement
-- appended two rows per campaign it touched, and each outcome two more (`in_flight` → `sent`).
-- With one big campaign that is a few rows per statement; with 10,000 small campaigns a
-- statement's recipients belong to nearly as many campaigns as it has recipients, and the
-- ledger took about 3.8 rows per recipient sent (771,458 inserts for 200,000, `pg_waldump`: 26
-- WAL records a recipient), every one of them a heap and an index entry, deleted again by a
-- fold that took 1.5 s.
--
-- Now the recipients not finished yet (`pending`, `queued`, `sending`) have no bucket of
-- their own: each recipient is counted once in `total` when inserted (and taken out when
-- deleted), and once in the bucket of any other state it is in (`unknown`, `sent`,
-- `failed`, `cancelled`, `expired`). A lease and a claim change no counter, an outcome one
-- per campaign, bucket and second. What is still waiting is `total` less the other
-- buckets; progress splits it into pending, queued and sending by counting the queued and
-- sending ones from their partial indexes (what the lanes and the workers hold, not the
-- campaign's size).
--
-- The recipients table is locked for the migration (counters folded and rewritten in one
-- go, and an index rebuilt: ACCESS EXCLUSIVE from the start, as its DROP INDEX would take
-- it anyway, and a weaker lock upgraded later could deadlock). Binaries older than this
-- migration read the buckets it removes (an old scheduler would complete campaigns still
-- sending): stop every Herald process before running it, then start the new release.
-- Herald is deployed nowhere yet.

LOCK TABLE recipients IN ACCESS EXCLUSIVE MODE;

-- The counter bucket of a recipient state: NULL for a recipient not finished yet.
CREATE OR REPLACE FUNCTION herald_count_bucket(state text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN state IN ('pending', 'queued', 'sending') THEN NULL ELSE state END
$$;

CREATE OR REPLACE FUNCTION herald_count_recipients() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Transition tables exist per event: `new_rows` for INSERT and UPDATE, `old_rows` for
    -- UPDATE and DELETE.
    IF TG_OP = 'INSERT' THEN
        INSERT INTO recipient_count_deltas (campaign_id, bucket, sent_via, changed_at, n)
        SELECT campaign_id, bucket, sent_via, date_trunc('second', now()), count(*) FROM (
            SELECT campaign_id, 'total' AS bucket, NULL::uuid AS sent_via FROM new_rows
            UNION ALL
            SELECT campaign_id, herald_count_bucket(state), CASE WHEN state = 'sent' THEN sent_via END
            FROM new_rows WHERE herald_count_bucket(state) IS NOT NULL
        ) d
        GROUP BY 1, 2, 3;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO recipient_count_deltas (campaign_id, bucket, sent_via, changed_at, n)
        SELECT campaign_id, bucket, sent_via, date_trunc('second', now()), -count(*) FROM (
            SELECT campaign_id, 'total' AS bucket, NULL::uuid AS sent_via FROM old_rows
            UNION ALL
            SELECT campaign_id, herald_count_bucket(state), CASE WHEN state = 'sent' THEN sent_via END
            FROM old_rows WHERE herald_count_bucket(state) IS NOT NULL
        ) d
        GROUP BY 1, 2, 3;
    ELSE
        -- Only rows in or out of a bucket: a lease or a claim (between unfinished states)
        -- inserts nothing.
        INSERT INTO recipient_count_deltas (campaign_id, bucket, sent_via, changed_at, n)
        SELECT campaign_id, bucket, sent_via, date_trunc('second', now()), sum(delta) FROM (
            SELECT campaign_id, herald_count_bucket(state) AS bucket,
                   CASE WHEN state = 'sent' THEN sent_via END AS sent_via, 1 AS delta
            FROM new_rows WHERE herald_count_bucket(state) IS NOT NULL
            UNION ALL
            SELECT campaign_id, herald_count_bucket(state),
                   CASE WHEN state = 'sent' THEN sent_via END, -1
            FROM old_rows WHERE herald_count_bucket(state) IS NOT NULL
        ) d
        GROUP BY 1, 2, 3 HAVING sum(delta) <> 0;
    END IF;
    RETURN NULL;
END
$$;

-- What a counter adds to a campaign's recipients not finished yet: `total` counts every
-- recipient, each other bucket takes its own away; `unknown` ones count as not finished
-- when `with_unknown` (a lookup or a receipt still settles them), else as done.
CREATE FUNCTION herald_unfinished(state text, n bigint, with_unknown boolean) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN state = 'total' THEN n WHEN state = 'unknown' AND with_unknown THEN 0 ELSE -n END
$$;

-- The counters as they were (every state a bucket, queued and sending one `in_flight`),
-- rewritten: their sum per campaign is its total, and the unfinished buckets go.
SELECT herald_fold_counts();
INSERT INTO campaign_counters (campaign_id, state, shard, n)
SELECT campaign_id, 'total', 0, sum(n) FROM campaign_counters GROUP BY campaign_id;
DELETE FROM campaign_counters WHERE state IN ('pending', 'in_flight');

-- Progress counts a campaign's queued recipients from this index's prefix, as it counts
-- those being sent from `recipients_lease`; the sweeper's search for claims gone stale reads
-- it whole (the queued ones only: a pass's worth at most).
DROP INDEX recipients_queued_at;
CREATE INDEX recipients_queued_at ON recipients (campaign_id, queued_at) WHERE state = 'queued';

-- Recipients per state of each campaign that has any: what progress reads.
CREATE OR REPLACE VIEW campaign_state_counts AS
SELECT g.campaign_id, g.total,
       g.total - g.unknown - g.sent - g.failed - g.cancelled - g.expired - q.queued - s.sending
           AS pending,
       q.queued, s.sending, g.unknown, g.sent, g.failed, g.cancelled, g.expired
FROM (
    SELECT campaign_id,
           coalesce(sum(n) FILTER (WHERE state = 'total'), 0)::int8 AS total,
           coalesce(sum(n) FILTER (WHERE state = 'unknown'), 0)::int8 AS unknown,
           coalesce(sum(n) FILTER (WHERE state = 'sent'), 0)::int8 AS sent,
           coalesce(sum(n) FILTER (WHERE state = 'failed'), 0)::int8 AS failed,
           coalesce(sum(n) FILTER (WHERE state = 'cancelled'), 0)::int8 AS cancelled,
           coalesce(sum(n) FILTER (WHERE state = 'expired'), 0)::int8 AS expired
    FROM campaign_bucket_counts GROUP BY campaign_id
) g
-- Served by recipients_queued_at and recipients_lease.
CROSS JOIN LATERAL (
    SELECT count(*)::int8 AS queued FROM recipients r
    WHERE r.campaign_id = g.campaign_id AND r.state = 'queued'
) q
CROSS JOIN LATERAL (
    SELECT count(*)::int8 AS sending FROM recipients r
    WHERE r.campaign_id = g.campaign_id AND r.state = 'sending'
) s;
