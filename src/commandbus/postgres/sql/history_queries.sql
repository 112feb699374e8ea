-- Retention (commandbus history prune), loaded by commandbus.postgres.history.
-- Same conventions as queries.sql: named blocks, %(name)s parameters, nothing assembled
-- from input.


-- name: prune_finished
-- One batch: up to %(limit)s finished commands whose last change is older than the
-- cutoff, oldest first, deleted with their audit events and archived messages.
-- "Finished" is COMPLETED, FAILED or CANCELED: commands waiting, running or in the
-- troubleshooting queue are never candidates, nor is one whose queue message is still
-- there (a stale redelivery the claim has yet to drop: without its row it would be
-- archived as an orphan). Candidates are locked with SKIP LOCKED, so a row an operator
-- holds is left for the next run, and the status test is then re-checked on the locked
-- row (READ COMMITTED).
-- command_created_idx serves the scan: created_at <= updated_at, so every row finished
-- before the cutoff was also created before it; %(after)s (the created_at reached by
-- the previous batch) lets each batch start where the previous one stopped instead of
-- walking again over old rows that are not finished. Audit and archive rows are reached
-- through their command_id index with "= ANY(ARRAY(...))" (whatever the statistics),
-- then matched on the domain too: the key of a command is (command_id, domain).
WITH doomed AS MATERIALIZED (
    SELECT c.domain, c.command_id, c.created_at
    FROM commandbus.command c
    WHERE c.created_at < %(cutoff)s::timestamptz
      AND c.created_at >= %(after)s::timestamptz
      AND c.updated_at < %(cutoff)s::timestamptz
      AND c.status IN ('COMPLETED', 'FAILED', 'CANCELED')
      AND (%(domain)s::text IS NULL OR c.domain = %(domain)s::text)
      AND NOT EXISTS (
          SELECT 1 FROM commandbus.queue_message q WHERE q.msg_id = c.msg_id
      )
    ORDER BY c.created_at
    LIMIT %(limit)s
    FOR UPDATE OF c SKIP LOCKED
), commands AS (
    DELETE FROM commandbus.command c
    WHERE c.command_id = ANY (ARRAY(SELECT command_id FROM doomed))
      AND EXISTS (
          SELECT 1 FROM doomed d WHERE d.command_id = c.command_id AND d.domain = c.domain
      )
    RETURNING 1
), events AS (
    DELETE FROM commandbus.audit a
    WHERE a.command_id = ANY (ARRAY(SELECT command_id FROM doomed))
      AND EXISTS (
          SELECT 1 FROM doomed d WHERE d.command_id = a.command_id AND d.domain = a.domain
      )
    RETURNING 1
), archived AS (
    DELETE FROM commandbus.queue_archive qa
    WHERE qa.command_id = ANY (ARRAY(SELECT command_id FROM doomed))
      AND EXISTS (
          SELECT 1 FROM doomed d
          WHERE d.command_id = qa.command_id AND qa.queue_name = d.domain || '__commands'
      )
    RETURNING 1
)
SELECT (SELECT count(*) FROM commands) AS commands,
       (SELECT count(*) FROM events) AS audit_events,
       (SELECT count(*) FROM archived) AS archived_messages,
       (SELECT max(created_at) FROM doomed) AS reached;


-- name: maintain_audit_partitions
-- After a prune: the audit trail's weekly partitions (011_audit_partitions.sql) of the
-- coming weeks, and those before the cutoff that the prune emptied dropped.
SELECT commandbus.drop_empty_audit_partitions(%(cutoff)s::timestamptz) AS dropped,
       commandbus.ensure_audit_partitions(%(weeks_ahead)s::integer) AS created;
