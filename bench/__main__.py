"""`python -m bench` (or `make bench`): the benchmark suite; prints a table, writes JSON.

    python -m bench                      # everything, defaults sized for a few minutes
    python -m bench --only bus,sink      # a subset: bus (1, 2, 3, 7), sink (4), analyzers (5, 6)
    python -m bench --quick              # small sizes, to check that it runs
    python -m bench --label before       # name the JSON file bench/results/<time>-before.json
    python -m bench soak --minutes 60    # the long-running worker under steady load (bench/soak.py)
    python -m bench rdkafka-join         # a new group's first message: aiokafka vs librdkafka
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .core import machine_info, other_stacks, write_results
from .report import render

PARTS = ("bus", "sink", "analyzers")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}")
    p.add_argument("--events", type=int, default=5_000, help="events per throughput trial (1)")
    p.add_argument("--shadow-events", type=int, default=1_000,
                   help="events per throughput trial with shadows (3)")
    p.add_argument("--trials", type=int, default=3, help="repeated trials; medians reported")
    p.add_argument("--pipeline-trials", type=int, default=3,
                   help="trials of the long pipeline run of (1); the relay gets --trials")
    p.add_argument("--latency-seconds", type=float, default=8.0, help="paced run length (2, 3)")
    p.add_argument("--sink-events", type=int, default=30_000, help="InferenceResults (4)")
    p.add_argument("--commits", type=int, default=200, help="dataset commits for (6)")
    p.add_argument("--replay-commits", type=int, default=100, help="commits replayed (5)")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--label", default=None, help="suffix of the JSON file name")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    p.add_argument("--keep", action="store_true", help="keep the temporary stack directories")
    args = p.parse_args(argv)
    if args.quick:
        args.events, args.shadow_events, args.trials, args.pipeline_trials = 1000, 500, 1, 1
        args.latency_seconds, args.sink_events = 2.0, 12_000  # (4) drains more than one insert
        args.commits, args.replay_commits = 20, 10
    parts = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        p.error(f"unknown part(s) {unknown}; choose from {', '.join(PARTS)}")
    args.parts = parts
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["soak"]:
        from .soak import main as soak

        return soak(argv[1:])
    if argv[:1] == ["rdkafka-join"]:
        from .rdkafka_join import main as rdkafka_join

        return rdkafka_join(argv[1:])
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from .core import gc_like_the_worker

    gc_like_the_worker()  # the ceilings measured in this process (analyzers called directly)
    started = time.time()
    result: dict = {"machine": machine_info(), "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "params": {k: v for k, v in vars(args).items() if k != "parts"},
                    "parts": args.parts}
    # Read here, before this run starts a broker (machine_info serves tools that call it
    # with their own broker up).
    result["machine"]["other_stacks_at_start"] = other_stacks()
    for other in result["machine"]["other_stacks_at_start"]:
        log(f"WARNING: already running, and timed with every figure: pid {other['pid']} "
            f"{other['cmd']}")
    home = Path(tempfile.mkdtemp(prefix="reviewbus-bench-"))
    broker = None
    try:
        if "bus" in args.parts or "sink" in args.parts or "analyzers" in args.parts:
            from .stack import Broker

            broker = Broker(home / "broker")
            log(f"broker at {broker.address}; work in {home}")
        if "bus" in args.parts:
            from .pipeline import run_bus

            result.update(run_bus(home / "bus", broker.address, events=args.events,
                                  shadow_events=args.shadow_events, trials=args.trials,
                                  pipeline_trials=args.pipeline_trials,
                                  latency_s=args.latency_seconds, partitions=args.partitions,
                                  log=log))
        if "sink" in args.parts:
            from .sink import run_sink

            result["sink"] = run_sink(home / "sink", broker.address, events=args.sink_events,
                                      trials=args.trials, partitions=args.partitions, log=log)
        if "analyzers" in args.parts:
            from .analyzers import run_analyzers

            result.update(run_analyzers(home / "analyzers", broker.address,
                                        commits=args.commits, replay_commits=args.replay_commits,
                                        partitions=args.partitions, log=log,
                                        label=args.label, trials=args.trials))
    finally:
        if broker is not None:
            broker.stop()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    result["seconds"] = round(time.time() - started, 1)
    result["machine"]["load_average_at_end"] = os.getloadavg()
    path = write_results(result, label=args.label)
    print(render(result))
    print(f"\nJSON: {path} (and bench/results/latest.json); {result['seconds']} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
