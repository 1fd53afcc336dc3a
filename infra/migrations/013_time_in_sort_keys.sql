-- Periodic queries whose cost does not grow with history (docs/operations/storage.md).
--
-- The leader's timers read a bounded time window of one task (and mostly one version), but
-- interactions, findings and shadow_comparisons were sorted by (task, version, request_id, ...)
-- and events_archive by (task, request_id): within a version the rows of any hour were spread
-- over every granule, so a one-hour window read the version's whole history.
--
-- Time now comes right after (task, version) in these keys. Not `occurred_at`: a re-run after
-- a crash gets a new occurred_at and must still replace the first row (see 001_init.sql). The
-- key takes the hour of `accepted_at` instead, the time intake accepted the request: intake
-- takes it from the input record's own broker timestamp, so every stage that runs again
-- (intake, router, inference, a fallback, the end-to-end repair) carries the same value, and
-- the identity of a row is still (task, version, request, role, run). Rows without one (written
-- by older code, or results made outside the pipeline) use their occurred_at (the DEFAULT).
-- Readers bound accepted_at by their window minus REVIEWBUS_TIMER_MAX_LAG_S.
--
-- Each table is rebuilt with CREATE OR REPLACE ... AS SELECT from its own FINAL rows (one row
-- per identity, the winning attempt), which swaps the new table in atomically. Every statement
-- can run again: the ADD COLUMN first makes the SELECT valid on the old and the new layout.

ALTER TABLE interactions ADD COLUMN IF NOT EXISTS accepted_at DateTime64(3, 'UTC') DEFAULT occurred_at;

CREATE OR REPLACE TABLE interactions
(
    event_id          String,
    request_id        String,
    task              LowCardinality(String),
    version_id        LowCardinality(String),
    role              LowCardinality(String),
    run_id            String,
    status            LowCardinality(String),
    attempt           UInt32,
    latency_ms        Float64,
    label             Nullable(String),
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
    model             LowCardinality(String) DEFAULT '',
    prompt_hash       String DEFAULT '',
    suggested_message String DEFAULT '',
    error             Nullable(String),
    fallback_from     Nullable(String),
    repo              String,
    sha               String,
    pull_request      Nullable(UInt64),
    occurred_at       DateTime64(3, 'UTC'),
    accepted_at       DateTime64(3, 'UTC') DEFAULT occurred_at,
    INDEX idx_time occurred_at TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree(occurred_at)
ORDER BY (task, version_id, toStartOfHour(accepted_at), request_id, role, run_id)
AS SELECT event_id, request_id, task, version_id, role, run_id, status, attempt, latency_ms,
          label, predicted_label, label_confidence, risk_score, risk_level, findings_total,
          findings_critical, findings_high, findings_medium, findings_low, findings_info,
          prompt_tokens, completion_tokens, cost_usd, model, prompt_hash, suggested_message,
          error, fallback_from, repo, sha, pull_request, occurred_at, accepted_at
   FROM interactions FINAL;

ALTER TABLE findings ADD COLUMN IF NOT EXISTS accepted_at DateTime64(3, 'UTC') DEFAULT occurred_at;

CREATE OR REPLACE TABLE findings
(
    event_id    String,
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
    accepted_at DateTime64(3, 'UTC') DEFAULT occurred_at,
    INDEX idx_time occurred_at TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree(occurred_at)
ORDER BY (task, version_id, toStartOfHour(accepted_at), request_id, role, run_id, fingerprint, line)
AS SELECT event_id, request_id, task, version_id, role, run_id, fingerprint, rule_id, dimension,
          severity, confidence, path, line, end_line, message, source, occurred_at, accepted_at
   FROM findings FINAL;

ALTER TABLE shadow_comparisons ADD COLUMN IF NOT EXISTS accepted_at DateTime64(3, 'UTC') DEFAULT occurred_at;

CREATE OR REPLACE TABLE shadow_comparisons
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
    accepted_at       DateTime64(3, 'UTC') DEFAULT occurred_at,
    INDEX idx_time occurred_at TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree(occurred_at)
ORDER BY (task, candidate_version, toStartOfHour(accepted_at), request_id, stable_version)
AS SELECT event_id, request_id, task, stable_version, candidate_version, stable_status,
          candidate_status, label, stable_label, candidate_label, change_type_agree,
          stable_findings, candidate_findings, overlap, precision, recall, latency_delta_ms,
          occurred_at, accepted_at
   FROM shadow_comparisons FINAL;

-- One row per request: occurred_at is the accepted time itself (stable, see above).
CREATE OR REPLACE TABLE events_archive
(
    request_id   String,
    event_id     String,
    task         LowCardinality(String),
    repo         String,
    sha          String,
    pull_request Nullable(UInt64),
    kind         LowCardinality(String),
    label        Nullable(String),
    source_topic LowCardinality(String),
    accepted     String CODEC(ZSTD(3)),
    occurred_at  DateTime64(3, 'UTC'),
    INDEX idx_time occurred_at TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree(occurred_at)
ORDER BY (task, toStartOfHour(occurred_at), request_id)
AS SELECT request_id, event_id, task, repo, sha, pull_request, kind, label, source_topic,
          accepted, occurred_at
   FROM events_archive FINAL;
