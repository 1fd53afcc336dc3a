-- Healing actions (fallback, rollback, filter) and quarantine records, one row per event.
CREATE TABLE IF NOT EXISTS healing_actions
(
    event_id       String,
    task           LowCardinality(String),
    action         LowCardinality(String),
    version_id     LowCardinality(String),
    target_version Nullable(String),
    request_id     Nullable(String),
    reason         String,
    occurred_at    DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (task, version_id, occurred_at, event_id);

CREATE TABLE IF NOT EXISTS quarantines
(
    event_id    String,
    task        LowCardinality(String),
    version_id  LowCardinality(String),
    trigger     LowCardinality(String),
    root_cause  String,
    evidence    String,
    occurred_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (task, version_id, occurred_at, event_id);
