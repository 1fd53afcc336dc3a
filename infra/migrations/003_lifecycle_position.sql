-- Issue 3 (version lifecycle): the registry position a lifecycle decision was taken on.
-- The fold skips an event whose position is stale, so the restored history (a broker restart
-- rebuilds the registry from this table) must keep it to fold exactly as the topic did.
-- Decisions keep their numbers in `evidence` (JSON): window, samples, estimates with
-- intervals, thresholds, per-gate outcomes, the SQL and the gate config hash.
ALTER TABLE lifecycle ADD COLUMN IF NOT EXISTS position Nullable(UInt64) AFTER spec;
