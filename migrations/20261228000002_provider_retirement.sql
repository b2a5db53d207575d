-- A provider taken out of use (`DELETE /providers/{id}`): no new campaign, message or
-- default names it, and lists leave it out; it is kept, with its credentials, for what it
-- sent (receipts still come in for days, lost answers are still looked up, its campaigns'
-- progress still names it). Metadata only: no row is rewritten.
ALTER TABLE providers ADD COLUMN retired_at timestamptz;
