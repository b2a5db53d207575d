-- An endpoint that answers `410 Gone` has gone for good (the REST Hooks convention): its
-- webhook is disabled (`disabled_at`, with the answer as `disabled_reason`), no post goes to
-- it, and no event is written for it, until the tenant sets it again (`PUT`, the same URL
-- too). The events waiting then stay waiting (given up a day after they happened, as any),
-- so a webhook set again within the day gets them. Metadata only: no row is rewritten.
ALTER TABLE tenant_webhooks
    ADD COLUMN disabled_at     timestamptz,
    ADD COLUMN disabled_reason text;

-- As before (`20261224000001_status_webhooks`), but not for a disabled webhook.
CREATE OR REPLACE FUNCTION herald_message_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO message_events (tenant_id, message_id, state, delivery_status, last_error,
                                delivery_error, provider_message_id)
    SELECT m.tenant_id, m.id, NEW.state, NEW.delivery_status, NEW.last_error,
           NEW.delivery_error, NEW.provider_message_id
    FROM messages m
    JOIN tenant_webhooks w ON w.tenant_id = m.tenant_id AND w.disabled_at IS NULL
    WHERE m.recipient_id = NEW.id;
    RETURN NULL;
END
$$;
