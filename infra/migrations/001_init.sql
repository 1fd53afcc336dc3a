-- reviewbus schema v1. Every statement is idempotent (IF NOT EXISTS) so a migration that
-- stopped half way can simply run again. Statements are split on ';' at line ends.
--
-- Idempotent storage: every table is a ReplacingMergeTree whose ORDER BY ends with the
-- identity of one fact, so a redelivered event collapses; readers use FINAL.
-- Tables whose fact has an identity beyond one event id (an attempt of a request by a
-- version, a finding in it, a comparison) leave the time out of the key: a re-run after a
-- crash gives a new event_id and a new occurred_at, and must still replace the first row.
-- Those tables narrow time with a minmax skip index instead. The version column
-- (occurred_at) makes the latest attempt win.
--
-- schema_migrations is created by infra/store.py itself: it must exist before any file runs.

CREATE TABLE IF NOT EXISTS interactions
(
    event_id          String,
    request_id        String,
    task              LowCardinality(String),
    version_id        LowCardinality(String),
    role              LowCardinality(String),
    run_id            String,                      -- '' when not a replay
    status            LowCardinality(String),
    attempt           UInt32,
    latency_ms        Float64,
    label             Nullable(String),            -- ground truth (Conventional Commits type)
    predicted_label   Nullable(String),
    label_confidence  Nullable(Float64),
    risk_score        Nullable(Float64),
    risk_level        Nullable(String),
    findings_total    UInt32,
    findings_critical UInt32,
    findings_high     UInt32,
    findings_medium   UInt32,
    findings_low      UInt32,
    findings_info     UInt32,
    prompt_tokens     UInt32,
    completion_tokens UInt32,
    cost_usd          Float64,
    error             Nullable(String),
    fallback_from     Nullable(String),
    repo              String,
    sha               String,
    pull_request      Nullable(UInt64),
    occurred_at       DateTime64(3, 'UTC'),
    INDEX idx_time occurred_at TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree(occurred_at)
ORDER BY (task, version_id, request_id, role, run_id);

-- One row per finding. Join on event_id with `interactions FINAL` to keep only the findings
-- of the attempt that won, should a re-run have produced a different set.
CREATE TABLE IF NOT EXISTS findings
(
    event_id    String,                            -- the InferenceResult's event_id
    request_id  String,
    task        LowCardinality(String),
    version_id  LowCardinality(String),
    role        LowCardinality(String),
    run_id      String,
    fingerprint String,
    rule_id     LowCardinality(String),
    dimension   LowCardinality(String),
    severity    LowCardinality(String),
    confidence  Float64,
    path        String,
    line        UInt32,
    end_line    Nullable(UInt32),
    message     String,
    source      LowCardinality(String),
    occurred_at DateTime64(3, 'UTC'),
    INDEX idx_time occurred_at TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree(occurred_at)
ORDER BY (task, version_id, request_id, role, run_id, fingerprint, line);

CREATE TABLE IF NOT EXISTS shadow_comparisons
(
    event_id          String,
    request_id        String,
    task              LowCardinality(String),
    stable_version    LowCardinality(String),
    candidate_version LowCardinality(String),
    stable_status     LowCardinality(String),
    candidate_status  LowCardinality(String),
    label             Nullable(String),
    stable_label      Nullable(String),
    candidate_label   Nullable(String),
    change_type_agree Nullable(Bool),
    stable_findings   UInt32,
    candidate_findings UInt32,
    overlap           UInt32,
    precision         Nullable(Float64),
    recall            Nullable(Float64),
    latency_delta_ms  Float64,
    occurred_at       DateTime64(3, 'UTC'),
    INDEX idx_time occurred_at TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree(occurred_at)
ORDER BY (task, candidate_version, request_id, stable_version);

-- Each failure is its own fact (retries fail separately), so the key is the event id.
CREATE TABLE IF NOT EXISTS failures
(
    event_id    String,
    request_id  String,
    task        LowCardinality(String),
    version_id  LowCardinality(String),
    role        LowCardinality(String),
    status      LowCardinality(String),
    error       String,
    latency_ms  Float64,
    occurred_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (task, version_id, occurred_at, event_id);

CREATE TABLE IF NOT EXISTS lifecycle
(
    event_id        String,
    task            LowCardinality(String),
    version_id      LowCardinality(String),
    action          LowCardinality(String),
    from_state      Nullable(String),
    to_state        LowCardinality(String),
    traffic_percent Float64,
    actor           String,
    reason          String,
    evidence        String,                        -- JSON object
    spec            String,                        -- JSON: the VersionSpec, or null
    -- Microseconds, not ms: the registry is folded in (occurred_at, event_id) order, and
    -- events emitted in the same millisecond would otherwise fold in random id order.
    occurred_at     DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (task, version_id, occurred_at, event_id);

-- Feedback names a finding by fingerprint; it carries no task.
CREATE TABLE IF NOT EXISTS feedback
(
    event_id    String,
    fingerprint String,
    verdict     LowCardinality(String),            -- true_positive | false_positive
    version_id  LowCardinality(String),            -- '' when not given
    request_id  Nullable(String),
    actor       String,
    note        String,
    occurred_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (version_id, occurred_at, event_id);

-- Raw input for replay beyond Kafka retention: the whole AcceptedChange as JSON.
-- Keyed by request_id (one archived input per request).
CREATE TABLE IF NOT EXISTS events_archive
(
    request_id   String,
    event_id     String,                           -- the AcceptedChange's own event_id
    task         LowCardinality(String),
    repo         String,
    sha          String,
    pull_request Nullable(UInt64),
    kind         LowCardinality(String),           -- commit | review_request
    label        Nullable(String),
    source_topic LowCardinality(String),
    accepted     String CODEC(ZSTD(3)),            -- AcceptedChange JSON
    occurred_at  DateTime64(3, 'UTC'),
    INDEX idx_time occurred_at TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree(occurred_at)
ORDER BY (task, request_id);

-- Keyed by event id, not by (topic, partition, offset): the embedded broker keeps topics in
-- memory, so offsets start again at 0 after a restart and would collide.
CREATE TABLE IF NOT EXISTS dead_letters
(
    event_id         String,
    source_topic     LowCardinality(String),
    partition        Int32,
    offset           Int64,
    key              Nullable(String),
    error            String,
    payload          String CODEC(ZSTD(3)),
    payload_encoding LowCardinality(String),       -- utf-8 | base64
    payload_size     UInt64,
    occurred_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (source_topic, occurred_at, event_id);
