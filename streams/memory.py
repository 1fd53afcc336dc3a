"""The worker's memory, measured and kept in check (REVIEWBUS_MEMORY_*).

- `memory_report_interval_s` > 0: every interval, one JSON line in
  `<home>/memory-<pid>.jsonl`: the resident set (`/proc/self/statm`), glibc's heap as
  `mallinfo2()` sees it (bytes in use and bytes free inside the heap: free bytes that do not go
  back to the system are fragmentation, not a leak), and with `memory_trace` the Python
  allocations `tracemalloc` traces, with the 15 sites that grew most since the first report.
  It is how the soak run's RSS growth was told apart (docs/operations/long-running.md).
- `malloc_trim_interval_s` > 0: every interval, glibc's `malloc_trim(0)` returns the free
  pages of every heap arena to the system; the bytes it gave back are counted in
  `reviewbus_malloc_trimmed_bytes_total`.

Both are timers under the guard (streams/guard.py). Off where glibc is not the allocator.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import json
import os
import time
import tracemalloc
from typing import Any

from prometheus_client import Counter, Gauge

from .context import AppContext, log

MALLOC_BYTES = Gauge("reviewbus_malloc_bytes",
                     "glibc heap bytes of the worker, in use and free (fragmentation)", ["kind"])
TRIMMED = Counter("reviewbus_malloc_trimmed_bytes_total",
                  "Resident bytes given back to the system by malloc_trim")
_PAGE = os.sysconf("SC_PAGE_SIZE")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _libc() -> Any | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if libc is None or not hasattr(libc, "mallinfo2") or not hasattr(libc, "malloc_trim"):
        return None  # not glibc (musl, macOS): nothing to read or trim
    libc.mallinfo2.restype = _MallInfo2
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return libc


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def heap(libc: Any) -> dict[str, int]:
    """glibc's view: `in_use` allocated, `free` held in the heap, `mmapped` large blocks."""
    info = libc.mallinfo2()
    return {"in_use": info.uordblks, "free": info.fordblks, "mmapped": info.hblkhd,
            "arena": info.arena}


class MemoryReport:
    """The JSON lines of `memory_report_interval_s`."""

    def __init__(self, path: os.PathLike[str], libc: Any | None, trace: bool) -> None:
        self.path, self.libc, self.trace = path, libc, trace
        self.first: tracemalloc.Snapshot | None = None
        if trace and not tracemalloc.is_tracing():
            tracemalloc.start(1)

    def sample(self) -> dict[str, Any]:
        line: dict[str, Any] = {"at": round(time.time(), 1), "rss": rss_bytes()}
        if self.libc is not None:
            line["heap"] = heap(self.libc)
            for kind in ("in_use", "free"):
                MALLOC_BYTES.labels(kind=kind).set(line["heap"][kind])
        if self.trace and tracemalloc.is_tracing():
            current, peak = tracemalloc.get_traced_memory()
            line["traced"] = {"current": current, "peak": peak}
            snap = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__)])
            if self.first is None:
                self.first = snap
            else:
                grew = [s for s in snap.compare_to(self.first, "lineno") if s.size_diff > 0]
                line["grew"] = [[str(s.traceback[0]), s.size_diff, s.count_diff]
                                for s in grew[:15]]
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        return line


def trim(libc: Any) -> int:
    """malloc_trim(0); the resident bytes it gave back (0 when none)."""
    before = rss_bytes()
    libc.malloc_trim(0)
    released = max(0, before - rss_bytes())
    TRIMMED.inc(released)
    return released


def register(ctx: AppContext) -> None:
    settings = ctx.settings
    libc = _libc()
    if settings.memory_report_interval_s > 0:
        report = MemoryReport(settings.home / f"memory-{os.getpid()}.jsonl", libc,
                              settings.memory_trace)

        @ctx.timer(settings.memory_report_interval_s, name="memory_report")
        async def memory_report() -> None:
            await asyncio.to_thread(report.sample)

    if settings.malloc_trim_interval_s > 0 and libc is None:
        log.warning("REVIEWBUS_MALLOC_TRIM_INTERVAL_S is set, but the C library is not glibc: "
                    "nothing to trim")
    if settings.malloc_trim_interval_s > 0 and libc is not None:
        @ctx.timer(settings.malloc_trim_interval_s, name="malloc_trim")
        async def malloc_trim() -> None:
            released = await asyncio.to_thread(trim, libc)
            if released:
                log.info("malloc_trim gave %.1f MiB back to the system", released / 2**20)
