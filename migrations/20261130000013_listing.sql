-- Keyset pagination of the admin's lists (admin/src/api/page.rs): each list's filter and
-- order is one index range, so the thousandth page costs what the first does.

-- Campaigns, newest first: all of them (operator), or one tenant's.
DROP INDEX campaigns_tenant;
CREATE INDEX campaigns_tenant ON campaigns (tenant_id, created_at DESC, id DESC);
CREATE INDEX campaigns_newest ON campaigns (created_at DESC, id DESC);

-- A campaign's recipients are listed by address, along UNIQUE (campaign_id, address): an
-- index of its own would take a new entry at each of a send's updates.

-- A tenant's contacts by id.
CREATE INDEX contacts_tenant ON contacts (tenant_id, id);
