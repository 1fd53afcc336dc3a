"""Each leader timer's query (and each polled one) time with little and much history stored.

    python -m bench.timer_queries [--rows 10000,1000000] [--days-per-10k 2] [--runs 7]

One chDB store is filled with a steady stream of results (a request answered by three
versions: stable, a shadow candidate, an old one; a finding per result; shadow comparisons of
both candidates; the archived request; now and then a verdict on a finding). The stream runs
at the same rate whatever the size, newest rows first: the first size is the most recent slice
of it, each larger size adds older history behind it. So the traffic inside every query's
window is the same at every size once the history covers the window, and what a larger size
adds is history only. Each query (infra/queries.py, with the default windows, and the count
`replay --wait` polls) is timed at each size, median of --runs runs after one warm-up; the
figure is the ratio largest/smallest.

Writes bench/results/timer_queries-<time>.json and prints a table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agents.config import InferenceConfig, QuarantineConfig, RotationConfig
from agents.feedback import FeedbackFilterConfig
from agents.rotation import Window
from agents.settings import Settings
from agents.slo import SloConfig
from infra import queries, queries_cli
from infra.store import Store

from .core import RESULTS_DIR, write_named

TASK = "code-review"
VERSIONS = ("stable", "cand", "old")
DAY_MS = 24 * 3600 * 1000
CHUNK = 200_000  # rows per insert (a part, as a busy sink would leave after merges)


def timer_queries(now: datetime) -> dict[str, queries.Query]:
    """Every timer's query with the default configuration and settings."""
    settings = Settings()
    lag = settings.timer_max_lag_s
    rot = RotationConfig()
    end = now - timedelta(seconds=rot.settle_s)
    window = Window(end - timedelta(seconds=rot.window_s), end)
    measure = queries.measurement(TASK, "cand", "stable", window, lag)
    feedback = FeedbackFilterConfig()
    inference = InferenceConfig()
    quarantine = QuarantineConfig()
    started = now - timedelta(hours=1)
    return {
        "rotation_candidate": measure["candidate"],
        "rotation_agreement": measure["agreement"],
        "rotation_stable": measure["stable"],
        "slo_budget": queries.slo(TASK, SloConfig(), ["cand", "old"], lag),
        "feedback_verdicts": queries.verdicts(TASK, feedback.window_s, feedback.verdict_window_s,
                                              lag),
        "reconcile_unserved": queries.unserved(TASK, inference.reconcile_after_s,
                                               inference.reconcile_window_s),
        "retest_sample": queries.archive_sample(TASK, quarantine.retest_sample,
                                                settings.retest_sample_window_s),
        "retest_results": queries.retest_results(TASK, "old", "retest-old-1", started),
        "retest_stable_accuracy": queries.stable_accuracy(
            TASK, "stable", [f"r{i}" for i in range(quarantine.retest_sample)], started),
    }


def polled_queries(now: datetime) -> dict[str, queries.Query]:
    """What a command polls while it waits: `replay --wait`'s count of its run's results,
    for a replay of the last hour's requests to the old version (its rows here: the fill's
    'retest-old-1' run, one result in 97), and the count as it was before cbbadba (every
    row of the table with the run's id), for reference."""
    return {
        "replay_wait_count": queries_cli.run_count(TASK, "old", "retest-old-1",
                                                   now - timedelta(hours=1), now),
        "replay_wait_count_before": queries.Query(
            "SELECT count() AS n FROM interactions FINAL WHERE run_id = {run_id:String}",
            {"run_id": "retest-old-1"}),
    }


def fill(store: Store, lo: int, hi: int, ms_per_row: float) -> None:
    """Interaction rows lo..hi-1 of the stream (row i is i * ms_per_row before now), with
    their findings, comparisons, archived requests and verdicts."""
    for start in range(lo, hi, CHUNK):
        n = min(CHUNK, hi - start)
        rows = f"numbers({start}, {n})"
        when = f"now64(3) - toIntervalMillisecond(toUInt64(number * {ms_per_row}))"
        request = "concat('r', toString(intDiv(number, 3)))"
        version = "['stable', 'cand', 'old'][number % 3 + 1]"
        store.command(
            "INSERT INTO interactions (event_id, request_id, task, version_id, role, run_id, "
            "status, attempt, latency_ms, label, predicted_label, findings_total, "
            "findings_critical, findings_high, findings_medium, findings_low, findings_info, "
            "prompt_tokens, completion_tokens, cost_usd, repo, sha, occurred_at, accepted_at) "
            f"SELECT concat('e', toString(number)), {request}, '{TASK}', {version}, "
            "if(number % 3 = 0, 'primary', 'shadow'), if(number % 97 = 0, 'retest-old-1', ''), "
            "if(number % 23 = 0, 'error', 'ok'), 1, 50 + number % 400, 'feat', "
            "if(number % 5 = 0, 'fix', 'feat'), 1, 0, 1, 0, 0, 0, 100, 20, 0.001, 'o/r', "
            f"'sha', {when}, {when} - toIntervalMillisecond(number % 3 * 250) FROM {rows}")
        store.command(
            "INSERT INTO findings (event_id, request_id, task, version_id, role, run_id, "
            "fingerprint, rule_id, dimension, severity, confidence, path, line, message, source, "
            "occurred_at, accepted_at) "
            f"SELECT concat('e', toString(number)), {request}, '{TASK}', {version}, 'shadow', "
            "'', concat('fp', toString(number % 5000)), concat('R', toString(number % 40)), "
            f"'correctness', 'high', 0.8, 'a.py', 1, 'm', 'ruff', {when}, {when} FROM {rows}")
        store.command(
            "INSERT INTO shadow_comparisons (event_id, request_id, task, stable_version, "
            "candidate_version, stable_status, candidate_status, change_type_agree, "
            "stable_findings, candidate_findings, overlap, latency_delta_ms, occurred_at, "
            "accepted_at) "
            f"SELECT concat('c', toString(number)), {request}, '{TASK}', 'stable', "
            "if(number % 3 = 1, 'cand', 'old'), 'ok', 'ok', number % 7 != 0, 1, 1, 1, 5.0, "
            f"{when}, {when} FROM {rows} WHERE number % 3 != 0")
        store.command(
            "INSERT INTO events_archive (request_id, event_id, task, repo, sha, kind, "
            "source_topic, accepted, occurred_at) "
            f"SELECT {request}, concat('a', toString(number)), '{TASK}', 'o/r', 'sha', 'commit', "
            "'commits', '{\"request_id\": \"x\"}', "
            f"{when} - toIntervalMillisecond(500) FROM {rows} WHERE number % 3 = 0")
        store.command(
            "INSERT INTO feedback (event_id, fingerprint, verdict, version_id, actor, note, "
            "occurred_at) "
            "SELECT concat('f', toString(number)), concat('fp', toString(number % 5000)), "
            "if(number % 4 = 0, 'true_positive', 'false_positive'), '', 'me', '', "
            f"{when} FROM {rows} WHERE number % 50 = 0")


def settle(store: Store, limit_s: float = 120.0) -> None:
    """Wait for the background merges of the fill to end, so that they do not share the CPU
    with the queries timed (a live store merges a little at a time)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if store.query("SELECT count() FROM system.merges").rows[0][0] == 0:
            return
        time.sleep(0.5)


def time_query(store: Store, query: queries.Query, runs: int) -> dict:
    store.query(query.sql, query.params)  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        store.query(query.sql, query.params)
        times.append((time.perf_counter() - t0) * 1000)
    return {"median_ms": round(statistics.median(times), 3), "min_ms": round(min(times), 3),
            "max_ms": round(max(times), 3)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.timer_queries", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="10000,1000000",
                    help="interaction rows stored at each measurement, ascending")
    ap.add_argument("--days-per-10k", type=float, default=2.0,
                    help="how much time 10,000 interaction rows span (the stream's rate)")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--dir", type=Path, default=None, help="chDB directory (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    args = ap.parse_args(argv)
    sizes = sorted(int(x) for x in args.rows.split(","))
    ms_per_row = args.days_per_10k * DAY_MS / 10_000
    directory = args.dir or Path(tempfile.mkdtemp(prefix="reviewbus-timers-")) / "ch"
    store = Store.connect(f"chdb://{directory}")
    store.migrate()
    out: dict = {"bench": "timer_queries", "started": datetime.now(UTC).isoformat(),
                 "rows": sizes, "days_per_10k": args.days_per_10k, "runs": args.runs,
                 "history_days": {}, "fill_s": {}, "queries": {}}
    stored = 0
    try:
        for size in sizes:
            t0 = time.perf_counter()
            fill(store, stored, size, ms_per_row)
            stored = size
            out["fill_s"][str(size)] = round(time.perf_counter() - t0, 1)
            settle(store)
            out["history_days"][str(size)] = round(size * ms_per_row / DAY_MS, 2)
            counts = {t: store.query(f"SELECT count() FROM {t}").rows[0][0]
                      for t in ("interactions", "findings", "shadow_comparisons",
                                "events_archive", "feedback")}
            out.setdefault("table_rows", {})[str(size)] = counts
            print(f"{size:>9,} interaction rows stored ({out['history_days'][str(size)]} days; "
                  f"filled in {out['fill_s'][str(size)]} s): {counts}", flush=True)
            now = datetime.now(UTC)
            for name, query in {**timer_queries(now), **polled_queries(now)}.items():
                got = time_query(store, query, args.runs)
                rows = len(store.query(query.sql, query.params).rows)
                out["queries"].setdefault(name, {})[str(size)] = {**got, "result_rows": rows}
    finally:
        store.close()
    small, large = str(sizes[0]), str(sizes[-1])
    head = f"{'query':<24}" + "".join(f"{int(s):>12,} rows" for s in sizes) + "   ratio"
    print("\nmedian query time (ms)\n" + head)
    for name, by_size in out["queries"].items():
        ratio = by_size[large]["median_ms"] / max(by_size[small]["median_ms"], 1e-9)
        by_size["ratio"] = round(ratio, 2)
        print(f"{name:<24}" + "".join(f"{by_size[str(s)]['median_ms']:>17.2f}" for s in sizes)
              + f"   {ratio:5.2f}")
    path = write_named(out, args.out, "timer_queries")
    print(f"\nwrote {path}")
    return out


if __name__ == "__main__":
    main()
