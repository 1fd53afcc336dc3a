"""Pure mapping from schema events to ClickHouse rows (table name, column -> value). No I/O.

Every row of one table has the same keys in the same order, so the store can take the
column list from the first row of a batch.
"""

from __future__ import annotations

import json
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
