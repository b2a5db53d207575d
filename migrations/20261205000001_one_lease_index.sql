-- One partial index over the recipients being sent instead of two.
--
-- Every lease (`store::recipients::lease`) put its row into two indexes of `state =
-- 'sending'`: `recipients_lease (lease_until)`, for the sweeper's recovery of leases run out,
-- and `recipients_sending (campaign_id)`, for progress's count of a campaign's sends in
-- flight (`campaign_state_counts`). The second is all duplicates of a few campaign ids, the
-- dearest kind of B-tree insert: measured on a copy of a bench's table (100,000 recipients of
-- one campaign, `pgbench` of the lease statement for 100 rows), it was 13% of the lease
-- statement. One index keyed `(campaign_id, lease_until)` serves both: the count reads its
-- prefix, and the recovery reads it whole, which holds only the leases in flight and the
-- entries of finished ones not yet vacuumed (as the old index's range did), then sorts the
-- few it finds.
DROP INDEX recipients_sending;
DROP INDEX recipients_lease;
CREATE INDEX recipients_lease ON recipients (campaign_id, lease_until) WHERE state = 'sending';
