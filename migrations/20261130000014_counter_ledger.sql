-- Counters from a ledger. The statement trigger on recipients used to upsert three counter
-- tables itself: one row per campaign and state bucket, per second and per provider. With
-- many small campaigns an outcome statement touches a different campaign per recipient, so
-- those upserts were most of its cost (measured on 10,000 campaigns: 2.0–4.0 ms of a
-- 3.1–6.4 ms statement of 22 outcomes; the upserts alone about 35 µs a row, a plain insert
-- into an unindexed table about 2 µs). The trigger now appends each statement's deltas
-- here, and the scheduler folds them into the counters every few ticks
-- (`herald_fold_counts`). Readers see both through the views below, so counts stay exact
-- between folds, and with no scheduler running at all.
CREATE TABLE recipient_count_deltas (
    -- No foreign key: it would add a lookup to every delta written.
    campaign_id  uuid NOT NULL,
    -- The counter bucket (`herald_count_bucket`): pending, in_flight, sent, unknown, failed...
    bucket       text NOT NULL,
    -- For the `sent` bucket: the provider that sent (the per-provider counts).
    sent_via     uuid,
    -- The second of the change (the send-rate samples).
    changed_at   timestamptz NOT NULL,
    n            bigint NOT NULL
);
-- Progress reads one campaign's unfolded deltas at a time.
CREATE INDEX recipient_count_deltas_campaign ON recipient_count_deltas (campaign_id);

-- The folded tables' rows come only from recipients' deltas, and a recipient's own foreign
-- key already says its campaign exists (campaigns are never deleted). Checking it again per
-- new row cost a fold of 10,000 campaigns 189 ms of its 477 (EXPLAIN ANALYZE: a row per
-- campaign and second in campaign_sends_per_second, 19 µs a check).
ALTER TABLE campaign_counters DROP CONSTRAINT campaign_counters_campaign_id_fkey;
ALTER TABLE campaign_sends_per_second DROP CONSTRAINT campaign_sends_per_second_campaign_id_fkey;
ALTER TABLE campaign_provider_sends DROP CONSTRAINT campaign_provider_sends_campaign_id_fkey;

CREATE OR REPLACE FUNCTION herald_count_recipients() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Transition tables exist per event: `new_rows` for INSERT and UPDATE, `old_rows` for
    -- UPDATE and DELETE.
    IF TG_OP = 'INSERT' THEN
        INSERT INTO recipient_count_deltas (campaign_id, bucket, sent_via, changed_at, n)
        SELECT campaign_id, herald_count_bucket(state), CASE WHEN state = 'sent' THEN sent_via END,
               date_trunc('second', now()), count(*)
        FROM new_rows GROUP BY 1, 2, 3;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO recipient_count_deltas (campaign_id, bucket, sent_via, changed_at, n)
        SELECT campaign_id, herald_count_bucket(state), CASE WHEN state = 'sent' THEN sent_via END,
               date_trunc('second', now()), -count(*)
        FROM old_rows GROUP BY 1, 2, 3;
    ELSE
        INSERT INTO recipient_count_deltas (campaign_id, bucket, sent_via, changed_at, n)
        SELECT campaign_id, bucket, sent_via, date_trunc('second', now()), sum(delta) FROM (
            SELECT campaign_id, herald_count_bucket(state) AS bucket,
                   CASE WHEN state = 'sent' THEN sent_via END AS sent_via, 1 AS delta
            FROM new_rows
            UNION ALL
            SELECT campaign_id, herald_count_bucket(state),
                   CASE WHEN state = 'sent' THEN sent_via END, -1
            FROM old_rows
        ) d
        GROUP BY 1, 2, 3 HAVING sum(delta) <> 0;
    END IF;
    RETURN NULL;
END
$$;

-- Moves every committed delta into the counters, in one statement; returns how many deltas
-- it folded. Deltas committed meanwhile stay for the next fold: the DELETE sees only what
-- its snapshot does, and the views count what is left. Only the leading scheduler folds,
-- so the counters have one writer and shard 0 serves; the sort keeps a second folder (a
-- leader change mid-fold) from deadlocking with the first.
CREATE FUNCTION herald_fold_counts() RETURNS bigint LANGUAGE sql VOLATILE AS $$
    WITH moved AS (
        DELETE FROM recipient_count_deltas RETURNING campaign_id, bucket, sent_via, changed_at, n
    ), counters AS (
        INSERT INTO campaign_counters AS cc (campaign_id, state, shard, n)
        SELECT campaign_id, bucket, 0, sum(n) FROM moved
        GROUP BY 1, 2 HAVING sum(n) <> 0 ORDER BY 1, 2
        ON CONFLICT (campaign_id, state, shard) DO UPDATE SET n = cc.n + excluded.n
    ), seconds AS (
        INSERT INTO campaign_sends_per_second AS s (campaign_id, second, shard, sent)
        SELECT campaign_id, changed_at, 0, sum(n) FROM moved WHERE bucket = 'sent'
        GROUP BY 1, 2 HAVING sum(n) > 0 ORDER BY 1, 2
        ON CONFLICT (campaign_id, second, shard) DO UPDATE SET sent = s.sent + excluded.sent
    ), per_provider AS (
        INSERT INTO campaign_provider_sends AS s (campaign_id, provider_id, shard, sent)
        SELECT campaign_id, sent_via, 0, sum(n) FROM moved
        WHERE bucket = 'sent' AND sent_via IS NOT NULL
        GROUP BY 1, 2 HAVING sum(n) <> 0 ORDER BY 1, 2
        ON CONFLICT (campaign_id, provider_id, shard) DO UPDATE SET sent = s.sent + excluded.sent
    )
    SELECT count(*) FROM moved
$$;

-- What every reader of the counters reads: the folded counters and the deltas not folded yet.
CREATE VIEW campaign_bucket_counts AS
SELECT campaign_id, state, n FROM campaign_counters
UNION ALL
SELECT campaign_id, bucket, n FROM recipient_count_deltas;

CREATE VIEW campaign_send_seconds AS
SELECT campaign_id, second, sent FROM campaign_sends_per_second
UNION ALL
SELECT campaign_id, changed_at, n FROM recipient_count_deltas WHERE bucket = 'sent';

CREATE VIEW campaign_provider_sent AS
SELECT campaign_id, provider_id, sent FROM campaign_provider_sends
UNION ALL
SELECT campaign_id, sent_via, n FROM recipient_count_deltas
WHERE bucket = 'sent' AND sent_via IS NOT NULL;

CREATE OR REPLACE VIEW campaign_state_counts AS
SELECT g.campaign_id, g.total, g.pending, g.in_flight - s.sending AS queued, s.sending,
       g.unknown, g.sent, g.failed, g.cancelled, g.expired
FROM (
    SELECT campaign_id,
           sum(n)::int8 AS total,
           coalesce(sum(n) FILTER (WHERE state = 'pending'), 0)::int8 AS pending,
           coalesce(sum(n) FILTER (WHERE state = 'in_flight'), 0)::int8 AS in_flight,
           coalesce(sum(n) FILTER (WHERE state = 'unknown'), 0)::int8 AS unknown,
           coalesce(sum(n) FILTER (WHERE state = 'sent'), 0)::int8 AS sent,
           coalesce(sum(n) FILTER (WHERE state = 'failed'), 0)::int8 AS failed,
           coalesce(sum(n) FILTER (WHERE state = 'cancelled'), 0)::int8 AS cancelled,
           coalesce(sum(n) FILTER (WHERE state = 'expired'), 0)::int8 AS expired
    FROM campaign_bucket_counts GROUP BY campaign_id
) g
CROSS JOIN LATERAL (
    SELECT count(*)::int8 AS sending FROM recipients r
    WHERE r.campaign_id = g.campaign_id AND r.state = 'sending'
) s;
