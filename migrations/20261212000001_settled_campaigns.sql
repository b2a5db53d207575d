-- A cancelled campaign keeps its status for ever, and the tick's sweep for the waiting
-- recipients of ended campaigns (`end_waiting_recipients`) looked at every campaign ever
-- cancelled, every tick: two index probes each and a scan of all campaigns (25.6 ms a tick
-- with 10,000 cancelled, measured; growing with each one). Once none of a cancelled
-- campaign's recipients is unfinished (its queued, in-flight and unknown ones ended too),
-- housekeeping settles it, and the sweep looks only at campaigns not settled, through an
-- index of them. Nothing brings a settled campaign's recipients back to waiting: a receipt
-- may turn a final state into another final state, never into an unfinished one.
ALTER TABLE campaigns ADD COLUMN settled_at timestamptz;

CREATE INDEX campaigns_unsettled ON campaigns (id)
    WHERE status IN ('scheduled', 'running', 'paused') OR (status = 'cancelled' AND settled_at IS NULL);
