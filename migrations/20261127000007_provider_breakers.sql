-- Circuit breakers, fleet-wide: a worker whose breaker for a provider opens records until
-- when; the scheduler releases none of that provider's recipients before then, and the
-- other workers hold back too.
ALTER TABLE provider_pacing ADD COLUMN open_until timestamptz NOT NULL DEFAULT '-infinity';
