"""The ClickHouse store: idempotent batched inserts and read-only queries, via clickhouse-connect.

One DSN picks the engine: `chdb:///abs/dir` is chDB inside this process, `http(s)://host:8123`
a ClickHouse server; the same SQL runs on both. Store is synchronous and not meant to be
shared between threads; asyncio code uses `AsyncStore` (aio.py), which runs every call on
one dedicated thread.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from pydantic import SecretStr

from agents.errors import StoreError
from infra.event_rows import INGEST_SETTINGS, INGEST_TABLE, EventRows
from schemas import Event

from . import migrations
from .dsn import chdb_path, dsn_password, redact_dsn, scrub
from .errors import StoreUnavailable, is_unavailable
from .protocol import QueryResult, jsonable
from .sqlguard import one_statement

if TYPE_CHECKING:
    from .lock import StoreLock

log = logging.getLogger("infra.store")

SEEN_IDS_MAX = 100_000


class Store:
    """One ClickHouse database: a writer client and a reader client locked to readonly=1."""

    def __init__(self, writer: Any, reader: Any, *, display: str,
                 secret: SecretStr | None = None, lock: StoreLock | None = None):
        self._writer = writer
        # readonly=1 is enforced by ClickHouse itself (verified in chDB: INSERT, DROP, SET
        # readonly and table functions such as file()/url() are refused); readonly=2 would
        # still allow table functions and INSERT INTO FUNCTION.
        self._reader = reader
        self._display = display
        self._secret = secret
        self._lock = lock
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._closed = False
        # FAULT INJECTION (REVIEWBUS_FAULT_STORE_DOWN_FILE, tests and drills only): while this
        # file exists every insert fails as if the server were down.
        self.fault_file: Path | None = None

    def __repr__(self) -> str:
        return f"Store({self._display!r})"

    __str__ = __repr__

    @classmethod
    def connect(cls, dsn: str, password: SecretStr | None = None, *,
                lock: StoreLock | None = None) -> Store:
        display = redact_dsn(dsn)
        secret = password if password is not None else dsn_password(dsn)
        if dsn.startswith("chdb:"):
            path = chdb_path(dsn)
            if path:
                Path(path).mkdir(parents=True, exist_ok=True)
            kwargs: dict[str, Any] = {}
        elif dsn.startswith(("http://", "https://")):
            kwargs = {"password": password.get_secret_value()} if password else {}
        else:
            raise StoreError(f"unsupported ClickHouse DSN {display!r}; "
                             "use chdb:///abs/dir or http(s)://host:8123")
        import clickhouse_connect  # here: a CLI that reaches the worker's store never needs it

        writer = reader = None
        try:
            writer = clickhouse_connect.get_client(dsn=dsn, tz_mode="aware", **kwargs)
            reader = clickhouse_connect.get_client(
                dsn=dsn, tz_mode="aware", settings={"readonly": 1}, **kwargs)
        except Exception as exc:
            if writer is not None:
                writer.close()
            raise StoreError(scrub(f"cannot open ClickHouse at {display}: {exc}", secret)) from exc
        log.info("opened ClickHouse store %s", display)
        return cls(writer, reader, display=display, secret=secret, lock=lock)

    def _error(self, what: str, exc: BaseException) -> StoreError:
        return StoreError(scrub(f"{what}: {exc}", self._secret))

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self!r} is closed")

    # ---- schema -------------------------------------------------------------------------

    def migrate(self, directory: Path = migrations.MIGRATIONS_DIR) -> list[str]:
        """Apply the numbered SQL files not applied yet, in order; return their names."""
        return migrations.migrate(self, directory)

    # ---- writes -------------------------------------------------------------------------

    def insert_rows(self, table: str, data: list[list[Any]], columns: list[str], *,
                    what: str | None = None, column_oriented: bool = False) -> None:
        """One bulk insert (`data` as rows, or as columns with `column_oriented`);
        StoreUnavailable when the server cannot take rows now, StoreError when it refused
        them."""
        self._check_open()
        try:
            self._writer.insert(table, data, column_names=columns,
                                column_oriented=column_oriented)
        except Exception as exc:
            error = self._error(what or f"insert into {table} failed", exc)
            if is_unavailable(exc):
                raise StoreUnavailable(str(error)) from exc
            raise error from exc

    def insert_json(self, table: str, documents: list[bytes], settings: dict[str, Any]) -> None:
        """One insert of JSON documents (JSONEachRow), parsed by ClickHouse itself; errors as
        insert_rows."""
        self._check_open()
        try:
            self._writer.raw_insert(table, None, b"\n".join(documents), settings=settings,
                                    fmt="JSONEachRow")
        except Exception as exc:
            error = self._error(f"insert into {table} failed", exc)
            if is_unavailable(exc):
                raise StoreUnavailable(str(error)) from exc
            raise error from exc

    def insert_events(self, events: Sequence[Event]) -> int:
        """Write events, one bulk insert per table; return the number of rows written.

        Event ids already written by this Store are skipped, so an immediate redelivery costs
        nothing; older duplicates collapse in the ReplacingMergeTree tables (read with FINAL).
        """
        return self.insert_event_rows(EventRows.of(events))

    def insert_event_rows(self, rows: EventRows) -> int:
        """insert_events for events already turned into columns (the sink's batches)."""
        self._check_open()
        if self.fault_file is not None and self.fault_file.exists():
            raise StoreUnavailable(f"fault injection: inserts fail while {self.fault_file} "
                                   "exists (REVIEWBUS_FAULT_STORE_DOWN_FILE)")
        fresh: dict[tuple[str, str], None] = {}  # ordered and O(1): batches are thousands
        drop: set[int] = set()
        for index, key in enumerate(rows.keys):
            if key in self._seen or key in fresh:
                drop.add(index)
            else:
                fresh[key] = None
        if drop:
            rows = rows.without(drop)
        written = 0
        for table, names, columns in rows.columns():
            # Columns, not rows: clickhouse-connect would transpose rows in Python itself.
            self.insert_rows(table, columns, names, column_oriented=True)
            written += len(columns[0])
        if rows.results:
            self.insert_json(INGEST_TABLE, rows.results, INGEST_SETTINGS)
            written += sum(rows.result_rows)
        # Remember only after every table took its rows: a failed batch is retried whole.
        for key in fresh:
            self._seen[key] = None
        while len(self._seen) > SEEN_IDS_MAX:
            self._seen.popitem(last=False)
        return written

    def command(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        """Run one statement with write access (migrations, maintenance). Internal use."""
        self._check_open()
        statement = one_statement(sql, read_only=False)
        try:
            return self._writer.command(statement, parameters=params or None)
        except Exception as exc:
            raise self._error("ClickHouse command failed", exc) from exc

    # ---- reads --------------------------------------------------------------------------

    def query(self, sql: str, params: dict[str, Any] | None = None,
              readonly: bool = True) -> QueryResult:
        """Run one statement; readonly=True runs it on the readonly=1 connection.

        params bind server side: `SELECT ... WHERE task = {task:String}`.
        """
        self._check_open()
        statement = one_statement(sql, read_only=readonly)
        client = self._reader if readonly else self._writer
        try:
            result = client.query(statement, parameters=params or None)
            rows = [[jsonable(v) for v in row] for row in result.result_rows]
        except Exception as exc:
            raise self._error("ClickHouse query failed", exc) from exc
        return QueryResult(columns=list(result.column_names), rows=rows)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for client in (self._reader, self._writer):
            try:
                client.close()
            except Exception:  # closing is best effort; the lock must still be released
                log.debug("closing a ClickHouse client failed", exc_info=True)
        if self._lock is not None:
            self._lock.release()
