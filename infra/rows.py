"""Pure mapping from schema events to ClickHouse rows (table name, column -> value). No I/O.

Every row of one table has the same keys in the same order, so the store can take the
column list from the first row of a batch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from agents.errors import StoreError
from schemas import (
    AcceptedChange,
    DeadLetter,
    Event,
    FailureEvent,
    Feedback,
    HealingAction,
    InferenceResult,
    LifecycleEvent,
    QuarantineEvent,
    Severity,
    ShadowComparison,
    TrainingJobEvent,
)

Row = dict[str, Any]

# The table each event type lands in (InferenceResult also fills `findings`).
TABLE_FOR_EVENT: dict[type[Event], str] = {
    InferenceResult: "interactions",
    AcceptedChange: "events_archive",
    DeadLetter: "dead_letters",
    FailureEvent: "failures",
    LifecycleEvent: "lifecycle",
    ShadowComparison: "shadow_comparisons",
    Feedback: "feedback",
    HealingAction: "healing_actions",
    QuarantineEvent: "quarantines",
    TrainingJobEvent: "training_jobs",
}

UINT32_MAX = 2**32 - 1


def utc(value: datetime) -> datetime:
    """Timezone-aware UTC; a naive datetime is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _u32(value: int) -> int:
    # Usage counts come from backends; clamp rather than fail a whole batch on a bad number.
    return min(max(int(value), 0), UINT32_MAX)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def accepted_at(e: InferenceResult | ShadowComparison) -> datetime:
    """The request's accepted time, part of the sort key (013_time_in_sort_keys): the same on
    every re-run. Events made outside the pipeline carry none and use their own time."""
    return utc(e.accepted_at or e.occurred_at)


# (severity, its column): iterating an Enum and reading `.value` cost more than the rest of
# a row (py-spy on the sink, bench/sink.py).
_SEVERITY_COLUMNS = tuple((s, f"findings_{s.value}") for s in Severity)
_SEVERITIES = tuple(Severity)


def interaction_row(r: InferenceResult) -> Row:
    counts = dict.fromkeys(_SEVERITIES, 0)
    for f in r.findings:
        counts[f.severity] += 1
    ct, risk, usage = r.change_type, r.risk, r.usage
    return {
        "event_id": r.event_id,
        "request_id": r.request_id,
        "task": r.task,
        "version_id": r.version_id,
        "role": r.role.value,
        "run_id": r.run_id or "",
        "status": r.status.value,
        "attempt": _u32(r.attempt),
        "latency_ms": float(r.latency_ms),
        "label": r.label,
        "predicted_label": ct.label if ct else None,
        "label_confidence": ct.confidence if ct else None,
        "risk_score": risk.score if risk else None,
        "risk_level": risk.level if risk else None,
        "findings_total": len(r.findings),
        **{column: counts[s] for s, column in _SEVERITY_COLUMNS},
        "prompt_tokens": _u32(usage.prompt_tokens),
        "completion_tokens": _u32(usage.completion_tokens),
        "cost_usd": float(usage.cost_usd),
        "model": usage.model or "",  # migration 006_llm_usage
        "prompt_hash": usage.prompt_hash or "",
        "suggested_message": r.suggested_message or "",  # migration 012_suggested_message
        "error": r.error,
        "fallback_from": r.fallback_from,
        "repo": r.repo,
        "sha": r.sha,
        "pull_request": r.pull_request,
        "occurred_at": utc(r.occurred_at),
        "accepted_at": accepted_at(r),  # migration 013_time_in_sort_keys
    }


def finding_rows(r: InferenceResult) -> list[Row]:
    if not r.findings:
        return []
    # The columns every finding of one result shares, computed once.
    event_id, request_id, task, version_id = r.event_id, r.request_id, r.task, r.version_id
    role, run_id = r.role.value, r.run_id or ""
    occurred, accepted = utc(r.occurred_at), accepted_at(r)
    return [
        {
            "event_id": event_id,
            "request_id": request_id,
            "task": task,
            "version_id": version_id,
            "role": role,
            "run_id": run_id,
            "fingerprint": f.fingerprint,
            "rule_id": f.rule_id,
            "dimension": f.dimension.value,
            "severity": f.severity.value,
            "confidence": float(f.confidence),
            "path": f.path,
            "line": _u32(f.line),
            "end_line": _u32(f.end_line) if f.end_line is not None else None,
            "message": f.message,
            "source": f.source,
            "occurred_at": occurred,
            "accepted_at": accepted,
        }
        for f in r.findings
    ]


def archive_row(e: AcceptedChange) -> Row:
    return {
        "request_id": e.request_id,
        "event_id": e.event_id,
        "task": e.task,
        "repo": e.change.repo,
        "sha": e.change.sha,
        "pull_request": e.change.pull_request,
        "kind": e.kind,
        "label": e.label,
        "source_topic": e.source_topic,
        "accepted": e.model_dump_json(),
        "occurred_at": utc(e.occurred_at),
    }


def dead_letter_row(e: DeadLetter) -> Row:
    return {
        "event_id": e.event_id,
        "source_topic": e.source_topic,
        "partition": e.partition,
        "offset": e.offset,
        "key": e.key,
        "error": e.error,
        "payload": e.payload,
        "payload_encoding": e.payload_encoding,
        "payload_size": max(e.payload_size, 0),
        "occurred_at": utc(e.occurred_at),
    }


def failure_row(e: FailureEvent) -> Row:
    return {
        "event_id": e.event_id,
        "request_id": e.request_id,
        "task": e.task,
        "version_id": e.version_id,
        "role": e.role,
        "status": e.status,
        "error": e.error,
        "latency_ms": float(e.latency_ms),
        "occurred_at": utc(e.occurred_at),
    }


def lifecycle_row(e: LifecycleEvent) -> Row:
    # mode="json" turns datetimes, enums and models inside evidence/spec into JSON values.
    dumped = e.model_dump(mode="json", include={"evidence", "spec"})
    return {
        "event_id": e.event_id,
        "task": e.task,
        "version_id": e.version_id,
        "action": e.action.value,
        "from_state": e.from_state.value if e.from_state else None,
        "to_state": e.to_state.value,
        "traffic_percent": float(e.traffic_percent),
        "actor": e.actor,
        "reason": e.reason,
        "evidence": _json(dumped["evidence"]),
        "spec": _json(dumped["spec"]),
        "position": e.position,  # migration 003_lifecycle_position
        "schema_version": e.schema_version,  # migration 014_lifecycle_schema_version
        "occurred_at": utc(e.occurred_at),
    }


def shadow_row(e: ShadowComparison) -> Row:
    return {
        "event_id": e.event_id,
        "request_id": e.request_id,
        "task": e.task,
        "stable_version": e.stable_version,
        "candidate_version": e.candidate_version,
        "stable_status": e.stable_status.value,
        "candidate_status": e.candidate_status.value,
        "label": e.label,
        "stable_label": e.stable_label,
        "candidate_label": e.candidate_label,
        "change_type_agree": e.change_type_agree,
        "stable_findings": _u32(e.stable_findings),
        "candidate_findings": _u32(e.candidate_findings),
        "overlap": _u32(e.overlap),
        "precision": e.precision,
        "recall": e.recall,
        "latency_delta_ms": float(e.latency_delta_ms),
        "occurred_at": utc(e.occurred_at),
        "accepted_at": accepted_at(e),
    }


def feedback_row(e: Feedback) -> Row:
    return {
        "event_id": e.event_id,
        "fingerprint": e.fingerprint,
        "verdict": e.verdict,
        "version_id": e.version_id or "",
        "request_id": e.request_id,
        "actor": e.actor,
        "note": e.note,
        "occurred_at": utc(e.occurred_at),
    }


def healing_row(e: HealingAction) -> Row:
    return {
        "event_id": e.event_id,
        "task": e.task,
        "action": e.action,
        "version_id": e.version_id,
        "target_version": e.target_version,
        "request_id": e.request_id,
        "reason": e.reason,
        "occurred_at": utc(e.occurred_at),
    }


def quarantine_row(e: QuarantineEvent) -> Row:
    return {
        "event_id": e.event_id,
        "task": e.task,
        "version_id": e.version_id,
        "trigger": e.trigger,
        "root_cause": e.root_cause,
        "evidence": _json(e.model_dump(mode="json", include={"evidence"})["evidence"]),
        "occurred_at": utc(e.occurred_at),
    }


def training_job_row(e: TrainingJobEvent) -> Row:
    return {
        "event_id": e.event_id,
        "job_id": e.job_id,
        "task": e.task,
        "kind": e.kind,
        "state": e.state.value,
        "data": e.data,
        "base": e.base,
        "out": e.out,
        "repos": list(e.repos),
        "version_id": e.version_id,
        "params": _json(e.params),
        "metrics": _json(e.metrics),
        "error": e.error,
        "actor": e.actor,
        "occurred_at": utc(e.occurred_at),
    }


def rows_for(event: Event) -> list[tuple[str, Row]]:
    """The rows one event writes. Raises StoreError for an event type with no table."""
    if isinstance(event, InferenceResult):
        rows = [("interactions", interaction_row(event))]
        return rows + [("findings", row) for row in finding_rows(event)]
    mappers = {
        AcceptedChange: archive_row,
        DeadLetter: dead_letter_row,
        FailureEvent: failure_row,
        LifecycleEvent: lifecycle_row,
        ShadowComparison: shadow_row,
        Feedback: feedback_row,
        HealingAction: healing_row,
        QuarantineEvent: quarantine_row,
        TrainingJobEvent: training_job_row,
    }
    for cls, mapper in mappers.items():
        if isinstance(event, cls):
            return [(TABLE_FOR_EVENT[cls], mapper(event))]
    raise StoreError(f"no ClickHouse table for event type {type(event).__name__}")


INGEST_TABLE = "results_ingest"  # migration 015: its views fill interactions and findings
# How ClickHouse reads the JSON of a result into INGEST_TABLE (migration 015's comments).
INGEST_SETTINGS = {
    "date_time_input_format": "best_effort",
    "input_format_json_read_objects_as_strings": 1,
    "input_format_skip_unknown_fields": 1,
    "input_format_json_ignore_unknown_keys_in_named_tuple": 1,
}


_INT64 = 2**63


def ingestible(r: InferenceResult) -> bool:
    """Whether ClickHouse maps this result's JSON exactly as interaction_row and finding_rows
    would: every integer within Int64 (its Int128 columns would wrap a larger one silently,
    where `_u32` clamps it) and every float finite (pydantic writes inf and nan as null,
    which ClickHouse reads as 0). Any other result, hostile or odd, takes the Python rows."""
    u = r.usage
    ints = [r.attempt, u.prompt_tokens, u.completion_tokens]
    for f in r.findings:
        ints.append(f.line)
        if f.end_line is not None:
            ints.append(f.end_line)
    if r.pull_request is not None and not 0 <= r.pull_request < 2**64:
        return False  # refused either way (UInt64): the Python path says so as before
    return (all(-_INT64 <= i < _INT64 for i in ints)
            and math.isfinite(r.latency_ms) and math.isfinite(u.cost_usd))


class EventRows:
    """The rows of many events, gathered per table as columns while the events come, so the
    events themselves need not be kept until the insert.

    Why: the sink held a batch of 5,000 parsed results (a dozen tracked objects each) until
    its insert, and every young collection of the garbage collector scanned them again; a
    batch of columns holds strings, numbers and datetimes, which the collector does not
    track. Parsing 30,000 results and keeping them cost 24 us per result, parsing and
    dropping each 11 us (bench/sink.py, docs/concepts/batching.md).

    An InferenceResult is kept as one line of JSON instead (`results`, as pydantic writes the
    validated event): ClickHouse turns it into its interactions and findings rows
    (migration 015), which costs Python less than building and encoding those rows here.

    `add(event, source)`: the event's rows and its key ((type name, event id): the store skips
    keys it wrote already). `source`, the event's JSON as it came, is what a store in another
    process is sent (RemoteStore); `sources` is None once an event came without one.
    """

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, list[Any]]] = {}
        self.owners: dict[str, list[int]] = {}  # per table: the event (index) of each row
        self.results: list[bytes] = []  # InferenceResults, one JSON document each
        self.result_owners: list[int] = []
        self.result_rows: list[int] = []  # the interactions and findings rows each makes
        self.keys: list[tuple[str, str]] = []
        self.sources: list[tuple[str, bytes]] | None = []

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def of(cls, events: Iterator[Event] | list[Event]) -> EventRows:
        rows = cls()
        for event in events:
            rows.add(event)
        return rows

    def add(self, event: Event, source: bytes | None = None) -> None:
        index = len(self.keys)
        if event.__class__ is InferenceResult and ingestible(event):
            self.results.append(event.model_dump_json().encode())
            self.result_owners.append(index)
            self.result_rows.append(1 + len(event.findings))
        else:
            self._add_rows(index, rows_for(event))  # raises before anything is added
        name = type(event).__name__
        self.keys.append((name, event.event_id))
        if self.sources is not None:
            if source is None:
                self.sources = None
            else:
                self.sources.append((name, source))

    def _add_rows(self, index: int, rows: list[tuple[str, Row]]) -> None:
        for table, row in rows:
            columns = self.tables.get(table)
            if columns is None:
                columns = self.tables[table] = {column: [] for column in row}
                self.owners[table] = []
            for column, value in row.items():  # one table's rows share keys and their order
                columns[column].append(value)
            self.owners[table].append(index)

    def without(self, drop: set[int]) -> EventRows:
        """The same rows less those of the events at the indices in `drop` (the rest are
        numbered again from 0, as if added alone)."""
        out = EventRows()
        renumber = {old: new for new, old in enumerate(i for i in range(len(self.keys))
                                                        if i not in drop)}
        for table, columns in self.tables.items():
            keep = [i for i, owner in enumerate(self.owners[table]) if owner not in drop]
            if keep:
                out.tables[table] = {c: [values[i] for i in keep] for c, values in columns.items()}
                out.owners[table] = [renumber[self.owners[table][i]] for i in keep]
        for line, owner, n in zip(self.results, self.result_owners, self.result_rows,
                                  strict=True):
            if owner not in drop:
                out.results.append(line)
                out.result_owners.append(renumber[owner])
                out.result_rows.append(n)
        out.keys = [k for i, k in enumerate(self.keys) if i not in drop]
        if self.sources is not None:
            out.sources = [s for i, s in enumerate(self.sources) if i not in drop]
        else:
            out.sources = None
        return out

    def columns(self) -> Iterator[tuple[str, list[str], list[list[Any]]]]:
        """(table, column names, one list of values per column) for each table with rows."""
        for table, columns in self.tables.items():
            if self.owners[table]:
                yield table, list(columns), list(columns.values())
