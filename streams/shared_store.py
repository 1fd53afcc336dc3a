"""The store of one home, shared by several workers: who hosts it, and what the others do.

An embedded (chDB) store lives in one process. With `reviewbus up --workers N` the first
worker to take the directory's lock (infra/clickhouse/lock.py) hosts it and answers
`/store/query` and `/store/insert` on its web port (streams/web.py, with the store token);
its `<home>/worker.json` names it. Every other worker reaches it over HTTP (RemoteStore).

When the hosting worker dies the kernel drops its lock. The next call of another worker
fails (StoreBusy: the host does not answer); `SharedStore` then opens the store again, which
either takes the lock (this worker becomes the host, announces itself in worker.json and
serves the others) or finds the new host in worker.json. Until one of them answers, the call
fails with StoreBusy, which the sink treats as an outage: it holds its batch unacked and
retries with backoff (streams/flows/sink.py), so no row is lost, only delayed. A restarted
worker that finds the store hosted simply joins as a client.

A ClickHouse server (REVIEWBUS_CLICKHOUSE=http://...) needs none of this: every worker opens
it directly.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from agents.errors import StoreBusy
from agents.settings import Settings
from infra.event_rows import EventRows
from infra.store import RemoteStore, Store, open_store
from schemas import Event

log = logging.getLogger("reviewbus")


class SharedStore:
    """Store or RemoteStore behind the store protocol, re-opened after the host is lost.

    `on_host(store)` runs when this process becomes the host after start (a takeover): the
    worker announces itself there. Calls come from one thread (AsyncStore's), the lock only
    guards a re-open against a concurrent close.
    """

    def __init__(self, settings: Settings, store: Store | RemoteStore,
                 on_host: Callable[[Store], None] | None = None) -> None:
        self.settings = settings
        self.store = store
        self.on_host = on_host
        self.takeovers = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SharedStore({self.store!r})"

    @property
    def hosting(self) -> bool:
        return isinstance(self.store, Store)

    def _call(self, name: str, *args: Any) -> Any:
        store = self.store
        try:
            return getattr(store, name)(*args)
        except StoreBusy:
            if isinstance(store, Store) or not self._reopen(store):
                raise
        return getattr(self.store, name)(*args)

    def _reopen(self, failed: Store | RemoteStore) -> bool:
        """After the host failed to answer: True when a working store replaced it."""
        with self._lock:
            if self.store is not failed:  # another call re-opened it meanwhile
                return True
            try:
                fresh = open_store(self.settings)
            except StoreBusy as exc:
                log.info("store: the hosting worker is gone and no other answers yet: %s", exc)
                return False
            self.store = fresh
        if isinstance(fresh, Store):
            self.takeovers += 1
            log.warning("store: the hosting worker is gone; this worker now hosts %s", fresh)
            if self.on_host is not None:
                self.on_host(fresh)
        else:
            log.warning("store: following the hosting worker at %s", fresh.web_url)
        return True

    def query(self, sql: str, params: dict[str, Any] | None = None, readonly: bool = True):
        return self._call("query", sql, params, readonly)

    def insert_events(self, events: Sequence[Event]) -> int:
        return self._call("insert_events", events)

    def insert_event_rows(self, rows: EventRows) -> int:
        return self._call("insert_event_rows", rows)

    def migrate(self) -> list[str]:
        return self._call("migrate")

    def command(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        return self._call("command", sql, params)

    def close(self) -> None:
        with self._lock:
            self.store.close()

    def __enter__(self) -> SharedStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
