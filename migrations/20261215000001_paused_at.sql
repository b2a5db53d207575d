-- When a campaign (or a transactional stream) was last paused: a stream its provider's
-- refusal paused ends, `expired`, the messages it has held for a day
-- (`recipients::sweep::expire_held_messages`); a day counted from the acceptance alone
-- would end a day-old retry at once in a stream paused a moment ago. NULL for pauses older
-- than this column (the acceptance counts alone then).
ALTER TABLE campaigns ADD COLUMN paused_at timestamptz;
