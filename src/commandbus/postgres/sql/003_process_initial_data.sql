-- 003: the start input of each process (what BaseProcessManager.start was given), kept so
-- that replay (commandbus process replay --check) can fold a process's history through the
-- current manager code. Written only when the row is inserted and never updated, so the
-- HOT updates of a process moving from step to step are unaffected. NULL for processes
-- started before this migration (they cannot be replayed).
ALTER TABLE commandbus.process ADD COLUMN initial_data jsonb;
