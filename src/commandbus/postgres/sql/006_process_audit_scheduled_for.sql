-- 006: a step's command may be sent later ("remind in 3 days"): scheduled_for is when it
-- becomes visible to workers (NULL: at once). Written with the entry, never updated.
ALTER TABLE commandbus.process_audit ADD COLUMN scheduled_for timestamptz;
