"""What every store offers (`StoreProtocol`) and what a query returns (`QueryResult`).

Implementations: `Store` (clickhouse-connect on chDB in this process, or on a ClickHouse
server over HTTP) and `RemoteStore` (the worker-hosted store, over the worker's web port).
tests/test_store_contract.py runs one suite on each.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol, Self, runtime_checkable

from infra.event_rows import EventRows
from infra.rows import utc
from schemas import Event


@dataclass
class QueryResult:
    """Column names and rows of JSON-friendly values (datetimes as ISO strings)."""

    columns: list[str]
    rows: list[list[Any]]

    def as_dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row)) for row in self.rows]


def jsonable(value: Any) -> Any:
    """A value json.dumps accepts and that survives the round trip (NaN and inf become None)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        return utc(value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    return str(value)  # UUID, IP addresses, enums


@runtime_checkable
class StoreProtocol(Protocol):
    """The interactions store as the rest of reviewbus uses it.

    - `migrate()` applies the schema once; calling it again changes nothing.
    - `insert_events(events)` is idempotent on each event's id (ReplacingMergeTree tables,
      read with FINAL), and returns the number of rows it wrote; `insert_event_rows(rows)`
      is the same for events already gathered as columns (infra/event_rows.py `EventRows`).
    - `query(sql, params)` runs one read-only statement (`readonly=True`, the default) with
      server-side bind parameters and returns columns and JSON-friendly rows.
    - Every failure is a `StoreError` (agents/errors.py), never a library's exception.
    """

    def query(self, sql: str, params: dict[str, Any] | None = None,
              readonly: bool = True) -> QueryResult: ...

    def insert_events(self, events: Sequence[Event]) -> int: ...

    def insert_event_rows(self, rows: EventRows) -> int: ...

    def migrate(self) -> list[str]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...
