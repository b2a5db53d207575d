-- A campaign's audience names each address once, kept in a table of its own.
--
-- The unique index `recipients_campaign_address (campaign_id, address)` enforced that on
-- the recipients table, where each of a send's two updates (the lease and the outcome)
-- changes `state`, so neither is HOT and each puts a new entry into every index of the
-- table, this one included: a (uuid, text) B-tree insert, twice a recipient, for a rule
-- that is only ever checked when recipients are added. Dropped after seeding (2026-12-11 in
-- BENCHMARKS.md, 100,000 recipients at 0 ms, three alternating pairs), PostgreSQL spent
-- 12–22% less a message and Herald sent 7–14% more.
--
-- `campaign_addresses` is written once a recipient, when it is added
-- (`store::recipients::audience`), and never updated; it also lists a campaign's
-- recipients by address for the admin. Transactional messages are not in it (a stream
-- sends to one address many times). Recipients are never deleted, so a row here always
-- names a recipient; no foreign key: both are written by one statement, and a key would
-- add a lookup to every recipient added.
--
-- In one transaction, like every migration here, with the recipients table locked from the
-- start (its DROP INDEX takes ACCESS EXCLUSIVE anyway, and a weaker lock upgraded later
-- could deadlock): the copy reads the whole table meanwhile (a few seconds per million).
-- Herald is deployed nowhere yet.
CREATE TABLE campaign_addresses (
    campaign_id  uuid NOT NULL,
    address      text NOT NULL,
    recipient_id bigint NOT NULL,
    PRIMARY KEY (campaign_id, address)
);

LOCK TABLE recipients IN ACCESS EXCLUSIVE MODE;

INSERT INTO campaign_addresses (campaign_id, address, recipient_id)
SELECT campaign_id, address, id FROM recipients WHERE NOT transactional;

DROP INDEX recipients_campaign_address;
