-- When a receiver last refused a provider's webhook that the provider may have meant (a
-- 5xx: no room, the database away; a body refused whole), by the receiver's clock.
--
-- A recipient whose request's answer was lost, at a provider that cannot be asked about a
-- message (WhatsApp, a generic HTTP API), is sent again only once the provider's receipts
-- are heard of later messages (`sends_reported_until`), never of it. A webhook refused after
-- the request may have held its receipt: the provider sends it again later, and until then
-- the receipts of later messages say nothing of it. Such a recipient waits instead (and is
-- given up on, not sent again, if its receipt never comes).
ALTER TABLE providers ADD COLUMN receipts_refused_at timestamptz;
