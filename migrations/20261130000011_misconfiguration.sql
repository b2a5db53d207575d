-- A campaign Herald paused itself says why: its provider refused the account's credentials
-- or configuration (Twilio 20003, Meta 190, HTTP 401), which no recipient can fix. An
-- operator's pause leaves it empty; resume clears it.
ALTER TABLE campaigns ADD COLUMN pause_reason text;

-- Bumped whenever a provider's credentials are replaced. A lease reports the provider's
-- revision, and a worker whose cached copy is older reads it again, so rotated credentials
-- are used from the first request after the rotation (not up to a cache period later).
ALTER TABLE providers ADD COLUMN revision integer NOT NULL DEFAULT 0;
