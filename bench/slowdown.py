"""Does a worker slow down with the events it has carried? (issue 17, part 3)

    python -m bench.slowdown                       # 1 broker, 1 worker (no-op), 5 runs x 3000
    python -m bench.slowdown --shadows 1 --runs 4 --events 2000 --label shadow1
    python -m bench.slowdown --profile /tmp/profiles/fresh   # py-spy during each run

One embedded broker and one worker with the no-op config (bench/pipeline.py noop_config),
then consecutive runs of N events on the same worker. Per run: the pipeline's output rate
(pipeline_throughput), and afterwards the worker's store row counts, active parts per table
(system.parts) and the time of the leader's periodic queries, asked through the worker's own
store endpoint (so the time includes any wait behind the store thread). With --profile, a
`py-spy record --idle --threads` of the worker covers each run (collapsed stacks, raw format).
The figure: last run's throughput / first run's. JSON: bench/results/slowdown-<label>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .core import RESULTS_DIR, machine_info, ratio
from .pipeline import STABLE, noop_config, pipeline_throughput, settle
from .stack import Broker, Worker

TABLES = ("interactions", "findings", "shadow_comparisons", "events_archive", "failures",
          "lifecycle", "healing_actions", "dead_letters", "feedback")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def leader_queries(task: str, shadows: int) -> dict[str, str]:
    """The SQL of the leader's periodic timers, built as the worker builds it (default
    settings), as of the code under test: the builders are being rewritten, so a builder
    that is gone or changed is skipped (and said) rather than failing the run.
    unserved_sql lives in streams/flows/healing.py, which imports the Faust app: its text
    (as of this driver) is rebuilt here rather than importing the app."""
    q = _quote(task)
    out = {"reconcile_unserved": (
        f"SELECT request_id, accepted FROM events_archive FINAL WHERE task = {q} "
        "AND occurred_at >= now64(3) - toIntervalMillisecond(3600000) "
        "AND occurred_at <= now64(3) - toIntervalMillisecond(120000) "
        "AND request_id NOT IN (SELECT request_id FROM interactions FINAL "
        f"WHERE task = {q} AND run_id = '' AND role IN ('primary', 'canary', 'fallback')) "
        "ORDER BY occurred_at LIMIT 500")}
    candidates = [f"noop-shadow{i}" for i in range(shadows)]

    def feedback_verdicts() -> dict[str, str]:
        from agents import feedback

        return {"feedback_verdicts": feedback.verdict_sql(
            task, feedback.FeedbackFilterConfig().window_s)}

    def slo_budget() -> dict[str, str]:
        from agents import slo

        return {"slo_budget": slo.query_for(task, slo.SloConfig(), candidates)}

    def rotation() -> dict[str, str]:
        from agents.rotation import measurement_sql

        return {f"rotation_{name}": sql for name, sql in
                measurement_sql(task, candidates[0], STABLE, _window()).items()}

    for build in (feedback_verdicts, *((slo_budget, rotation) if candidates else ())):
        try:
            out.update(build())
        except (ImportError, AttributeError, TypeError, ValueError) as exc:
            log(f"{build.__name__} query skipped (its builder changed): {exc}")
    return out


def _window():
    from agents.rotation import Window
    from schemas import utcnow

    now = utcnow()
    return Window(start=now.replace(year=now.year - 1), end=now)


def store_state(w: Worker, queries: dict[str, str]) -> dict[str, Any]:
    state: dict[str, Any] = {}
    try:
        rows = w.query("SELECT table, count() AS parts, sum(rows) AS rows FROM system.parts "
                       "WHERE active AND database = currentDatabase() GROUP BY table")
        state["parts"] = {r["table"]: r["parts"] for r in rows if r["table"] in TABLES}
        state["rows"] = {r["table"]: r["rows"] for r in rows if r["table"] in TABLES}
    except Exception as exc:  # noqa: BLE001 - a measurement, not the subject
        state["parts_error"] = str(exc)
    timings: dict[str, float] = {}
    for name, sql in queries.items():
        t = time.perf_counter()
        try:
            w.query(sql)
            timings[name] = round((time.perf_counter() - t) * 1000, 1)
        except Exception as exc:  # noqa: BLE001
            timings[name] = None  # type: ignore[assignment]
            state.setdefault("query_errors", {})[name] = str(exc)[:200]
    state["query_ms"] = timings
    state["rss_mib"] = w.rss_mib()
    return state


def cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of a process and its threads so far (/proc/pid/stat)."""
    if not pid:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def start_profile(pid: int, out: Path, seconds: int, native: bool) -> subprocess.Popen:
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid),
           "--duration", str(seconds), "--idle", "--threads", "--format", "raw",
           "--rate", "50", "-o", str(out), "--nonblocking"]
    if native:
        cmd.append("--native")
        cmd.remove("--nonblocking")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.slowdown", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--events", type=int, default=3000)
    p.add_argument("--shadows", type=int, default=0)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--label", default="run")
    p.add_argument("--profile", default=None, help="directory for py-spy raw stacks per run")
    p.add_argument("--profile-seconds", type=int, default=20)
    p.add_argument("--native", action="store_true", help="py-spy --native (slower to sample)")
    p.add_argument("--settle", action="store_true", help="wait for the sink between runs")
    p.add_argument("--restart-last", action="store_true",
                   help="restart the worker (same topics, same store) before the last run: "
                        "still slow means the cause is not in the worker process")
    p.add_argument("--new-worker-last", action="store_true",
                   help="a new worker with new topics and a new store, on the same broker, for "
                        "the last run: fast again means the cost is in the partitions read")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="rb-slowdown-"))
    broker = Broker(home / "broker")
    worker = Worker(home / "w", broker.address, noop_config(args.shadows),
                    partitions=args.partitions)
    result: dict[str, Any] = {"machine": machine_info(), "args": vars(args), "runs": []}
    started = time.monotonic()
    try:
        worker.start()
        assert worker.proc is not None
        log(f"worker pid {worker.proc.pid}, home {home}")
        queries = leader_queries("code-review", args.shadows)
        result["queries"] = queries
        result["before"] = store_state(worker, queries)
        for i in range(args.runs):
            if args.restart_last and i == args.runs - 1 and i > 0:
                worker.stop()
                worker.start()
                log(f"worker restarted: pid {worker.proc.pid}")
            if args.new_worker_last and i == args.runs - 1 and i > 0:
                worker.stop()
                worker = Worker(home / "w2", broker.address, noop_config(args.shadows),
                                partitions=args.partitions)
                worker.start()
                assert worker.proc is not None
                log(f"new worker (new topics, new store), same broker: pid {worker.proc.pid}")
            prof = None
            if args.profile:
                prof = start_profile(worker.proc.pid, Path(args.profile) / f"run{i}.txt",
                                     args.profile_seconds, args.native)
            cpu0 = {"worker": cpu_s(worker.proc.pid), "broker": cpu_s(broker.info.pid)}
            t0 = time.monotonic()
            run = asyncio.run(pipeline_throughput(worker, args.events, log))
            dt = time.monotonic() - t0
            cpu1 = {"worker": cpu_s(worker.proc.pid), "broker": cpu_s(broker.info.pid)}
            run["cpu_share"] = {k: round((cpu1[k] - cpu0[k]) / dt, 3)
                                for k in cpu0 if cpu0[k] is not None and cpu1[k] is not None}
            if prof is not None:
                prof.wait(timeout=args.profile_seconds + 60)
            if args.settle:
                settle(worker)
            state = store_state(worker, queries)
            run.update(state=state, elapsed_s=round(time.monotonic() - started, 1))
            result["runs"].append(run)
            log(f"run {i}: {run['events_per_s'] or 0:.1f} ev/s  rows "
                f"{state.get('rows', {}).get('interactions')}  parts {state.get('parts')}  "
                f"query ms {state['query_ms']}  rss {state['rss_mib']} MiB  "
                f"cpu (cores) {run['cpu_share']}")
    finally:
        worker.stop()
        broker.stop()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    rates = [r["events_per_s"] for r in result["runs"]]
    result["events_per_s"] = rates
    result["last_over_first"] = ratio(rates[-1], rates[0]) if rates else None
    result["wall_s"] = round(time.monotonic() - started, 1)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"slowdown-{args.label}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=True, default=str))
    log(f"rates {[round(r or 0, 1) for r in rates]}  last/first "
        f"{result['last_over_first'] and round(result['last_over_first'], 2)}  -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
