-- A test event (`webhook.test`, posted when the tenant asks: `POST …/webhook/test`) goes
-- through the same outbox, posts, retries and signatures as status events, so that a tenant
-- sees its endpoint take one before any message of its changes. It names no message. (No
-- CHECK on `kind`: adding one would read the whole table under the migration's lock; the
-- store writes only these two.)
ALTER TABLE message_events
    ADD COLUMN kind text NOT NULL DEFAULT 'message.status',
    ALTER COLUMN message_id DROP NOT NULL;
