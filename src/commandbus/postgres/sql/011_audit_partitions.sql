-- 011: the audit trail partitioned by week, so that history does not slow the hot path.
--
-- Every command writes audit rows as it is sent, claimed and settled, and they are found
-- again by command: through audit_command_idx (command_id, id). Command ids are random,
-- so each new row goes to a random page of that index; once the index of a long history
-- outgrows the buffer cache, nearly every insert reads a page and, after a checkpoint,
-- writes it whole to the WAL (measured with 3,000,000 audit rows: send_batch at 0.69x
-- the speed of an empty database, and at 1.0x without the index). Partitioned by the
-- week of ts, new rows only go to the partition of this week, whose index stays the
-- size of a week of history, whatever the history kept.
--
-- Partitions are named audit_YYYYMMDD after the Monday (UTC) their week starts on;
-- commandbus.ensure_audit_partitions creates those of the coming weeks (this migration
-- creates 8 weeks ahead; `commandbus history prune` tops them up), audit_default takes
-- rows no partition covers (the weeks nobody created in time), and audit_initial is the
-- table as it was before this migration, attached as it is (its rows are not moved).
-- Reading a trail probes the index of every partition: a few more index probes on an
-- operator's read, none on the hot path. Retention deletes old rows of finished
-- commands (`commandbus history prune`), and commandbus.drop_empty_audit_partitions
-- then drops the weeks that became empty.

ALTER TABLE commandbus.audit RENAME TO audit_initial;
ALTER INDEX commandbus.audit_command_idx RENAME TO audit_initial_command_idx;

CREATE TABLE commandbus.audit (
    id         bigint      GENERATED ALWAYS AS IDENTITY,
    domain     text        NOT NULL,
    command_id uuid        NOT NULL,
    event_type text        NOT NULL,
    ts         timestamptz NOT NULL DEFAULT clock_timestamp(),
    details    jsonb
) PARTITION BY RANGE (ts);

-- Partitions of the weeks from this one to p_weeks_ahead weeks ahead that do not exist
-- yet; a week that audit_default already has rows of is left to it. Returns how many
-- were created. Names and bounds come from the clock, never from input.
CREATE FUNCTION commandbus.ensure_audit_partitions(p_weeks_ahead integer)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    this_week timestamptz := date_trunc('week', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    week_start timestamptz;
    partition_name text;
    created integer := 0;
BEGIN
    FOR week IN 0..p_weeks_ahead LOOP
        week_start := this_week + week * interval '1 week';
        partition_name := 'audit_' || to_char(week_start AT TIME ZONE 'UTC', 'YYYYMMDD');
        CONTINUE WHEN to_regclass('commandbus.' || quote_ident(partition_name)) IS NOT NULL;
        BEGIN
            EXECUTE format(
                'CREATE TABLE commandbus.%I PARTITION OF commandbus.audit'
                ' FOR VALUES FROM (%L) TO (%L)',
                partition_name, week_start, week_start + interval '1 week');
            created := created + 1;
        EXCEPTION
            -- overlaps another partition, or audit_default holds rows of that week
            WHEN invalid_object_definition OR check_violation THEN NULL;
        END;
    END LOOP;
    RETURN created;
END
$$;

-- Drop the weekly partitions that end before p_before and hold no row any more (after
-- retention deleted them). Returns how many were dropped.
CREATE FUNCTION commandbus.drop_empty_audit_partitions(p_before timestamptz)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    partition_name text;
    is_empty boolean;
    dropped integer := 0;
BEGIN
    FOR partition_name IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'commandbus.audit'::regclass
          AND c.relname ~ '^audit_[0-9]{8}$'
        ORDER BY c.relname
    LOOP
        CONTINUE WHEN (to_date(substr(partition_name, 7), 'YYYYMMDD')::timestamp
                       AT TIME ZONE 'UTC') + interval '1 week' > p_before;
        -- Locked first: a row written meanwhile (a back-dated one) is not dropped with it.
        EXECUTE format('LOCK TABLE commandbus.%I IN SHARE ROW EXCLUSIVE MODE', partition_name);
        EXECUTE format('SELECT NOT EXISTS (SELECT 1 FROM commandbus.%I)', partition_name)
            INTO is_empty;
        IF is_empty THEN
            EXECUTE format('DROP TABLE commandbus.%I', partition_name);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    RETURN dropped;
END
$$;

DO $$
DECLARE
    -- Everything committed so far is older than this (the rename above waited for the
    -- writers of the old table): the old table takes what came before it.
    boundary timestamptz := clock_timestamp();
    this_week timestamptz := date_trunc('week', boundary AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    next_id bigint;
BEGIN
    -- The ids go on from where the old table's identity was.
    EXECUTE format('SELECT nextval(%L)', pg_get_serial_sequence('commandbus.audit_initial', 'id'))
        INTO next_id;
    PERFORM setval(pg_get_serial_sequence('commandbus.audit', 'id'), next_id, false);
    ALTER TABLE commandbus.audit_initial ALTER COLUMN id DROP IDENTITY;
    EXECUTE format(
        'ALTER TABLE commandbus.audit ATTACH PARTITION commandbus.audit_initial'
        ' FOR VALUES FROM (MINVALUE) TO (%L)', boundary);
    -- The rest of this week, then whole weeks.
    EXECUTE format(
        'CREATE TABLE commandbus.%I PARTITION OF commandbus.audit FOR VALUES FROM (%L) TO (%L)',
        'audit_' || to_char(this_week AT TIME ZONE 'UTC', 'YYYYMMDD'), boundary,
        this_week + interval '1 week');
END
$$;

CREATE TABLE commandbus.audit_default PARTITION OF commandbus.audit DEFAULT;
SELECT commandbus.ensure_audit_partitions(8);

-- The same single index as before, on every partition (created on each new one).
CREATE INDEX audit_command_idx ON commandbus.audit (command_id, id);
