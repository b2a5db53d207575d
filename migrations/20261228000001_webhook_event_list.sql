-- A tenant's recent webhook events, newest first (`GET /tenants/{id}/webhook/events`):
-- what was posted, when, how many times, and why a post failed. Listed by when each event
-- happened and its public id (the row's own id counts every tenant's events: a cursor never
-- carries it), read backwards through this index; built in the migration's transaction,
-- which holds new events meanwhile (seconds for millions): a deployment with many builds it
-- `CONCURRENTLY` beforehand, under this name.
CREATE INDEX IF NOT EXISTS message_events_listed
    ON message_events (tenant_id, occurred_at, public_id);

-- Events from before public ids (`20261226000001`) not posted since have none: given one
-- now, so that every event listed can be named.
UPDATE message_events SET public_id = gen_random_uuid() WHERE public_id IS NULL;
