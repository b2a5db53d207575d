-- A campaign's audience names each address once, kept in a table of its own.
--
-- The unique index `recipients_campaign_address (campaign_id, address)` enforced that on
-- the recipients table, where a send's lease and outcome updates change `state`, so neither
-- is HOT, and each put a new entry into the primary key, the partial index its new state
-- matches, and this index: a (uuid, text) B-tree insert, twice a recipient, for a rule
-- that is only ever checked when recipients are added. Dropped after seeding (2026-12-11 in
-- BENCHMARKS.md, 100,000 recipients at 0 ms, three alternating pairs), PostgreSQL spent
-- 10–22% less a message and Herald sent 7–14% more.
--
-- `campaign_addresses` is written once a recipient, when it is added
-- (`store::recipients::audience`), and never updated; it also lists a campaign's
-- recipients by address for the admin. Transactional messages are not in it (a stream
-- sends to one address many times). Herald never deletes recipients, so a row here always
-- names one (a recipient deleted by hand would leave its address taken in its campaign);
-- no foreign key: both are written by one statement, and a key would add a lookup to every
-- recipient added.
--
-- The admin before this migration adds recipients with `ON CONFLICT (campaign_id,
-- address)`, which needs the dropped index: its uploads and segment starts fail (each in
-- one transaction, nothing half-written) until the new admin runs (docs/operations.md,
-- Upgrades).
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
