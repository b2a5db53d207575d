-- A client's idempotency key for the campaign it created, held 24 hours (see the admin's
-- `idempotency` module): a create sent again with the same key answers the campaign the
-- first one made, rather than a second draft. `request_hash` tells the same request from
-- another one under the same key (refused).
ALTER TABLE campaigns
    ADD COLUMN idempotency_key text CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    ADD COLUMN request_hash bytea;

-- Few campaigns carry keys, and the table is small beside recipients: built in the
-- migration's transaction.
CREATE UNIQUE INDEX IF NOT EXISTS campaigns_idempotency ON campaigns (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
