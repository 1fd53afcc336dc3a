"""The crash guard's files: a marker per batch in flight, and the history of worker deaths.

Every batch leaves a marker file (pid, version, request ids) while it runs; a worker that dies
leaves its markers behind. At start, collect_deaths() turns the markers of dead processes into
entries of crashes.json, which agents.health.crash_verdicts() judges. CrashGuard also runs the
batches of suspect versions alone, so the next death is attributable.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from .procs import pid_alive

log = logging.getLogger("reviewbus")
HISTORY_MAX = 200  # worker deaths remembered


class CrashGuard:
    """Marker files of the batches in flight, and who runs alone after a worker death."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.suspects: set[str] = set()
        self.poison: dict[str, set[str]] = {}
        self.checked = asyncio.Event()
        self._cond: asyncio.Condition | None = None
        self._running = 0
        self._exclusive = False
        self._seq = itertools.count()

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    def is_poison(self, version_id: str, request_id: str) -> bool:
        return request_id in self.poison.get(version_id, ())

    @contextlib.asynccontextmanager
    async def slot(self, version_id: str, request_ids: list[str]) -> AsyncIterator[None]:
        cond = self._condition()
        alone = version_id in self.suspects
        async with cond:
            if alone:
                await cond.wait_for(lambda: self._running == 0 and not self._exclusive)
                self._exclusive = True
            else:
                await cond.wait_for(lambda: not self._exclusive)
            self._running += 1
        marker = self.directory / f"{os.getpid()}-{next(self._seq)}.json"
        try:
            # In the loop, not in a thread: a marker is one small write and a rename (tens of
            # microseconds on a local disk), and the thread hand-off cost more than the write
            # (py-spy, bench/: ~9 % of the worker's CPU with the no-op backend's batches).
            try:
                _write_marker(marker, version_id, request_ids)
            except FileNotFoundError:  # the first marker (or someone removed the directory)
                self.directory.mkdir(parents=True, exist_ok=True)
                _write_marker(marker, version_id, request_ids)
        except OSError:  # a full disk must not stop inference; only the attribution is lost
            log.warning("cannot write the in-flight marker %s", marker, exc_info=True)
        completed = False
        try:
            yield
            completed = True
        finally:
            with contextlib.suppress(OSError):
                marker.unlink()
            async with cond:
                self._running -= 1
                if alone:
                    self._exclusive = False
                    if completed:
                        self.suspects.discard(version_id)  # it ran a batch and we live
                cond.notify_all()


def _write_marker(path: Path, version_id: str, request_ids: list[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")  # never half a marker under the *.json name
    tmp.write_text(json.dumps({"pid": os.getpid(), "version": version_id, "at": time.time(),
                               "requests": request_ids[:100]}))
    tmp.replace(path)


def collect_deaths(directory: Path, history_file: Path, keep_s: float) -> tuple[list, list]:
    """Turn the markers of dead workers into history entries; (whole history, new entries)."""
    dead: dict[int, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            marker = json.loads(path.read_text())
            pid = int(marker["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            continue
        if pid == os.getpid() or pid_alive(pid):
            continue
        entry = dead.setdefault(pid, {"pid": pid, "at": 0.0, "inflight": {}})
        entry["at"] = max(entry["at"], float(marker.get("at", 0)), path.stat().st_mtime)
        entry["inflight"].setdefault(str(marker.get("version")), []).extend(
            str(r) for r in marker.get("requests") or [])
        path.unlink(missing_ok=True)
    try:
        history = json.loads(history_file.read_text())
        if not isinstance(history, list):
            history = []
    except (OSError, ValueError):
        history = []
    new = sorted(dead.values(), key=lambda e: e["at"])
    now = time.time()
    history = [h for h in [*history, *new] if isinstance(h, dict)
               and now - float(h.get("at", 0)) <= keep_s][-HISTORY_MAX:]
    if new:
        history_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = history_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(history))
        tmp.replace(history_file)
    return history, new
