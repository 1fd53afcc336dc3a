"""A/B of the hops' batch window (`REVIEWBUS_BATCH_WITHIN_S`) on one broker:

    python -m bench.batch_within_ab --values 0.05,0.01,0.003 --rounds 2 --rate 800

Per value and round, in turn: a fresh no-op worker with that window, warmed, two throughput
trials of `--events` events, then a paced run at `--rate` events/s (routing and end-to-end
latency). One JSON line per run on stdout, and `bench/results/<stamp>-batch-within-ab.json`.
The values alternate, their order reversed every other round, so that drift in the machine's
load and the broker's growing history hit each of them alike; each throughput trial starts on
an idle worker.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from . import code_ab
from .core import RESULTS_DIR, ROOT, write_results
from .stack import Broker


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def one_run(home: Path, broker: str, value: str, events: int, rate: float,
            seconds: float) -> dict:
    run = code_ab.one_run(home, broker, ROOT, events, 2, rate, seconds,
                          env={"REVIEWBUS_BATCH_WITHIN_S": value})
    return {"within_s": float(value), **run}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.batch_within_ab", description=__doc__)
    p.add_argument("--values", default="0.05,0.01,0.003")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--events", type=int, default=5000)
    p.add_argument("--rate", type=float, default=800.0)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--label", default="batch-within-ab")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    args = p.parse_args(argv)
    values = [v.strip() for v in args.values.split(",") if v.strip()]
    home = Path(tempfile.mkdtemp(prefix="reviewbus-within-"))
    broker = Broker(home / "broker")
    runs = []
    try:
        for r, value in code_ab.alternating(args.rounds, values):
            run = {"round": r, **one_run(home / f"w{r}-{value}", broker.address, value,
                                         args.events, args.rate, args.seconds)}
            print(json.dumps(run), flush=True)
            runs.append(run)
    finally:
        broker.stop()
        shutil.rmtree(home, ignore_errors=True)
    path = write_results({"runs": runs, "params": vars(args)}, args.out, label=args.label)
    log(f"JSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
