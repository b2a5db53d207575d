-- Addresses a tenant's messages must not reach on a channel: the recipient opted out (a
-- provider refused a send for it, as Twilio does with 21610 once the number replied STOP),
-- or the tenant put it there (an opt-out it took elsewhere, a do-not-contact request).
-- Judged at the worker's lease (store/src/recipients/lease.rs), the one gate every send
-- passes: a campaign's recipient, a retry or a transactional message to such an address
-- ends `failed` unsent, whichever provider it would have gone to. An overflow vendor never
-- heard the STOP its primary did, and a generic provider hears none at all.
CREATE TABLE suppressions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    channel     text NOT NULL CHECK (channel IN ('sms', 'whatsapp', 'voice', 'chat')),
    -- As recipients store it (E.164 for a phone number), so the lease compares it as is.
    address     text NOT NULL,
    -- `provider`: recorded by a worker from a provider's refusal; `recipient`: the
    -- recipient's STOP, an inbound message the receiver took (its START removes the entries
    -- but the tenant's); `tenant`: added through the admin.
    source      text NOT NULL CHECK (source IN ('provider', 'recipient', 'tenant')),
    reason      text CHECK (length(reason) <= 500),
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- The lease's lookup, one per message.
    UNIQUE (tenant_id, channel, address)
);

-- A tenant's suppressions are listed by id (store/src/keyset.rs), one index range per page.
CREATE INDEX suppressions_by_tenant ON suppressions (tenant_id, id);
