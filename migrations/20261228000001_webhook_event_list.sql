-- no-transaction
-- A tenant's recent webhook events, newest first (`GET /tenants/{id}/webhook/events`):
-- what was posted, when, how many times, and why a post failed. Listed by when each event
-- happened and its public id (the row's own id counts every tenant's events: a cursor never
-- carries it), read backwards through this index. Built CONCURRENTLY, outside a
-- transaction: a build in the migration's transaction would hold every insert into the table
-- (the status trigger's, on each transactional message's final state or receipt) until it
-- ended. (Events from before public ids, `20261226000001`, not posted since have none, and
-- are not listed: their posts carried their row's number.)
CREATE INDEX CONCURRENTLY IF NOT EXISTS message_events_listed
    ON message_events (tenant_id, occurred_at, public_id);
