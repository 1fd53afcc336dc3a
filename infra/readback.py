"""Rows back into events: the lifecycle history in ClickHouse rebuilds the registry."""

from __future__ import annotations

import json

from agents.registry import fold
from agents.rotation import quote
from schemas import LifecycleEvent, Registry


def lifecycle_event_from_row(row: dict) -> LifecycleEvent:
    fields = {k: v for k, v in row.items() if k in LifecycleEvent.model_fields}
    fields["evidence"] = json.loads(row.get("evidence") or "{}")
    fields["spec"] = json.loads(row["spec"]) if row.get("spec") else None
    fields["from_state"] = row.get("from_state") or None
    return LifecycleEvent.model_validate(fields)


def lifecycle_sql(task: str) -> str:
    return f"SELECT * FROM lifecycle FINAL WHERE task = {quote(task)} ORDER BY occurred_at, event_id"


def registry_from_store(store, task: str) -> Registry:
    rows = store.query(lifecycle_sql(task)).as_dicts()
    return fold(task, [lifecycle_event_from_row(r) for r in rows])
