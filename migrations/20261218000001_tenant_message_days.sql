-- Each tenant's transactional messages accepted per day, the day in the tenant's zone when
-- they were accepted: the daily cap (`max_messages_per_day`) is judged from one row.
--
-- It was judged by counting the day's messages at every accept, under the tenant's lock: an
-- index range that reaches millions late in a busy tenant's day (and recent rows need their
-- heap visited), so each accept grew dearer through the day, its tenant's other accepts
-- waiting behind it, and the database's time shared with every other tenant spent on it.
-- Only today's and yesterday's rows are kept (accepts prune the older ones).
CREATE TABLE tenant_message_days (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    day       date NOT NULL,
    accepted  bigint NOT NULL,
    PRIMARY KEY (tenant_id, day)
);

INSERT INTO tenant_message_days (tenant_id, day, accepted)
SELECT m.tenant_id, (m.created_at AT TIME ZONE t.time_zone)::date, count(*)
FROM messages m JOIN tenants t ON t.id = m.tenant_id
WHERE m.created_at >= now() - interval '2 days'
GROUP BY 1, 2;
