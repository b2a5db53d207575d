-- A tenant's recent webhook events, newest first (`GET /tenants/{id}/webhook/events`):
-- what was posted, when, how many times, and why a post failed. Listed by when each event
-- happened and its public id (the row's own id counts every tenant's events: a cursor never
-- carries it), read backwards through this index. Built in the migration's transaction (a
-- `CONCURRENTLY` build there would deadlock with a second migrator waiting for the
-- migrations' lock), which holds every insert into the table meanwhile: the status
-- trigger's, on each transactional message's final state or receipt. Seconds for millions
-- of events; a deployment with many builds it `CONCURRENTLY` beforehand, under this name.
-- (Events from before public ids, `20261226000001`, not posted since have none, and are
-- not listed: their posts carried their row's number.)
CREATE INDEX IF NOT EXISTS message_events_listed
    ON message_events (tenant_id, occurred_at, public_id);
