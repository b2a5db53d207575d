-- A tenant's status webhook: where Herald posts the changes of its transactional messages
-- (sent, failed, unknown, expired, cancelled, and every delivery status a receipt brings),
-- signed with a secret only the tenant and Herald know. Its services learn a message's fate
-- without polling `GET /messages/{id}`.
CREATE TABLE tenant_webhooks (
    tenant_id   uuid PRIMARY KEY REFERENCES tenants (id),
    url         text NOT NULL CHECK (length(url) <= 2000),
    -- The signing secret, sealed for the tenant's id as providers' credentials are for
    -- theirs (`{"secret": …}`; plain without HERALD_CREDENTIALS_KEY).
    secret      jsonb NOT NULL,
    -- The secret a new one replaced, also signed with until then, so that an endpoint can
    -- take the new one without refusing events meanwhile.
    previous_secret        jsonb,
    previous_secret_until  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Each change to post (an outbox): written in the transaction that changed the message, so
-- none is lost or made up, whichever process (worker, receiver, sweeper, admin) made it.
-- Workers take due ones (`next_at`), post them, and mark them `delivered_at`, or give up
-- once they are a day old (`abandoned_at`). Pruned with receipts, by their retention.
CREATE TABLE message_events (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id            uuid NOT NULL,
    message_id           uuid NOT NULL,
    -- The message as the change left it.
    state                text NOT NULL,
    delivery_status      text,
    last_error           text,
    delivery_error       text,
    provider_message_id  text,
    occurred_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Posts taken (the one in flight included): also the fencing token of the worker that
    -- took it last, so a late answer to an earlier post changes nothing.
    attempts             integer NOT NULL DEFAULT 0,
    next_at              timestamptz NOT NULL DEFAULT now(),
    last_failure         text,
    failed_at            timestamptz,
    delivered_at         timestamptz,
    abandoned_at         timestamptz
);

-- What workers take (a few of each tenant's, oldest due first), what a webhook's summary
-- counts and what its removal drops: the events still to post, by tenant.
CREATE INDEX message_events_waiting ON message_events (tenant_id, next_at)
    WHERE delivered_at IS NULL AND abandoned_at IS NULL;
-- The events given up, for the webhook's summary (few, one hopes).
CREATE INDEX message_events_abandoned ON message_events (tenant_id, abandoned_at)
    WHERE abandoned_at IS NOT NULL;
-- Pruning, by age.
CREATE INDEX message_events_occurred ON message_events (occurred_at);

-- Per row, but only a transactional message's final state or new delivery status reaches
-- the function: the trigger's WHEN is evaluated without calling it, so campaigns'
-- recipients cost one test each. The function looks the message and its tenant's webhook
-- up (two index probes); a tenant without a webhook gets no rows.
CREATE FUNCTION herald_message_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO message_events (tenant_id, message_id, state, delivery_status, last_error,
                                delivery_error, provider_message_id)
    SELECT m.tenant_id, m.id, NEW.state, NEW.delivery_status, NEW.last_error,
           NEW.delivery_error, NEW.provider_message_id
    FROM messages m
    JOIN tenant_webhooks w ON w.tenant_id = m.tenant_id
    WHERE m.recipient_id = NEW.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER recipients_message_events AFTER UPDATE ON recipients
    FOR EACH ROW
    WHEN (NEW.transactional
          AND ((NEW.state IS DISTINCT FROM OLD.state
                AND NEW.state IN ('sent', 'failed', 'unknown', 'expired', 'cancelled'))
               OR NEW.delivery_status IS DISTINCT FROM OLD.delivery_status))
    EXECUTE FUNCTION herald_message_event();
