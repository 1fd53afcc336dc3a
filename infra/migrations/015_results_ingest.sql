-- InferenceResults are stored through ClickHouse itself (docs/concepts/batching.md, "The sink
-- hands results to ClickHouse as JSON").
--
-- The store inserts each result's JSON (as pydantic wrote it after validating the event: one
-- canonical form, whatever client produced the record) into `results_ingest`, a Null table that
-- keeps nothing; the two materialized views below turn every inserted block into the rows of
-- `interactions` and `findings`. The mapping is infra/rows.py's `interaction_row` and
-- `finding_rows`, in SQL; tests/test_store_contract.py checks that both give the same rows.
-- Python no longer builds these rows, and ClickHouse parses the JSON without holding
-- Python's lock.
--
-- Nested objects: `change_type` and `risk` are read as their JSON text
-- (input_format_json_read_objects_as_strings), so that an absent one (null) stays NULL;
-- `findings` as named tuples; integers as Int128, so that negative values and values above
-- 2^32 are clamped here as `_u32` clamps them. A result with an integer beyond Int64 or a float
-- that is not finite never comes here (infra/event_rows.py `ingestible`): ClickHouse would wrap the
-- one and read the other (pydantic writes null) as 0; Python's rows store it as before.
--
-- Any later change to the columns of interactions or findings changes results_ingest and these
-- views with it (and interaction_row / finding_rows: the contract test compares them). A
-- migration that rebuilds either table (as 013 did, CREATE OR REPLACE) drops these views first
-- and creates them again after: on a ClickHouse server a view may follow the old table.

CREATE TABLE IF NOT EXISTS results_ingest
(
    event_id          String,
    request_id        String,
    task              String,
    version_id        String,
    role              String,
    run_id            Nullable(String),
    status            String,
    attempt           Int128,
    latency_ms        Float64,
    label             Nullable(String),
    fallback_from     Nullable(String),
    change_type       Nullable(String),
    risk              Nullable(String),
    findings          Array(Tuple(fingerprint String, dimension String, severity String,
                                  confidence Float64, path String, line Int128,
                                  end_line Nullable(Int128), rule_id String, message String,
                                  source String)),
    suggested_message Nullable(String),
    usage             Tuple(prompt_tokens Int128, completion_tokens Int128, cost_usd Float64,
                            model Nullable(String), prompt_hash Nullable(String)),
    error             Nullable(String),
    repo              String,
    sha               String,
    pull_request      Nullable(UInt64),
    occurred_at       DateTime64(6, 'UTC'),
    accepted_at       Nullable(DateTime64(6, 'UTC'))
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS results_ingest_interactions TO interactions AS
SELECT
    event_id, request_id, task, version_id, role,
    ifNull(run_id, '') AS run_id,
    status,
    toUInt32(least(greatest(attempt, 0), 4294967295)) AS attempt,
    latency_ms, label,
    if(change_type IS NULL, NULL, JSONExtractString(assumeNotNull(change_type), 'label')) AS predicted_label,
    if(change_type IS NULL, NULL, JSONExtractFloat(assumeNotNull(change_type), 'confidence')) AS label_confidence,
    if(risk IS NULL, NULL, JSONExtractFloat(assumeNotNull(risk), 'score')) AS risk_score,
    if(risk IS NULL, NULL, JSONExtractString(assumeNotNull(risk), 'level')) AS risk_level,
    toUInt32(length(findings)) AS findings_total,
    toUInt32(arrayCount(f -> f.severity = 'critical', findings)) AS findings_critical,
    toUInt32(arrayCount(f -> f.severity = 'high', findings)) AS findings_high,
    toUInt32(arrayCount(f -> f.severity = 'medium', findings)) AS findings_medium,
    toUInt32(arrayCount(f -> f.severity = 'low', findings)) AS findings_low,
    toUInt32(arrayCount(f -> f.severity = 'info', findings)) AS findings_info,
    toUInt32(least(greatest(usage.prompt_tokens, 0), 4294967295)) AS prompt_tokens,
    toUInt32(least(greatest(usage.completion_tokens, 0), 4294967295)) AS completion_tokens,
    usage.cost_usd AS cost_usd,
    ifNull(usage.model, '') AS model,
    ifNull(usage.prompt_hash, '') AS prompt_hash,
    ifNull(suggested_message, '') AS suggested_message,
    error, fallback_from, repo, sha, pull_request,
    occurred_at,
    ifNull(accepted_at, occurred_at) AS accepted_at
FROM results_ingest;

CREATE MATERIALIZED VIEW IF NOT EXISTS results_ingest_findings TO findings AS
SELECT
    event_id, request_id, task, version_id, role,
    ifNull(run_id, '') AS run_id,
    f.fingerprint AS fingerprint,
    f.rule_id AS rule_id,
    f.dimension AS dimension,
    f.severity AS severity,
    f.confidence AS confidence,
    f.path AS path,
    toUInt32(least(greatest(f.line, 0), 4294967295)) AS line,
    if(f.end_line IS NULL, NULL,
       toUInt32(least(greatest(assumeNotNull(f.end_line), 0), 4294967295))) AS end_line,
    f.message AS message,
    f.source AS source,
    occurred_at,
    ifNull(accepted_at, occurred_at) AS accepted_at
FROM results_ingest
ARRAY JOIN findings AS f;
