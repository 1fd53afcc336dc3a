"""Many events' rows gathered as columns for one insert per table (`EventRows`), and the
results that ClickHouse maps itself (migration 015). No I/O: infra/clickhouse/store.py inserts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

from schemas import Event, InferenceResult

from .rows import Row, rows_for

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
    def of(cls, events: Iterable[Event]) -> EventRows:
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
