-- 004: a status for a process whose step timed out and that waits for an operator's
-- decision (retry the step, complete it with a result, or cancel the process). Unlike
-- WAITING_FOR_TSQ, the step's command is not in the troubleshooting queue.
ALTER TABLE commandbus.process DROP CONSTRAINT process_status_check;
ALTER TABLE commandbus.process ADD CONSTRAINT process_status_check CHECK (status IN (
    'PENDING', 'IN_PROGRESS', 'WAITING', 'WAITING_FOR_TSQ', 'WAITING_FOR_OPERATOR',
    'COMPENSATING', 'COMPLETED', 'COMPENSATED', 'FAILED', 'CANCELED'));
