-- 015: an outbox row that its target cluster refuses is parked, with the error, instead
-- of being retried at the head of the outbox for ever (it would hold back every row
-- behind it). Parked rows are no longer taken by relays; they stay, counted apart in the
-- lag, until an operator clears parked_at (or deletes the row).
ALTER TABLE commandbus.outbox
    ADD COLUMN parked_at timestamptz,
    ADD COLUMN error     text;
