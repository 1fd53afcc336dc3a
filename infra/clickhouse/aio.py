"""AsyncStore: a store for asyncio code, every call on one dedicated thread."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from agents.errors import StoreError
from agents.settings import Settings
from schemas import Event

from .opening import open_store
from .protocol import QueryResult

if TYPE_CHECKING:
    from infra.event_rows import EventRows

    from .served import RemoteStore
    from .store import Store

T = TypeVar("T")


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

    async def insert_event_rows(self, rows: EventRows) -> int:
        return await self._submit(self._require().insert_event_rows, rows)

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
