-- An operator looking an address up across tenants (`GET /suppressions?address=` without a
-- tenant): without it, every tenant's list is read (82 ms at 500,000 entries on the
-- development machine, 0.15 ms with it). Built in the migration's transaction, which holds
-- inserts to the list meanwhile (seconds for millions of entries); a deployment with a
-- large list builds it `CONCURRENTLY` beforehand, under this name.
CREATE INDEX IF NOT EXISTS suppressions_address ON suppressions (address);
