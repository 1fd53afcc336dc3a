"""The crash guard's files: a marker per batch in flight, and the history of worker deaths.

Every batch leaves a marker (pid, version, request ids) in a file while it runs (one file per
concurrent batch slot, empty between batches); a worker that dies leaves its markers behind.
At start, collect_deaths() turns the markers of dead processes into entries of crashes.json,
which agents.health.crash_verdicts() judges. CrashGuard also runs the batches of suspect
versions alone, so the next death is attributable.
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
        self._free: list[_Marker] = []
        # The process's own marker names start with this: pid and start time, so the markers
        # of an earlier process with the same pid (pid 1 in a container restarted in place by
        # its runtime) are told from ours (collect_deaths `mine`).
        self.prefix = f"{os.getpid()}-{time.time_ns() // 1_000_000}-"

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
        marker = self._take_marker()
        if marker is not None:
            marker.mark(version_id, request_ids)
        completed = False
        try:
            yield
            completed = True
        finally:
            if marker is not None:
                marker.clear()
                self._free.append(marker)
            async with cond:
                self._running -= 1
                if alone:
                    self._exclusive = False
                    if completed:
                        self.suspects.discard(version_id)  # it ran a batch and we live
                cond.notify_all()

    def _take_marker(self) -> _Marker | None:
        if self._free:
            return self._free.pop()
        path = self.directory / f"{self.prefix}{next(self._seq)}.json"
        try:
            try:
                return _Marker(path)
            except FileNotFoundError:  # the first marker (or someone removed the directory)
                self.directory.mkdir(parents=True, exist_ok=True)
                return _Marker(path)
        except OSError:  # a full disk must not stop inference; only the attribution is lost
            log.warning("cannot create the in-flight marker %s", path, exc_info=True)
            return None


class _Marker:
    """One marker file per concurrent batch slot, kept open and rewritten in place: empty while
    the slot is idle, the batch's JSON while it runs. Two system calls per batch (pwrite,
    ftruncate) instead of creating, renaming and removing a file per batch, which py-spy showed
    at ~6 % of the worker's CPU with the no-op backend (bench/). A death in the middle of a
    write leaves unreadable JSON: collect_deaths drops it (that batch's attribution is lost)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)

    def mark(self, version_id: str, request_ids: list[str]) -> None:
        data = json.dumps({"pid": os.getpid(), "version": version_id, "at": time.time(),
                           "requests": request_ids[:100]}).encode()
        try:
            if os.fstat(self.fd).st_nlink == 0:  # removed while open: write a new one
                os.close(self.fd)
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            os.pwrite(self.fd, data, 0)  # the file is empty (clear): no stale tail to cut
        except OSError:
            log.warning("cannot write the in-flight marker %s", self.path, exc_info=True)

    def clear(self) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)


def _pid_of_name(path: Path) -> int | None:
    head = path.name.split("-", 1)[0]
    return int(head) if head.isdigit() else None


def collect_deaths(directory: Path, history_file: Path, keep_s: float,
                   mine: str | None = None) -> tuple[list, list]:
    """Turn the markers of dead workers into history entries; (whole history, new entries).

    `mine`: the name prefix of this process's markers (CrashGuard.prefix); a marker with our
    pid and another prefix is an earlier process's. Without it, every marker with our pid is
    taken for ours."""
    dead: dict[int, dict[str, Any]] = {}
    me = os.getpid()
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        owner = _pid_of_name(path)
        if mine is not None and path.name.startswith(mine):
            continue  # ours
        if owner == me and mine is None:
            continue  # ours, as far as can be told
        if owner is not None and owner != me and pid_alive(owner):
            continue  # a live worker's slot: idle (empty) or running a batch
        try:
            marker = json.loads(path.read_text())
            pid = int(marker["pid"])
        except (OSError, ValueError, KeyError, TypeError):  # idle slot, or a torn write
            path.unlink(missing_ok=True)
            continue
        if owner is None and (pid == me or pid_alive(pid)):
            continue  # not named by a CrashGuard: judged by its content, as it says
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
