-- 014: process_audit keeps no foreign key to process. Every writer of an audit entry is
-- the process engine, in the transaction that holds the process row locked (or inserted
-- it), so the entry's process exists by construction; the key's check, a
-- "SELECT ... FOR KEY SHARE" of that locked row for every entry written, was 8 % of the
-- server time of an event-driven process (measured with pg_stat_statements: 89 of
-- 1,172 us per three-step process).
ALTER TABLE commandbus.process_audit
    DROP CONSTRAINT process_audit_domain_process_id_fkey;
