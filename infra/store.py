"""The ClickHouse store: numbered migrations, idempotent batched inserts, read-only queries.

One DSN picks the engine: `chdb:///abs/dir` is chDB inside this process, `http(s)://host:8123`
a ClickHouse server; the same SQL runs on both. chDB hosts one engine per process and one
process may own a data directory, so `open_store` takes a file lock and, when another
process (the worker) owns the directory, answers with a `RemoteStore` that asks that
worker's web server instead.

Store is synchronous and not meant to be shared between threads; asyncio code uses
`AsyncStore`, which runs every call on one dedicated thread.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import json
import logging
import math
import os
import re
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

import clickhouse_connect
from pydantic import SecretStr, ValidationError

import schemas
from agents.errors import StoreBusy, StoreError
from agents.settings import Settings
from infra.rows import Row, rows_for, utc
from schemas import Event

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
MIGRATION_FILE = re.compile(r"^(\d+)_([A-Za-z0-9_-]+)\.sql$")
SEEN_IDS_MAX = 100_000
REMOTE_TIMEOUT_S = 30.0

SCHEMA_MIGRATIONS_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version    UInt32,
    name       String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY version
"""

# Every event class, by name: what RemoteStore sends and handle_insert_request rebuilds.
EVENT_TYPES: dict[str, type[Event]] = {
    name: obj
    for name in schemas.__all__
    if isinstance(obj := getattr(schemas, name), type) and issubclass(obj, Event) and obj is not Event
}

T = TypeVar("T")


class StoreUnavailable(StoreError):
    """ClickHouse cannot be reached right now (not a problem of the data): retry later."""


# ClickHouse error codes that say "not now" rather than "not these rows": timeouts, network,
# too many queries or parts, memory, read-only replicas, keeper trouble.
TRANSIENT_CODES = frozenset({3, 159, 164, 202, 203, 209, 210, 241, 242, 252, 319, 425, 999})
_CODE = re.compile(r"(?:\bcode:?\s*|error code\s+)(\d+)", re.IGNORECASE)


def is_unavailable(exc: BaseException) -> bool:
    """True when a client error means the server cannot take rows right now (retry them all),
    False when the rows themselves were refused (isolate the bad one). By type (connection
    errors, clickhouse_connect's OperationalError) or by the first ClickHouse error code in
    the message; never by other words of it, which may quote the rows' own text."""
    from clickhouse_connect.driver.exceptions import OperationalError

    if isinstance(exc, StoreUnavailable | OSError | OperationalError):
        return True
    match = _CODE.search(str(exc))
    return bool(match) and int(match.group(1)) in TRANSIENT_CODES


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


# ---- SQL guards -------------------------------------------------------------------------


def _mask_sql(sql: str) -> str:
    """sql, same length, with literals and quoted identifiers filled with '~' and comments
    with spaces, so keywords and ';' can be looked for without being fooled by contents
    (and a trailing comment, unlike a trailing literal, strips away as whitespace)."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"`":
            j = i + 1
            while j < n and sql[j] != c:
                j += 2 if sql[j] == "\\" else 1
            end = min(j + 1, n)
            out.append("~" * (end - i))  # not a word char: keeps \b working
            i = end
            continue
        if sql.startswith("--", i):
            j = sql.find("\n", i)
            end = n if j < 0 else j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            end = n if j < 0 else j + 2
        else:
            out.append(c)
            i += 1
            continue
        out.append(" " * (end - i))
        i = end
    return "".join(out)


def one_statement(sql: str, *, read_only: bool) -> str:
    """The one statement in sql, trailing ';' dropped, or StoreError.

    chDB executes every statement of a multi-statement string, and when one fails the
    connection keeps returning the leftovers to later queries; so never send more than one.
    `INTO OUTFILE` writes a file even under readonly=1 in chDB, so read-only queries refuse it.
    """
    body = _mask_sql(sql).rstrip()
    while body.endswith(";"):
        body = body[:-1].rstrip()
    if not body.strip():
        raise StoreError("empty SQL statement")
    if ";" in body:
        raise StoreError("one SQL statement per call; found ';' between statements")
    # No keyword allow-list: readonly=1 is enforced by the engine (see Store.__init__), and
    # ClickHouse's own error for a typo is more useful than ours.
    if read_only and re.search(r"\bINTO\s+OUTFILE\b", body, re.IGNORECASE):
        raise StoreError("INTO OUTFILE is not allowed in a read-only query")
    # clickhouse-connect appends its own FORMAT; a second one is a syntax error that names
    # the client's format (`FORMAT Native`), not the user's, so say what to do instead.
    output_format = re.search(r"\bFORMAT\s+(\w+)\s*$", body, re.IGNORECASE)
    if output_format and output_format[1].upper() not in ("ASC", "DESC"):
        raise StoreError(f"drop 'FORMAT {output_format[1]}': reviewbus chooses the output "
                         "format (`reviewbus sql --format table|json`)")
    return sql[: len(body)]


def split_statements(text: str) -> list[str]:
    """Statements of a migration file: split on ';' at line ends, comment-only parts dropped."""
    parts = re.split(r";[ \t]*(?:\r?\n|$)", text)
    return [p.strip() for p in parts if _mask_sql(p).strip()]


# ---- DSNs and secrets -------------------------------------------------------------------


def chdb_path(dsn: str) -> str | None:
    """The data directory of a chdb:// DSN, or None for an in-memory engine."""
    parts = urlsplit(dsn)
    location = parts.netloc.rpartition("@")[2] if parts.netloc else parts.path
    return None if location in ("", "memory", ":memory:") else location


def redact_dsn(dsn: str) -> str:
    """The DSN with any password in it replaced by ***."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


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
        secret = password
        if secret is None and urlsplit(dsn).password:
            secret = SecretStr(urlsplit(dsn).password or "")
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
        writer = reader = None
        try:
            writer = clickhouse_connect.get_client(dsn=dsn, tz_mode="aware", **kwargs)
            reader = clickhouse_connect.get_client(
                dsn=dsn, tz_mode="aware", settings={"readonly": 1}, **kwargs)
        except Exception as exc:
            if writer is not None:
                writer.close()
            raise StoreError(_scrub(f"cannot open ClickHouse at {display}: {exc}", secret)) from exc
        log.info("opened ClickHouse store %s", display)
        return cls(writer, reader, display=display, secret=secret, lock=lock)

    def _error(self, what: str, exc: BaseException) -> StoreError:
        return StoreError(_scrub(f"{what}: {exc}", self._secret))

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self!r} is closed")

    # ---- schema -------------------------------------------------------------------------

    def migrate(self, directory: Path = MIGRATIONS_DIR) -> list[str]:
        """Apply the numbered SQL files not applied yet, in order; return their names."""
        self.command(SCHEMA_MIGRATIONS_DDL)
        applied = {row[0] for row in self.query("SELECT version FROM schema_migrations FINAL").rows}
        done: list[str] = []
        for version, path in _migration_files(directory):
            if version in applied:
                continue
            for statement in split_statements(path.read_text(encoding="utf-8")):
                self.command(statement)
            try:
                self._writer.insert("schema_migrations", [[version, path.stem]],
                                    column_names=["version", "name"])
            except Exception as exc:
                raise self._error(f"cannot record migration {path.name}", exc) from exc
            log.info("applied migration %s", path.name)
            done.append(path.stem)
        return done

    # ---- writes -------------------------------------------------------------------------

    def insert_events(self, events: Sequence[Event]) -> int:
        """Write events, one bulk insert per table; return the number of rows written.

        Event ids already written by this Store are skipped, so an immediate redelivery costs
        nothing; older duplicates collapse in the ReplacingMergeTree tables (read with FINAL).
        """
        self._check_open()
        if self.fault_file is not None and self.fault_file.exists():
            raise StoreUnavailable(f"fault injection: inserts fail while {self.fault_file} "
                                   "exists (REVIEWBUS_FAULT_STORE_DOWN_FILE)")
        batch: dict[str, list[Row]] = {}
        fresh: list[tuple[str, str]] = []
        for event in events:
            key = (type(event).__name__, event.event_id)
            if key in self._seen or key in fresh:
                continue
            for table, row in rows_for(event):
                batch.setdefault(table, []).append(row)
            fresh.append(key)
        written = 0
        for table, rows in batch.items():
            columns = list(rows[0])
            data = [[row[c] for c in columns] for row in rows]
            try:
                self._writer.insert(table, data, column_names=columns)
            except Exception as exc:
                error = self._error(f"insert into {table} failed", exc)
                if is_unavailable(exc):
                    raise StoreUnavailable(str(error)) from exc
                raise error from exc
            written += len(rows)
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


def _scrub(text: str, secret: SecretStr | None) -> str:
    value = secret.get_secret_value() if secret is not None else ""
    return text.replace(value, "***") if value else text


def _migration_files(directory: Path) -> list[tuple[int, Path]]:
    found: dict[int, Path] = {}
    for path in sorted(directory.glob("*.sql")):
        match = MIGRATION_FILE.match(path.name)
        if not match:
            raise StoreError(f"migration file {path.name} is not named NNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise StoreError(f"two migrations numbered {version}: "
                             f"{found[version].name} and {path.name}")
        found[version] = path
    return sorted(found.items())


# ---- single-process ownership of an embedded directory ---------------------------------


class StoreLock:
    """Exclusive non-blocking flock on `<dir>.lock`: one process owns a chDB directory.

    The kernel drops a flock when its process dies, so a crash never leaves a stale lock.
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.path = self.directory.with_name(self.directory.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> bool:
        """True when this process now holds the lock, False when another process does."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # only for messages: who holds it
        self._fd = fd
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


# ---- another process's store, over its worker's web server ----------------------------


class RemoteStore:
    """The store owned by another process, reached with JSON POSTs to its web server."""

    def __init__(self, web_url: str, timeout: float = REMOTE_TIMEOUT_S):
        if urlsplit(web_url).scheme not in ("http", "https"):
            raise StoreError(f"worker web_url must be http(s)://, got {web_url!r}")
        self.web_url = web_url.rstrip("/")
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"RemoteStore({self.web_url!r})"

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            self.web_url + path, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json"})
        try:
            # The scheme was checked in __init__: only http(s), never file://.
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # nosec B310
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()  # an error answer may still carry {"error": ...}
            if not raw.strip().startswith(b"{"):
                raise StoreError(f"worker at {self.web_url} answered HTTP {exc.code}") from exc
        except OSError as exc:  # URLError, refused, timeout
            reason = getattr(exc, "reason", exc)
            raise StoreBusy(_one_line(f"worker at {self.web_url} does not answer: {reason}")) from exc
        try:
            answer = json.loads(raw)
        except ValueError as exc:
            raise StoreError(f"worker at {self.web_url} answered with something not JSON") from exc
        if not isinstance(answer, dict):
            raise StoreError(f"worker at {self.web_url} answered with a JSON {type(answer).__name__}")
        if "error" in answer:
            raise StoreError(str(answer["error"]))
        return answer

    def query(self, sql: str, params: dict[str, Any] | None = None,
              readonly: bool = True) -> QueryResult:
        answer = self._post("/store/query", {"sql": sql, "params": params, "readonly": readonly})
        columns, rows = answer.get("columns"), answer.get("rows")
        if not isinstance(columns, list) or not isinstance(rows, list):
            raise StoreError(f"worker at {self.web_url} answered without columns and rows")
        return QueryResult(columns=columns, rows=rows)

    def insert_events(self, events: Sequence[Event]) -> int:
        if not events:
            return 0
        wire = [{"type": type(e).__name__, "json": e.model_dump_json()} for e in events]
        return int(self._post("/store/insert", {"events": wire}).get("written", 0))

    def migrate(self) -> list[str]:
        return []  # the owning process migrated at its start

    def command(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        raise StoreError("internal writes run only in the process that owns the store")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        pass


def handle_query_request(store: Store, payload: Any, *, allow_writes: bool = False) -> dict:
    """Server side of RemoteStore.query: {"sql", "params", "readonly"} -> {"columns", "rows"}
    or {"error"}. Writes are refused unless the caller opts in: the endpoint has no auth."""
    if not isinstance(payload, dict) or not isinstance(payload.get("sql"), str):
        return {"error": "expected a JSON object with a string 'sql'"}
    params = payload.get("params")
    readonly = payload.get("readonly", True)
    if params is not None and not isinstance(params, dict):
        return {"error": "'params' must be a JSON object"}
    if not isinstance(readonly, bool):
        return {"error": "'readonly' must be true or false"}
    if not readonly and not allow_writes:
        return {"error": "this endpoint answers read-only queries only"}
    try:
        result = store.query(payload["sql"], params, readonly=readonly)
    except StoreError as exc:
        return {"error": str(exc)}
    return {"columns": result.columns, "rows": result.rows}


def handle_insert_request(store: Store, payload: Any) -> dict:
    """Server side of RemoteStore.insert_events: {"events": [{"type", "json"}]} ->
    {"written": n} or {"error"}. Types come from a fixed registry of schema classes."""
    items = payload.get("events") if isinstance(payload, dict) else None
    if not isinstance(items, list):
        return {"error": "expected a JSON object with a list 'events'"}
    events: list[Event] = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("json"), str):
            return {"error": "each event must be {'type': name, 'json': string}"}
        cls = EVENT_TYPES.get(item.get("type"))  # type: ignore[arg-type]
        if cls is None:
            return {"error": f"unknown event type {item.get('type')!r}"}
        try:
            events.append(cls.model_validate_json(item["json"]))
        except ValidationError as exc:
            return {"error": _one_line(f"invalid {cls.__name__}: {exc}")}
    try:
        return {"written": store.insert_events(events)}
    except StoreError as exc:
        return {"error": str(exc)}


# ---- opening, from settings -------------------------------------------------------------


def open_store(settings: Settings) -> Store | RemoteStore:
    """The configured store, migrated. An embedded directory owned by another process is
    reached through that process's worker (RemoteStore), or StoreBusy when it cannot be."""
    dsn = settings.resolved_clickhouse()
    path = chdb_path(dsn) if dsn.startswith("chdb:") else None
    lock = None
    if path is not None:
        lock = StoreLock(Path(path))
        if not lock.acquire():
            return _remote_store(settings, lock)
    try:
        store = Store.connect(dsn, settings.clickhouse_password, lock=lock)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    try:
        store.migrate()
    except BaseException:
        store.close()
        raise
    store.fault_file = settings.fault_store_down_file
    return store


def _remote_store(settings: Settings, lock: StoreLock) -> RemoteStore:
    busy = f"chDB store {lock.directory} is held by process {lock.holder()}"
    info = Path(settings.home) / "worker.json"
    try:
        web_url = json.loads(info.read_text())["web_url"]
        remote = RemoteStore(str(web_url))
    except (OSError, ValueError, KeyError, TypeError, StoreError) as exc:
        raise StoreBusy(f"{busy}, and {info} names no worker to ask; stop that process "
                        "or point REVIEWBUS_CLICKHOUSE at a ClickHouse server") from exc
    try:
        remote.query("SELECT 1")
    except StoreError as exc:
        raise StoreBusy(_one_line(f"{busy}, and its worker at {remote.web_url} "
                                  f"does not answer: {exc}")) from exc
    return remote


# ---- asyncio ------------------------------------------------------------------------------


class AsyncStore:
    """A Store for asyncio code: every call runs on one dedicated thread, so chDB is only
    ever touched from that thread and a slow insert never blocks the event loop."""

    def __init__(self, store: Store | RemoteStore | None = None):
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reviewbus-store")
        self.store = store

    @classmethod
    async def open(cls, settings: Settings) -> AsyncStore:
        """open_store(settings), run on the store thread itself."""
        self = cls()
        try:
            self.store = await self._submit(open_store, settings)
        except BaseException:
            self._executor.shutdown(wait=False)
            raise
        return self

    async def _submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def _require(self) -> Store | RemoteStore:
        if self.store is None:
            raise StoreError("AsyncStore has no store")
        return self.store

    async def insert_events(self, events: Sequence[Event]) -> int:
        return await self._submit(self._require().insert_events, list(events))

    async def query(self, sql: str, params: dict[str, Any] | None = None,
                    readonly: bool = True) -> QueryResult:
        return await self._submit(self._require().query, sql, params, readonly)

    async def migrate(self) -> list[str]:
        return await self._submit(self._require().migrate)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(store, *args) on the store thread, e.g. handle_query_request for a web view."""
        return await self._submit(fn, self._require(), *args)

    async def close(self) -> None:
        try:
            if self.store is not None:
                await self._submit(self.store.close)
        finally:
            self._executor.shutdown(wait=False)
