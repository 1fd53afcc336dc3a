"""A/B of two checkouts of reviewbus on one broker: which code serves faster, and how soon.

    git worktree add /tmp/before <commit>
    python -m bench.code_ab --a /tmp/before --b . --rounds 3

Per checkout and round, in turn: a fresh no-op worker running that checkout's code (the
worker's working directory decides what `python -m streams.worker` imports), warmed, then
`--trials` throughput trials of `--events` events, each on an idle worker, then a paced run at
`--rate` events/s (routing and end-to-end latency, as `make bench` measures them). One JSON
line per run on stdout, and `bench/results/<stamp>-<label>.json`. The order is reversed every
other round, so the broker's growing history and drift in the machine's load hit both alike.
`make bench`'s figures move more between runs than most changes do; alternating runs on one
broker are how a change is told from that noise (docs/measurements/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import pipeline
from .core import RESULTS_DIR, write_results
from .stack import Broker, Worker


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def commit_of(root: Path) -> str:
    out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, check=False)
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "-uno"],
                           capture_output=True, text=True, check=False).stdout.strip()
    return (out.stdout.strip() or "?") + ("+changes" if dirty else "")


def alternating(rounds: int, items: list) -> list[tuple[int, object]]:
    """(round, item) in run order: the items in turn, reversed every other round, so that no
    item always runs first (or last) on the broker."""
    return [(r, item) for r in range(rounds) for item in (items if r % 2 == 0 else items[::-1])]


def one_run(home: Path, broker: str, root: Path, events: int, trials: int, rate: float,
            seconds: float, env: dict[str, str] | None = None) -> dict:
    """A fresh no-op worker of the checkout at `root` (with `env`): warmed, `trials` settled
    throughput trials, then a paced run; the figures of one JSON line."""
    w = Worker(home, broker, pipeline.noop_config(0), partitions=4, root=root, extra_env=env)
    w.start()
    try:
        asyncio.run(pipeline._warm(w))
        tps = pipeline.settled_trials(w, events, trials, log) if trials else []
        pipeline.settle(w)
        lat = asyncio.run(pipeline.pipeline_latency(w, rate, seconds, log))
    finally:
        w.stop()
    route, e2e = lat["commit_to_inference_request"], lat["commit_to_findings"]
    return {"span_events_per_s": [t["events_per_s"] for t in tps],
            "wall_events_per_s": [t["events_per_s_wall"] for t in tps], "rate": rate,
            "achieved_per_s": lat["achieved_per_s"],
            "route_p50_ms": route["p50_ms"], "route_p99_ms": route["p99_ms"],
            "e2e_p50_ms": e2e["p50_ms"], "e2e_p99_ms": e2e["p99_ms"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.code_ab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", type=Path, required=True, help="checkout A (the baseline)")
    p.add_argument("--b", type=Path, required=True, help="checkout B")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--events", type=int, default=5000)
    p.add_argument("--trials", type=int, default=1, help="throughput trials per run (0: none)")
    p.add_argument("--rate", type=float, default=900.0)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--label", default="code-ab")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    args = p.parse_args(argv)
    sides = {"a": args.a.resolve(), "b": args.b.resolve()}
    commits = {side: commit_of(root) for side, root in sides.items()}
    log(f"A = {sides['a']} ({commits['a']}), B = {sides['b']} ({commits['b']})")
    home = Path(tempfile.mkdtemp(prefix="reviewbus-code-ab-"))
    broker = Broker(home / "broker")
    runs = []
    try:
        for r, side in alternating(args.rounds, ["a", "b"]):
            run = {"round": r, "side": side, "commit": commits[side],
                   **one_run(home / f"{side}{r}", broker.address, sides[side], args.events,
                             args.trials, args.rate, args.seconds)}
            print(json.dumps(run), flush=True)
            runs.append(run)
    finally:
        broker.stop()
        shutil.rmtree(home, ignore_errors=True)
    params = {**vars(args), "a": str(args.a), "b": str(args.b), "out": str(args.out)}
    path = write_results({"runs": runs, "commits": commits, "params": params}, args.out,
                         label=args.label)
    log(f"JSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
