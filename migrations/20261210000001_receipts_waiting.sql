-- Receipts still waiting for their message, by arrival.
--
-- The scheduler's sweep adopts parked receipts whose send was recorded since (the ones that
-- raced the outcome statement), and housekeeping marks those parked for an hour as
-- orphaned. Both read `receipts_parked` (every parked receipt, orphans kept for the whole
-- retention included) from end to end: the sweep's limit counts only receipts it adopts, so
-- each tick walked every orphan, however many a provider (or a tenant's own, with a secret
-- of its choosing) had posted for messages Herald never sent. This index holds only the
-- ones not yet orphaned, in arrival order: the sweep reads the last minutes of it, the
-- orphan pass its oldest end.
CREATE INDEX receipts_waiting ON receipts (received_at)
    WHERE recipient_id IS NULL AND orphaned_at IS NULL;
