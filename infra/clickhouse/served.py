"""The worker-hosted store: the worker's web port answers for the store it owns.

chDB hosts one engine per process and one process may own a data directory, so while the
worker runs, the CLI reaches the worker's store through two JSON endpoints on the worker's
web port (mounted by streams/web.py):

- `POST /store/query`  `{"sql", "params", "readonly"}` -> `{"columns", "rows"}` or `{"error"}`
- `POST /store/insert` `{"events": [{"type", "json"}]}` -> `{"written": n}` or `{"error"}`

Both require `Authorization: Bearer <token>` (auth.py): 401 without it, 403 with a wrong one.
`RemoteStore` is the client side; it implements the same `StoreProtocol` as `Store`.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

from pydantic import ValidationError

import schemas
from agents.errors import StoreBusy, StoreError
from schemas import Event

from .auth import bearer_headers, check_authorization
from .dsn import one_line
from .errors import StoreUnauthorized, StoreUnavailable
from .protocol import QueryResult

if TYPE_CHECKING:
    from infra.event_rows import EventRows

    from .aio import AsyncStore
    from .store import Store

REMOTE_TIMEOUT_S = 30.0

# Every event class, by name: what RemoteStore sends and handle_insert_request rebuilds.
EVENT_TYPES: dict[str, type[Event]] = {
    name: obj
    for name in schemas.__all__
    if isinstance(obj := getattr(schemas, name), type) and issubclass(obj, Event) and obj is not Event
}


# ---- client ---------------------------------------------------------------------------------


class RemoteStore:
    """The store owned by another process, reached with JSON POSTs to its web server."""

    def __init__(self, web_url: str, timeout: float = REMOTE_TIMEOUT_S, *,
                 token: str | None = None):
        if urlsplit(web_url).scheme not in ("http", "https"):
            raise StoreError(f"worker web_url must be http(s)://, got {web_url!r}")
        self.web_url = web_url.rstrip("/")
        self.timeout = timeout
        self._token = token

    def __repr__(self) -> str:
        return f"RemoteStore({self.web_url!r})"

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            self.web_url + path, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json", **bearer_headers(self._token)})
        try:
            # The scheme was checked in __init__: only http(s), never file://.
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # nosec B310
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()  # an error answer may still carry {"error": ...}
            if exc.code in (401, 403):
                raise StoreUnauthorized(one_line(
                    f"worker at {self.web_url} refused the store request (HTTP {exc.code}): "
                    f"{_error_text(raw)}")) from exc
            if not raw.strip().startswith(b"{"):
                raise StoreError(f"worker at {self.web_url} answered HTTP {exc.code}") from exc
        except OSError as exc:  # URLError, refused, timeout
            reason = getattr(exc, "reason", exc)
            raise StoreBusy(one_line(f"worker at {self.web_url} does not answer: {reason}")) from exc
        try:
            answer = json.loads(raw)
        except ValueError as exc:
            raise StoreError(f"worker at {self.web_url} answered with something not JSON") from exc
        if not isinstance(answer, dict):
            raise StoreError(f"worker at {self.web_url} answered with a JSON {type(answer).__name__}")
        if "error" in answer:
            if answer.get("retry") is True:  # the host's store is down or not open yet
                raise StoreUnavailable(str(answer["error"]))
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

    def insert_event_rows(self, rows: EventRows) -> int:
        """The hosting worker gets the events' JSON as they came, not the columns: it parses
        and stores them as insert_events does (and skips the ids it wrote already)."""
        if not len(rows):
            return 0
        if rows.sources is None:
            raise StoreError("a store in another process needs the events' JSON "
                             "(EventRows.add(event, source))")
        wire = [{"type": name, "json": source.decode()} for name, source in rows.sources]
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


def _error_text(raw: bytes) -> str:
    try:
        return str(json.loads(raw)["error"])
    except (ValueError, KeyError, TypeError):
        return raw.decode("utf-8", "replace")[:200]


# ---- server ---------------------------------------------------------------------------------


def handle_query_request(store: Store, payload: Any, *, allow_writes: bool = False) -> dict:
    """Server side of RemoteStore.query: {"sql", "params", "readonly"} -> {"columns", "rows"}
    or {"error"}. Writes are refused unless the caller opts in."""
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
            return {"error": one_line(f"invalid {cls.__name__}: {exc}")}
    try:
        return {"written": store.insert_events(events)}
    except (StoreUnavailable, StoreBusy) as exc:  # not the rows' fault: the caller retries
        return {"error": str(exc), "retry": True}
    except StoreError as exc:
        return {"error": str(exc)}


HANDLERS = {"query": handle_query_request, "insert": handle_insert_request}


async def serve_store_request(store: AsyncStore | None, kind: str, *, authorization: str | None,
                              body: bytes, home: Path | str) -> tuple[int, dict]:
    """One HTTP request to `/store/<kind>`: (status, JSON body). The token is checked before
    the body is even parsed; a store error is a 200 answer with {"error"} (what RemoteStore
    and the benchmarks read), a refusal 401/403, a bad body 400, no store yet 503."""
    refused = check_authorization(authorization, home)
    if refused is not None:
        return refused[0], {"error": refused[1]}
    handler = HANDLERS.get(kind)
    if handler is None:
        return 404, {"error": f"no store endpoint {kind!r}"}
    try:
        payload = json.loads(body)
    except ValueError:
        return 400, {"error": "the request body is not JSON"}
    if store is None:
        return 503, {"error": "the worker's store is not open yet", "retry": True}
    return 200, await store.call(handler, payload)
