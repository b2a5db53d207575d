-- Where a tenant's numbers written without a country code are from (ISO 3166-1 alpha-2,
-- `FR`): uploads read `06 12 34 56 78` as +33612345678. NULL: every number needs its
-- country code.
ALTER TABLE tenants ADD COLUMN default_region text CHECK (default_region ~ '^[A-Z]{2}$');
