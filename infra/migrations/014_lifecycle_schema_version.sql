-- The schema version of each lifecycle event, so that a registry restored from ClickHouse
-- (after a broker restart, or read by the CLI) folds every event by the rule it was decided
-- on, as the topic does (agents/registry.py). Rows stored before this column read back as 2,
-- the version written since the per-scope rule; older version-1 rows cannot be told apart.
ALTER TABLE lifecycle ADD COLUMN IF NOT EXISTS schema_version UInt16 DEFAULT 2 AFTER spec;
