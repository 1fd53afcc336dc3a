"""What a shadow costs, in CPU per served commit: the worker's, the broker's, the load's.

    python -m bench.shadow_cpu [--events 10000] [--shadows 0,1,3] [--out DIR]

Per configuration (0, 1, 3 no-op shadows beside the no-op stable version, bench/pipeline.py
`noop_config`) a fresh embedded broker and a fresh worker, warmed, then one settled throughput
trial of --events commits. CPU seconds (user + system, /proc) of the worker process and of the
broker are read before the trial and after the worker settled (its sink stored the last rows),
so the figure holds every hop's work for those commits, the sink's included, and a second or
two of idle polling (about 6 % of a core: under 15 us per commit at 10,000). `make bench`'s
shadow figures are throughput ratios; this says where the extra work goes.

Writes bench/results/shadow-cpu-<time>.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from .core import RESULTS_DIR, write_named
from .pipeline import _warm, noop_config, pipeline_throughput, settle
from .slowdown import cpu_s
from .stack import Broker, Worker


def measure(home: Path, shadows: int, events: int, log) -> dict:
    """One configuration on a broker of its own: the embedded broker slows with its history
    (docs/operations/long-running.md), and a worker measured after others on one broker ran
    slower in each pair of the same configuration (bench/results/shadow-cpu-*-runs.txt)."""
    broker = Broker(home / "broker")
    w = Worker(home / "worker", broker.address, noop_config(shadows), partitions=4)
    try:
        w.start()
        asyncio.run(_warm(w))
        settle(w)
        before = _cpu_now(w, broker)
        trial = asyncio.run(pipeline_throughput(w, events, log))
        settled = settle(w)
        after = _cpu_now(w, broker)
    finally:
        w.stop()
        broker.stop()
    us = {k: round(1e6 * (after[k] - before[k]) / events, 1)
          for k in before if before[k] is not None and after[k] is not None}
    log(f"  {shadows} shadow(s): {trial['events_per_s_wall']:,.0f} events/s (wall); CPU us per "
        f"commit: " + ", ".join(f"{k} {v:,.0f}" for k, v in us.items()))
    return {"shadows": shadows, "events": events, "settled": settled,
            "events_per_s": trial["events_per_s"], "events_per_s_wall": trial["events_per_s_wall"],
            "cpu_us_per_commit": us}


def with_ratios(runs: list[dict]) -> list[dict]:
    """Each run's CPU per commit over the first run's, per process."""
    base = runs[0]["cpu_us_per_commit"]
    return [{**run, "ratio_to_first": {k: round(v / base[k], 2)
                                       for k, v in run["cpu_us_per_commit"].items()
                                       if base.get(k)}}
            for run in runs]


def _cpu_now(w: Worker, broker: Broker) -> dict[str, float | None]:
    """CPU seconds so far of the worker, the broker and this process (the load)."""
    own = os.times()
    return {"worker": cpu_s(w.proc.pid if w.proc else None), "broker": cpu_s(broker.info.pid),
            "load": own.user + own.system}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.shadow_cpu", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--shadows", default="0,1,3", help="shadow counts, one worker each")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR)
    ap.add_argument("--dir", type=Path, default=None,
                    help="where the brokers and workers live (default: a temp dir, removed)")
    args = ap.parse_args(argv)
    home = args.dir or Path(tempfile.mkdtemp(prefix="reviewbus-shadow-cpu-"))
    try:
        runs = with_ratios([measure(home / f"{i}-{k}-shadows", int(k), args.events, print)
                            for i, k in enumerate(args.shadows.split(","))])
    finally:
        if args.dir is None:
            shutil.rmtree(home, ignore_errors=True)
    base = runs[0]["cpu_us_per_commit"]
    out = {"bench": "shadow_cpu", "started": datetime.now(UTC).isoformat(),
           "events": args.events, "runs": runs}
    print(f"\n{'shadows':>8} {'events/s':>9} " + " ".join(f"{k + ' us':>11}" for k in base))
    for run in runs:
        print(f"{run['shadows']:>8} {run['events_per_s_wall']:>9,.0f} "
              + " ".join(f"{run['cpu_us_per_commit'].get(k, 0):>11,.0f}" for k in base))
    path = write_named(out, args.out, "shadow-cpu")
    print(f"\nwrote {path}")
    return out


if __name__ == "__main__":
    main()
