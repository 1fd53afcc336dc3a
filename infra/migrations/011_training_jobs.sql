-- Fine-tune jobs of the learning loop (reviewbus train / reviewbus jobs): one row per state
-- change (queued, running, succeeded, failed); a job's current state is its latest row.
CREATE TABLE IF NOT EXISTS training_jobs
(
    event_id    String,
    job_id      String,
    task        LowCardinality(String),
    kind        LowCardinality(String),
    state       LowCardinality(String),
    data        String,
    base        String,
    out         String,
    repos       Array(String),
    version_id  Nullable(String),
    params      String,                            -- JSON object
    metrics     String,                            -- JSON object
    error       Nullable(String),
    actor       String,
    occurred_at DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (task, job_id, occurred_at, event_id);
