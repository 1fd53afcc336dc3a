"""Rows back into events: the lifecycle history in ClickHouse rebuilds the registry.

Layering: infra is the adapter layer. It may import `schemas` and the pure functions of
`agents` (here the registry fold); `agents` never imports `infra` (tests/test_layers.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from agents.registry import fold, newer_schema_text
from schemas import LifecycleEvent, Registry
from schemas.lifecycle import LIFECYCLE_SCHEMA_VERSION

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


def lifecycle_events_from_rows(rows: list[dict], on_unreadable: Callable[[dict], None] | None = None
                               ) -> tuple[list[LifecycleEvent], str | None]:
    """The stored events up to the first one of a schema version this code does not know (a
    newer reviewbus wrote it), and if there is one, why the fold stops there. An unreadable
    row raises, or is handed to `on_unreadable` and left out."""
    events = []
    for row in rows:
        version = row.get("schema_version", LIFECYCLE_SCHEMA_VERSION)
        if version not in LifecycleEvent.SUPPORTED_SCHEMA_VERSIONS:
            return events, newer_schema_text(version, str(row.get("event_id")))
        try:
            events.append(lifecycle_event_from_row(row))
        except Exception:
            if on_unreadable is None:
                raise
            on_unreadable(row)
    return events, None


def registry_from_store(store: StoreProtocol, task: str) -> Registry:
    """The registry folded from the stored lifecycle history; it stops (`behind`) at the first
    event of a schema version this code does not know, as a worker's fold does."""
    query = lifecycle_query(task)
    events, newer = lifecycle_events_from_rows(store.query(query.sql, query.params).as_dicts())
    registry = fold(task, events)
    return registry if newer is None else registry.model_copy(update={"behind": newer})
