-- Cost-aware overflow. A campaign may name an overflow provider: its recipients go to the
-- primary provider up to what the primary's lane drains (its rate limit, in practice), and
-- only what the primary cannot take this tick (or everything, while the primary's breaker
-- is open) goes to the overflow. Each provider may carry a cost per message; each sent
-- recipient records the provider that sent it, and sends are counted per provider.
ALTER TABLE providers ADD COLUMN cost_per_message numeric(12, 6) CHECK (cost_per_message >= 0);
ALTER TABLE campaigns
    ADD COLUMN overflow_provider_id uuid REFERENCES providers (id),
    ADD CONSTRAINT campaigns_overflow_differs CHECK (overflow_provider_id <> provider_id);
-- No foreign key: it would add a lookup to every outcome written, and providers are never
-- deleted while they have campaigns.
ALTER TABLE recipients ADD COLUMN sent_via uuid;

CREATE TABLE campaign_provider_sends (
    campaign_id  uuid NOT NULL REFERENCES campaigns (id),
    provider_id  uuid NOT NULL,
    shard        smallint NOT NULL,
    sent         bigint NOT NULL,
    PRIMARY KEY (campaign_id, provider_id, shard)
);

CREATE OR REPLACE FUNCTION herald_count_recipients() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    my_shard smallint := (pg_backend_pid() % 8)::smallint;
BEGIN
    -- Sorted, so that two statements always lock counter rows in the same order (no
    -- deadlock between them).
    IF TG_OP = 'INSERT' THEN
        INSERT INTO campaign_counters AS cc (campaign_id, state, shard, n)
        SELECT campaign_id, herald_count_bucket(state), my_shard, count(*) FROM new_rows
        GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (campaign_id, state, shard) DO UPDATE SET n = cc.n + excluded.n;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO campaign_counters AS cc (campaign_id, state, shard, n)
        SELECT campaign_id, herald_count_bucket(state), my_shard, -count(*) FROM old_rows
        GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (campaign_id, state, shard) DO UPDATE SET n = cc.n + excluded.n;
    ELSE
        INSERT INTO campaign_counters AS cc (campaign_id, state, shard, n)
        SELECT campaign_id, bucket, my_shard, sum(delta) FROM (
            SELECT campaign_id, herald_count_bucket(state) AS bucket, 1 AS delta FROM new_rows
            UNION ALL
            SELECT campaign_id, herald_count_bucket(state), -1 FROM old_rows
        ) d
        GROUP BY 1, 2 HAVING sum(delta) <> 0 ORDER BY 1, 2
        ON CONFLICT (campaign_id, state, shard) DO UPDATE SET n = cc.n + excluded.n;

        INSERT INTO campaign_sends_per_second AS s (campaign_id, second, shard, sent)
        SELECT campaign_id, date_trunc('second', now()), my_shard, sum(delta) FROM (
            SELECT campaign_id, 1 AS delta FROM new_rows WHERE state = 'sent'
            UNION ALL
            SELECT campaign_id, -1 AS delta FROM old_rows WHERE state = 'sent'
        ) d
        GROUP BY campaign_id HAVING sum(delta) > 0 ORDER BY campaign_id
        ON CONFLICT (campaign_id, second, shard) DO UPDATE SET sent = s.sent + excluded.sent;

        INSERT INTO campaign_provider_sends AS s (campaign_id, provider_id, shard, sent)
        SELECT campaign_id, sent_via, my_shard, sum(delta) FROM (
            SELECT campaign_id, sent_via, 1 AS delta FROM new_rows WHERE state = 'sent' AND sent_via IS NOT NULL
            UNION ALL
            SELECT campaign_id, sent_via, -1 AS delta FROM old_rows WHERE state = 'sent' AND sent_via IS NOT NULL
        ) d
        GROUP BY 1, 2 HAVING sum(delta) <> 0 ORDER BY 1, 2
        ON CONFLICT (campaign_id, provider_id, shard) DO UPDATE SET sent = s.sent + excluded.sent;
    END IF;
    RETURN NULL;
END
$$;

-- Whether a provider's circuit breaker is open now (one definition for the scheduler).
CREATE FUNCTION herald_breaker_open(provider uuid) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT EXISTS (SELECT 1 FROM provider_pacing p WHERE p.provider_id = provider AND p.open_until > now())
$$;
