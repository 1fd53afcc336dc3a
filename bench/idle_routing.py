"""Does the idle fetch wait cost the routing latency of a burst that starts after a quiet spell?

    python -m bench.idle_routing [--trials 4] [--rate 450] [--seconds 8] [--configs ...]

`make bench`'s routing figure (2) paces commits into a worker that has just settled (its sink
still for 1.5 s), so the run starts after a short quiet spell, like a CI burst after a pause.
Per trial and setting, alternating, a fresh worker (one no-op stable version): 200 warm-up
commits, settle, then a paced run; the commit -> inference request latency (Kafka CreateTime
of both) per setting, median and range over trials. Settings (`--configs`, comma list of
name=AFTER_S/WAIT_MS): the idle fetch wait after 2 s and after 10 s of quiet (250 ms), and off.

Writes bench/results/idle-routing-<time>[-label].json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from .core import RESULTS_DIR, machine_info, trials_summary
from .pipeline import _warm, noop_config, pipeline_latency, settle
from .stack import Broker, Worker

DEFAULT_CONFIGS = "after2=2/250,off=0/0,after10=10/250"


def parse_configs(text: str) -> dict[str, dict[str, str]]:
    """'name=AFTER_S/WAIT_MS,...' -> name -> the worker's environment."""
    out = {}
    for item in text.split(","):
        name, _, values = item.partition("=")
        after, _, wait = values.partition("/")
        out[name.strip()] = {"REVIEWBUS_FETCH_IDLE_AFTER_S": after.strip(),
                             "REVIEWBUS_FETCH_IDLE_WAIT_MS": wait.strip()}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.idle_routing", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--rate", type=float, default=450.0, help="paced commits per second")
    p.add_argument("--seconds", type=float, default=8.0, help="paced run length")
    p.add_argument("--configs", default=DEFAULT_CONFIGS)
    p.add_argument("--label", default=None)
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = p.parse_args(argv)
    configs = parse_configs(args.configs)
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="idle-routing-") as tmp:
        home = Path(tmp)
        broker = Broker(home / "broker")
        try:
            for trial in range(args.trials):
                for name, env in configs.items():
                    w = Worker(home / f"w{trial}-{name}", broker.address, noop_config(0),
                               extra_env=env)
                    w.start()
                    try:
                        asyncio.run(_warm(w))
                        settle(w)
                        lat = asyncio.run(pipeline_latency(w, args.rate, args.seconds,
                                                           lambda *_: None))
                    finally:
                        w.stop()
                    hop = lat["commit_to_inference_request"]
                    runs.append({"trial": trial, "config": name, "env": env,
                                 "p50_ms": hop["p50_ms"], "p99_ms": hop["p99_ms"]})
                    print(f"trial {trial} {name:>8}: routing p50 {hop['p50_ms']} ms, "
                          f"p99 {hop['p99_ms']} ms", flush=True)
        finally:
            broker.stop()
    summary = {name: {k: trials_summary([r[k] for r in runs if r["config"] == name])
                      for k in ("p50_ms", "p99_ms")} for name in configs}
    for name, s in summary.items():
        print(f"{name:>8}: p50 median {s['p50_ms']['median']} ms, p99 median "
              f"{s['p99_ms']['median']} ms", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = args.out / f"idle-routing-{stamp}{'-' + args.label if args.label else ''}.json"
    path.write_text(json.dumps({"machine": machine_info(), "rate": args.rate,
                                "seconds": args.seconds, "runs": runs, "summary": summary},
                               indent=1, sort_keys=True, default=str))
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
