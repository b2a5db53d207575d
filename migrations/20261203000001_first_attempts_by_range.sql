-- A campaign's first attempts are claimed by id range, not row by row.
--
-- The claim used to write every claimed recipient (`pending → queued`, a new row version
-- and an entry in each of three indexes, about 0.03 ms a row here): with 10,000 running
-- campaigns, 8,000 such writes were most of a tick. A campaign's audience is fixed once it
-- runs (recipients are added to draft or scheduled campaigns only), so its first attempts
-- are handed out in id order and a cursor says how far: a first attempt (`pending`,
-- `attempts = 0`) at or below `claimed_through` has been published and waits for its lease,
-- which takes it `pending → sending` the way it takes a `queued` one. One row a campaign is
-- written per claim instead of one a recipient.
--
-- The lease of such a recipient (`pending → sending`) now changes its counter bucket
-- (`pending` → `in_flight`, herald_count_bucket), which the claim's row write did before: a
-- lease statement appends its deltas to the ledger.
--
-- Two messages for the same first attempt can exist (a cursor rewound while the first was
-- still in the queue); the lease takes a row only while it is `pending` with no attempt
-- made, under a lock, so only one of them is ever sent.
--
-- Transactional messages keep the row claim: their stream gains rows while it runs, and a
-- message committed after a later one was claimed would sit below the cursor.
ALTER TABLE campaigns ADD COLUMN claimed_through bigint NOT NULL DEFAULT 0;

-- Each range claim, for the sweeper: a claim older than HERALD_SCHEDULER_REQUEUE_AFTER_MS
-- whose first attempts are still waiting may have lost its message (the scheduler died
-- between claim and publish, or the broker lost it), and its campaign's cursor goes back
-- to the lowest of them. Rows live as long as that window (a few per campaign and tick);
-- no index: the sweeper reads them all, and the claim only appends.
CREATE TABLE first_claims (
    campaign_id  uuid NOT NULL,
    through      bigint NOT NULL,
    claimed_at   timestamptz NOT NULL DEFAULT now()
);
