-- 016: the row update of a settlement with a pinned plan. The settle statement joined the
-- command rows it found by key to the list of settlements; estimating one matching row,
-- the planner joined them in a nested loop that read the whole list once per row (50 x 50
-- comparisons for a batch of 50), and it switched to a hash join only for larger batches.
-- The update runs here with nested loops and sequential scans off (as pick_messages pins
-- its walk): the rows are reached through the primary key and joined to the list by hash,
-- whatever the statistics say. It returns, for each settlement it applied, what the rest
-- of the settle statement needs (sql/queries.sql, settle).
CREATE FUNCTION commandbus.settle_command_rows(
    p_domains text[], p_command_ids uuid[], p_msg_ids bigint[], p_actions text[],
    p_statuses text[], p_attempts integer[], p_delays float8[], p_error_types text[],
    p_error_codes text[], p_error_messages text[], p_domain_set text[]
)
RETURNS TABLE (
    ord bigint, domain text, command_id uuid, msg_id bigint, action text, delay float8,
    status text, batch_id uuid
)
LANGUAGE sql
VOLATILE
ROWS 50
SET enable_nestloop = off
SET enable_seqscan = off
AS $$
    UPDATE commandbus.command c
    SET status = s.status,
        attempts = s.attempts,
        last_error_type = CASE WHEN s.error_type IS NULL THEN c.last_error_type
                               ELSE s.error_type END,
        last_error_code = CASE WHEN s.error_type IS NULL THEN c.last_error_code
                               ELSE s.error_code END,
        last_error_msg = CASE WHEN s.error_type IS NULL THEN c.last_error_msg
                              ELSE s.error_message END,
        updated_at = now()
    FROM unnest(
        p_domains, p_command_ids, p_msg_ids, p_actions, p_statuses, p_attempts, p_delays,
        p_error_types, p_error_codes, p_error_messages
    ) WITH ORDINALITY AS s(domain, command_id, msg_id, action, status, attempts, delay,
                           error_type, error_code, error_message, ord)
    WHERE c.command_id = ANY (p_command_ids)
      AND c.domain = ANY (p_domain_set)
      AND c.command_id = s.command_id AND c.domain = s.domain
      AND c.status = 'IN_PROGRESS' AND c.attempts = s.attempts
    RETURNING s.ord, s.domain, s.command_id, s.msg_id, s.action, s.delay, s.status,
              c.batch_id
$$;
