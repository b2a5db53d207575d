-- What a key may do. `full`: everything its holder may (an operator key always is). `send`:
-- only the transactional messages API (send, read and cancel its tenant's messages), for the
-- services that send: a leaked service key then cannot read the tenant's contacts, change
-- its campaigns or providers, or rotate its other keys.
ALTER TABLE api_keys
    ADD COLUMN access text NOT NULL DEFAULT 'full' CHECK (access IN ('full', 'send')),
    ADD CONSTRAINT api_keys_operator_keys_are_full CHECK (tenant_id IS NOT NULL OR access = 'full');
