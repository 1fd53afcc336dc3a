"""Benchmarks 5 and 6: `reviewbus replay` with the analyzer backend, and the analyzer versions'
own per-commit latency on real commits, with a plot against diff size.

The commits: the newest N commits of one real repository (googleapis/python-bigquery) from the
shared dataset `commits-train.jsonl.gz`: real messages and real unified diffs. The dataset has no
post-image files, so each changed `.py` file is synthesised from its diff, line-preserving:
every post-image line the diff shows (context and added lines) at its real line number, blank
lines elsewhere. Line numbers match the diff (so `only_changed_lines` works as in production);
files are shorter than the real ones, and a hunk that starts inside a block may not parse
(`parse_ok_share` in the JSON says how many did).
"""

from __future__ import annotations

import ast
import asyncio
import gzip
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from agents.intake import accept_input
from agents.settings import Limits
from infra.config_file import load_config
from schemas import ChangedFile, CommitEvent, NormalizedChange

from . import load
from .core import RESULTS_DIR, ROOT, latency_summary, percentile, ratio, trials_summary
from .stack import Worker

DATASET = Path(os.environ.get("REVIEWBUS_BENCH_DATASET",
                              "/work/shared/datasets/commits-train.jsonl.gz"))
REPO = "googleapis/python-bigquery"
_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,\d+)? @@")


def post_images(diff: str) -> dict[str, dict[int, str]]:
    """path -> {new line number: text} for every post-image line a unified diff shows."""
    out: dict[str, dict[int, str]] = {}
    path, line = None, 0
    for raw in diff.split("\n"):
        if raw.startswith("diff --git "):
            path = None
        elif raw.startswith("+++ "):
            target = raw[4:].strip()
            path = None if target == "/dev/null" else target.removeprefix("b/")
            if path is not None:
                out.setdefault(path, {})
        elif (m := _HUNK.match(raw)) and path is not None:
            line = int(m.group(1))
        elif path is not None and line and raw[:1] in (" ", "+"):
            out[path][line] = raw[1:]
            line += 1
    return out


def synthesize(row: dict) -> CommitEvent:
    images = post_images(row["diff"])
    files = []
    for f in row["files"]:
        lines = images.get(f["path"])
        content = None
        if f["path"].endswith(".py") and lines:
            content = "\n".join(lines.get(i, "") for i in range(1, max(lines) + 1)) + "\n"
        status = "added" if f"--- /dev/null\n+++ b/{f['path']}" in row["diff"] else "modified"
        if f["path"] not in images and f.get("added") == 0:
            status = "deleted"
        files.append(ChangedFile(path=f["path"], status=status, added=f.get("added"),
                                 deleted=f.get("deleted"), content=content))
    body = row["message"].split("\n", 1)
    message = row["subject"] + (f"\n{body[1]}" if len(body) > 1 else "")
    return CommitEvent(event_id=f"ds-{row['sha'][:16]}", repo=row["repo"], sha=row["sha"],
                       message=message, diff=row["diff"], diff_truncated=row["diff_truncated"],
                       files=files)


def dataset_commits(n: int, repo: str = REPO) -> list[tuple[CommitEvent, dict]]:
    """The newest n commits of repo (the dataset lists each repository newest first)."""
    out = []
    with gzip.open(DATASET, "rt") as fh:
        for line in fh:
            row = json.loads(line)
            if row["repo"] != repo:
                continue
            out.append((synthesize(row), row))
            if len(out) >= n:
                break
    return out


def change_of(event: CommitEvent) -> NormalizedChange:
    """What the inference agent sees: the change after intake (Conventional prefix masked)."""
    return accept_input(event.model_dump_json().encode(), source_topic="commits", kind="commit",
                        task="code-review", limits=Limits()).change


def diff_size(row: dict) -> int:
    return sum((f.get("added") or 0) + (f.get("deleted") or 0) for f in row["files"])


def _parses(content: str) -> bool:
    try:
        ast.parse(content)
        return True
    except (SyntaxError, ValueError):
        return False


# ---- 6: per-commit latency of the default versions -------------------------------------


async def _per_commit(spec, changes: list[NormalizedChange]) -> list[float]:
    from agents.backends.base import build_backend

    backend = build_backend(spec)
    out = []
    try:
        for change in changes:
            t = time.perf_counter()
            await backend.infer([change])
            out.append((time.perf_counter() - t) * 1000)
    finally:
        await backend.close()
    return out


def _growth(sizes: list[int], ms: list[float]) -> dict[str, Any]:
    bins = [(0, 0), (1, 20), (21, 100), (101, 500), (501, 10**9)]
    out: dict[str, Any] = {}
    for lo, hi in bins:
        xs = [m for s, m in zip(sizes, ms) if lo <= s <= hi]
        key = f"{lo}-{hi if hi < 10**9 else 'inf'}"
        out[key] = {"n": len(xs), "p50_ms": percentile(xs, 50), "p90_ms": percentile(xs, 90)}
    try:
        import numpy as np

        slope, intercept = np.polyfit(np.array(sizes, float), np.array(ms, float), 1)
        out["linear_fit"] = {"ms_per_100_changed_lines": float(slope) * 100,
                             "intercept_ms": float(intercept)}
    except Exception:  # noqa: BLE001 - numpy comes with matplotlib; the fit is a nicety
        pass
    return out


def plot(path: Path, sizes: list[int], per_version: dict[str, list[float]]) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for (version, ms), marker in zip(per_version.items(), "os^dv"):
        ax.scatter([max(s, 1) for s in sizes], ms, s=14, alpha=0.6, marker=marker, label=version)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("diff size (changed lines, added + deleted; 0 plotted at 1)")
    ax.set_ylabel("latency per commit (ms)")
    ax.set_title(f"analyzer versions on the newest {len(sizes)} commits of {REPO}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def run_latency(commits: list[tuple[CommitEvent, dict]], label: str | None, log) -> dict:
    config = load_config(None)
    changes = [change_of(e) for e, _ in commits]
    sizes = [diff_size(r) for _, r in commits]
    py_files = [f.content for c in changes for f in c.files if f.content and f.path.endswith(".py")]
    per_version: dict[str, list[float]] = {}
    versions: dict[str, Any] = {}
    for spec in config.versions:
        ms = asyncio.run(_per_commit(spec, changes))
        per_version[spec.id] = ms
        with_py = [m for m, c in zip(ms, changes) if any(
            f.content and f.path.endswith(".py") for f in c.files)]
        versions[spec.id] = {**latency_summary(ms), "mean_ms": sum(ms) / len(ms),
                             "with_python_files": latency_summary(with_py),
                             "growth_by_diff_size": _growth(sizes, ms)}
        log(f"  {spec.id}: p50 {versions[spec.id]['p50_ms']:.0f} ms, p99 "
            f"{versions[spec.id]['p99_ms']:.0f} ms per commit ({len(ms)} commits)")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    png = plot(RESULTS_DIR / f"analyzer_latency{'-' + label if label else ''}.png", sizes,
               per_version)
    return {"repo": REPO, "commits": len(commits), "versions": versions,
            "commits_with_python_files": sum(1 for c in changes if any(
                f.content and f.path.endswith(".py") for f in c.files)),
            "python_files": len(py_files),
            "parse_ok_share": (sum(_parses(c) for c in py_files) / len(py_files))
            if py_files else None,
            "plot": str(png.relative_to(ROOT)) if png else None,
            "source": "shared dataset commits-train.jsonl.gz, newest commits of the repo; "
                      "post-image .py files synthesised from the diff, line-preserving"}


# ---- 5: replay through the bus vs the analyzers in a loop ------------------------------


def replay_config() -> dict:
    """A no-op stable (so the archive fills fast) and the default analyzer versions, registered
    (no live traffic): replay then measures only what it sends to one analyzer version."""
    config = load_config(None)
    versions: list[dict[str, Any]] = [
        {"id": "noop-stable", "backend": "fake", "initial_state": "stable", "timeout_s": 60}]
    for spec in config.versions:
        v = spec.model_dump(mode="json", exclude={"task"})
        v["initial_state"] = "registered"
        versions.append(v)
    return {"task": config.task, "versions": versions,
            "rotation": {"interval_s": 3600}, "inference": config.inference.model_dump()}


async def _direct_loop(spec, changes: list[NormalizedChange], batch: int) -> float:
    from agents.backends.base import build_backend

    backend = build_backend(spec)
    try:
        start = time.perf_counter()
        for i in range(0, len(changes), batch):
            await backend.infer(changes[i:i + batch])
        return len(changes) / (time.perf_counter() - start)
    finally:
        await backend.close()


def paired_ratio(replayed: list[float], direct: list[float]) -> dict[str, Any]:
    """Each trial's replay rate over the direct rate measured beside it (the same minutes of
    the machine), summarised like a trial: the median is the figure."""
    return trials_summary([ratio(r, d) for r, d in zip(replayed, direct, strict=True)])


def run_replay(home: Path, broker: str, commits: list[tuple[CommitEvent, dict]],
               partitions: int, log, trials: int = 1) -> dict:
    """Replay trials paired with direct trials: after the archive is filled, each trial runs
    the analyzers directly (the ceiling, the worker paused: Worker.paused) and `reviewbus
    replay` back to back, the order swapped every other trial, and the ratio is the median of
    the pairs' ratios. Measured one after the other (every direct trial, then every replay)
    the two were minutes apart, and on this shared host the direct rate alone moved 29-41
    commits/s between runs."""
    config = load_config(None)
    stable = next(v for v in config.versions if v.initial_state.value == "stable")
    changes = [change_of(e) for e, _ in commits]
    w = Worker(home, broker, replay_config(), partitions=partitions)
    w.start()
    try:
        messages = [(e.event_id, e.repo.encode(), e.model_dump_json().encode())
                    for e, _ in commits]
        asyncio.run(load.run_load(w.settings, broker, w.topic("commits"), w.topic("findings"),
                                  messages, load.request_id_of, timeout=300))
        deadline = time.monotonic() + 120
        while w.query("SELECT count() AS n FROM events_archive FINAL")[0]["n"] < len(commits):
            if time.monotonic() > deadline:
                raise TimeoutError("the archive did not fill")
            time.sleep(0.3)
        log(f"5. replay: {stable.id} on {len(commits)} commits, directly (the ceiling, in this "
            f"process, the worker paused) and by `reviewbus replay --to {stable.id} --limit "
            f"{len(commits)} --wait`, {trials} paired trial(s)")
        direct: list[float] = []
        runs: list[dict] = []

        def one_direct() -> None:
            with w.paused():  # as before the worker started: nothing else running
                direct.append(asyncio.run(_direct_loop(stable, changes,
                                                       config.inference.batch_size)))
            # Two direct runs meet at every other trial boundary: let the worker heartbeat
            # before the next pause, so it is never silent for two in a row.
            time.sleep(2 * w.settings.broker_heartbeat_interval_s)
            log(f"  direct: {direct[-1]:.1f} commits/s")

        def one_replay() -> None:
            runs.append(_replay_once(w, stable.id, len(commits), log))

        for trial in range(trials):
            for step in ((one_direct, one_replay) if trial % 2 == 0
                         else (one_replay, one_direct)):
                step()
        rates = [len(commits) / r["seconds"] for r in runs]
        middle = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
        run_id = middle["run_id"]
        stats = w.query(
            "SELECT count() AS n, countIf(status = 'ok') AS ok, "
            "quantile(0.5)(latency_ms) AS p50_ms, quantile(0.99)(latency_ms) AS p99_ms "
            f"FROM interactions FINAL WHERE run_id = '{run_id}'") if run_id else [{}]
        replayed, ceiling = trials_summary(rates), trials_summary(direct)
        pairs = paired_ratio(rates, direct)
        return {"version": stable.id, "commits": len(commits), "trials": trials,
                "replay_seconds": middle["seconds"],
                "replay_events_per_s": replayed, "direct_events_per_s": ceiling,
                "ratio": pairs["median"], "ratio_by_trial": pairs,
                "ratio_of_medians": ratio(replayed["median"], ceiling["median"]),
                "run_id": run_id, "run_interactions": stats[0] if stats else None,
                "phases_s": middle["phases"], "phases_s_by_trial": [r["phases"] for r in runs],
                "peak_rss_mib_worker": w.peak_rss_mib(),
                "method": "wall time of the `reviewbus replay --wait` command (CLI start, "
                          "archive read, send, until every interaction row is stored) vs. "
                          "the same backend's infer() on the same commits in batches of "
                          "inference.batch_size, in this process while the worker is paused "
                          "(SIGSTOP); "
                          "paired trials back to back, the order swapped every other one; "
                          "ratio: the median of the pairs' ratios (phases and interactions: "
                          "the median replay's)"}
    finally:
        w.stop()


def _replay_once(w: Worker, version: str, n: int, log) -> dict:
    """One `reviewbus replay --wait` of the last `n` archived commits, timed from outside."""
    env = {**os.environ, **w.env}
    started_ms = time.time() * 1000
    t = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "streams.cli", "replay", "--to", version,
                          "--limit", str(n), "--wait"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - t
    if out.returncode != 0:
        raise RuntimeError(f"replay failed: {out.stderr[-2000:]}")
    run_id = next((tok for tok in re.findall(r"run-[\w-]+", out.stdout + out.stderr)), None)
    phases = asyncio.run(_replay_phases(w, version, run_id, started_ms, seconds))
    log(f"  replay: {n / seconds:.1f} commits/s ({seconds:.2f} s incl. CLI start), run "
        f"{run_id}; " + ", ".join(f"{k} {v:.2f} s" for k, v in phases.items()))
    return {"seconds": seconds, "run_id": run_id, "phases": phases}


async def _replay_phases(w: Worker, version: str, run_id: str | None, started_ms: float,
                         seconds: float) -> dict[str, float]:
    """Where the replay command's time went, from the Kafka CreateTimes of its requests (sent
    by the CLI) and of their results (sent by the worker), against the command's start."""
    if not run_id:
        return {}

    def of_run(m) -> str | None:
        try:
            head = orjson.loads(m.value)
        except orjson.JSONDecodeError:
            return None
        return f"{run_id}:{head.get('request_id')}" if head.get("run_id") == run_id else None

    sent = await load.timestamps(w.settings, w.settings.kafka, w.topic(f"inference.{version}"),
                                 of_run, prefix=run_id)
    done = await load.timestamps(w.settings, w.settings.kafka, w.topic("results"), of_run,
                                 prefix=run_id)
    if not sent or not done:
        return {}
    first_sent, last_sent = min(sent.values()), max(sent.values())
    last_done = max(done.values())
    return {"start_to_first_request": (first_sent - started_ms) / 1000,
            "sending": (last_sent - first_sent) / 1000,
            "first_request_to_last_result": (last_done - first_sent) / 1000,
            "last_result_to_exit": seconds - (last_done - started_ms) / 1000}


def run_analyzers(home: Path, broker: str, *, commits: int, replay_commits: int,
                  partitions: int, log, label: str | None = None, trials: int = 1) -> dict:
    rows = dataset_commits(max(commits, replay_commits))
    log(f"6. analyzer latency: {min(commits, len(rows))} commits of {REPO}")
    latency = run_latency(rows[:commits], label, log)
    replay = run_replay(home / f"replay-{uuid.uuid4().hex[:4]}", broker, rows[:replay_commits],
                        partitions, log, trials)
    return {"analyzers": latency, "replay": replay}
