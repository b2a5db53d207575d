-- One partial index over the recipients being sent instead of two.
--
-- Every lease (`store::recipients::lease`) put its row into two indexes of `state =
-- 'sending'`: `recipients_lease (lease_until)`, for the sweeper's recovery of leases run out,
-- and `recipients_sending (campaign_id)`, for progress's count of a campaign's sends in
-- flight (`campaign_state_counts`). The second is all duplicates of a few campaign ids, the
-- dearest kind of B-tree insert: measured on a copy of a bench's table (200,000 recipients of
-- one campaign, `pgbench` of the lease statement for 100 rows), it was 13% of the lease
-- statement. One index keyed `(campaign_id, lease_until)` serves both: the count reads its
-- prefix, and the recovery reads it whole (the leases in flight, which the old index's range
-- `lease_until < now()` passed over, and the entries of finished ones not yet vacuumed) and
-- sorts the few it finds.
--
-- In one transaction, like every migration here: the build reads the whole table while the
-- DROPs hold it, so leases and outcomes wait for it (a partial index of a few rows: about a
-- third of a second per million recipients). Herald is deployed nowhere yet; a deployed one
-- would build the index CONCURRENTLY, in a migration file of its own.
DROP INDEX recipients_sending;
DROP INDEX recipients_lease;
CREATE INDEX recipients_lease ON recipients (campaign_id, lease_until) WHERE state = 'sending';
