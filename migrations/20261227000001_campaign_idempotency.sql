-- Clients' idempotency keys for the campaigns they created, each held 24 hours (the admin's
-- `POST /campaigns`): a create sent again with the same key answers the campaign the first
-- one made, rather than a second draft. `request_hash` tells the same request from another
-- one under the same key (refused). A table of their own, not columns of `campaigns`:
-- releasing a key must not wait for a campaign row an upload or a start holds.
CREATE TABLE campaign_idempotency (
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    key           text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    campaign_id   uuid NOT NULL REFERENCES campaigns (id),
    request_hash  bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);

-- The leader's housekeeping releases keys past their day by age.
CREATE INDEX campaign_idempotency_age ON campaign_idempotency (created_at);
