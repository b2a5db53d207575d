-- A test event (`webhook.test`, posted when the tenant asks: `POST …/webhook/test`) goes
-- through the same outbox, posts, retries and signatures as status events, so that a tenant
-- sees its endpoint take one before any message of its changes. It names no message.
-- Metadata only (a constant default, a NOT NULL dropped): no row is read or rewritten. The
-- check is NOT VALID, so adding it reads no row either; new and changed rows keep to it.
ALTER TABLE message_events
    ADD COLUMN kind text NOT NULL DEFAULT 'message.status',
    ALTER COLUMN message_id DROP NOT NULL,
    ADD CONSTRAINT message_events_kind
        CHECK (kind = 'webhook.test' OR (kind = 'message.status' AND message_id IS NOT NULL))
        NOT VALID;

-- When the tenant last asked for a test event: one each `TEST_EVERY` (the admin's), so that
-- asking cannot flood an endpoint, a third party's among them, nor the outbox.
ALTER TABLE tenant_webhooks ADD COLUMN tested_at timestamptz;
