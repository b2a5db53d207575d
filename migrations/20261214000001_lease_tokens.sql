-- Which delivery holds a recipient's lease: a token the worker draws for each message it
-- leases, written by the lease and cleared by the outcome. A lease statement whose commit
-- the worker never heard of (its connection broke after the commit, or a statement given up
-- at its deadline ran late) is found by its retry as this worker's own, and the request is
-- made; before, the retry found the recipient `sending`, the message was acked unsent, and
-- the sweeper judged an attempt never made like a lost answer (with no attempt left, or at
-- a provider whose lost answers fail, the recipient failed unsent). An outcome written
-- twice the same way is applied once (a throttle counted once).
ALTER TABLE recipients ADD COLUMN lease_token uuid;
