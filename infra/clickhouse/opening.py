"""open_store: the configured store, from settings, migrated; or the worker's, when it owns it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from agents.errors import StoreBusy, StoreError
from agents.settings import Settings

from .auth import ensure_token, read_token
from .dsn import chdb_path, one_line
from .errors import StoreUnauthorized
from .lock import StoreLock
from .served import RemoteStore
from .store import Store

log = logging.getLogger("infra.store")


def open_store(settings: Settings) -> Store | RemoteStore:
    """The configured store, migrated. An embedded directory owned by another process is
    reached through that process's worker (RemoteStore, with the token of the same home),
    or StoreBusy when it cannot be. The process that owns an embedded directory makes sure
    the home has a store token (auth.py): it is the one that will serve it."""
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
        if lock is not None:
            try:
                ensure_token(settings.home)
            except OSError as exc:
                raise StoreError(f"cannot create the store token in {settings.home}: {exc}") from exc
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
        remote = RemoteStore(str(web_url), token=read_token(settings.home))
    except (OSError, ValueError, KeyError, TypeError, StoreError) as exc:
        raise StoreBusy(f"{busy}, and {info} names no worker to ask; stop that process "
                        "or point REVIEWBUS_CLICKHOUSE at a ClickHouse server") from exc
    try:
        remote.query("SELECT 1")
    except StoreUnauthorized:
        raise
    except StoreError as exc:
        raise StoreBusy(one_line(f"{busy}, and its worker at {remote.web_url} "
                                 f"does not answer: {exc}")) from exc
    return remote
