-- A provider's credentials before their last replacement, sealed as `credentials` are, and
-- until when the receiver still takes receipts signed with them. A provider's own rotation
-- flow signs with the old secret for a while after Herald has the new one (Twilio signs
-- with the primary auth token until the secondary is promoted; Meta posts notifications
-- already signed), and a refused callback is not sent again: without this, the receipts of
-- that while are lost.
ALTER TABLE providers
    ADD COLUMN previous_credentials jsonb,
    ADD COLUMN previous_credentials_until timestamptz,
    ADD CONSTRAINT providers_previous_credentials_whole
        CHECK ((previous_credentials IS NULL) = (previous_credentials_until IS NULL));
