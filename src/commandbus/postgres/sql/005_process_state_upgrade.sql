-- 005: an audit entry of kind STATE_UPGRADE records that a process's stored state was
-- upgraded to a newer state_version (commandbus.process.versions) when it was next written.
ALTER TABLE commandbus.process_audit DROP CONSTRAINT process_audit_kind_check;
ALTER TABLE commandbus.process_audit ADD CONSTRAINT process_audit_kind_check
    CHECK (kind IN ('STEP', 'COMPENSATION', 'STATE_UPGRADE'));
