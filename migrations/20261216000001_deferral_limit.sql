-- Since when a recipient has been put off without an attempt spent (a provider answering 503
-- or 429, a breaker open, a lookup that cannot be made): set by the first such outcome,
-- cleared by any that judged the recipient. A recipient put off for longer than the worker's
-- `HERALD_WORKER_MAX_DEFERRAL_S` ends `failed` at its next deferral
-- (`recipients::record::record`); before, a provider that never took it again cycled it
-- `pending → queued → sending → pending` for ever and its campaign never completed.
ALTER TABLE recipients ADD COLUMN deferred_since timestamptz;
-- When a paused campaign (or transactional stream) was last resumed: time spent paused is
-- not deferral, so a recipient put off before a pause counts from the resume.
ALTER TABLE campaigns ADD COLUMN resumed_at timestamptz;
