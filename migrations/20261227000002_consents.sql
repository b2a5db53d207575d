-- Each recipient's last word on its consent to a tenant's messages on a channel (an inbound
-- STOP or START the receiver took), and when the receiver took it. Words kept through an
-- outage by several receivers, or a statement that commits after a later one, reach the
-- database out of order: only a word newer than the one recorded here changes the
-- suppression list (`store::suppressions::record_consents`). Kept after a START takes the
-- list's entry off, so that an older STOP arriving later does not put it back.
CREATE TABLE consents (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    channel     text NOT NULL CHECK (channel IN ('sms', 'whatsapp', 'voice', 'chat')),
    address     text NOT NULL,
    said_at     timestamptz NOT NULL,
    opted_out   boolean NOT NULL,
    PRIMARY KEY (tenant_id, channel, address)
);

-- The scheduler's housekeeping forgets words a week old, by age.
CREATE INDEX consents_said ON consents (said_at);
