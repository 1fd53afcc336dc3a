"""Rows back into events: the lifecycle history in ClickHouse rebuilds the registry.

Layering: infra is the adapter layer. It may import `schemas` and the pure functions of
`agents` (here the registry fold); `agents` never imports `infra` (tests/test_layers.py).
"""

from __future__ import annotations

import json

from agents.registry import fold
from schemas import LifecycleEvent, Registry

from .clickhouse.protocol import StoreProtocol
from .queries import Query


def lifecycle_event_from_row(row: dict) -> LifecycleEvent:
    fields = {k: v for k, v in row.items() if k in LifecycleEvent.model_fields}
    fields["evidence"] = json.loads(row.get("evidence") or "{}")
    fields["spec"] = json.loads(row["spec"]) if row.get("spec") else None
    fields["from_state"] = row.get("from_state") or None
    return LifecycleEvent.model_validate(fields)


def lifecycle_query(task: str) -> Query:
    """A task's lifecycle history, oldest first, with the task as a bind parameter."""
    return Query("SELECT * FROM lifecycle FINAL WHERE task = {task:String} "
                 "ORDER BY occurred_at, event_id", {"task": task})


def lifecycle_sql(task: str) -> str:
    """lifecycle_query(task) as literal SQL (clickhouse-connect quotes the value); for
    callers that take a string. Prefer lifecycle_query: its value travels as a parameter."""
    return lifecycle_query(task).text()


def registry_from_store(store: StoreProtocol, task: str) -> Registry:
    query = lifecycle_query(task)
    rows = store.query(query.sql, query.params).as_dicts()
    return fold(task, [lifecycle_event_from_row(r) for r in rows])
