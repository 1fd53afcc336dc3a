"""An idle worker's CPU and the latency of the first event after a quiet spell, with the idle
fetch wait of the worker's Faust consumer off and on (infra/faust_compat.py).

    python -m bench.idle [--runs 3] [--idle-s 20] [--after-s 2] [--wait-ms 250] [--label L]

One embedded broker; per run a fresh worker (one no-op fake stable version), alternately with
REVIEWBUS_FETCH_IDLE_AFTER_S=0 ("off": every fetch waits 20 ms) and with the given values
("on"). Per run: three warm-up commits, `--settle-s` of quiet, then the CPU (user + system,
/proc ticks) of the worker and of the broker over `--idle-s`, no bench client connected; then
one commit (the first after that idle spell), five commits 0.5 s apart (steady), and `--gaps`
more commits each after `--gap-s` of quiet. A commit's latency is its finding's CreateTime
minus its own (both stamped by their producers on this host), so the probe's own consumer does
not count.

Writes bench/results/idle-<UTC time>[-label].json and prints the figures per setting
(median, min-max over runs or probes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from infra.kafka import start_producer, start_tail_consumer

from . import load
from .core import RESULTS_DIR, machine_info, trials_summary
from .pipeline import noop_config
from .soak import cpu_s
from .stack import Broker, Worker


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.idle", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="runs per setting, alternating")
    p.add_argument("--idle-s", type=float, default=20.0, help="the CPU window")
    p.add_argument("--settle-s", type=float, default=5.0, help="quiet before the CPU window")
    p.add_argument("--after-s", type=float, default=2.0, help="REVIEWBUS_FETCH_IDLE_AFTER_S (on; "
                   "shorter than the quiet spells measured, the worker's default is 10)")
    p.add_argument("--wait-ms", type=int, default=250, help="REVIEWBUS_FETCH_IDLE_WAIT_MS (on)")
    p.add_argument("--gaps", type=int, default=6, help="more first-after-idle probes per run")
    p.add_argument("--gap-s", type=float, default=5.0, help="the quiet before each of them")
    p.add_argument("--label", default=None)
    return p.parse_args(argv)


class Probe:
    """Sends one commit at a time and waits for its finding; latency in ms by CreateTime."""

    def __init__(self, w: Worker) -> None:
        self.w = w

    async def __aenter__(self) -> Probe:
        self.producer = await start_producer(self.w.settings, self.w.settings.kafka)
        self.consumer = await start_tail_consumer(self.w.settings, self.w.settings.kafka,
                                                  self.w.topic("findings"))
        return self

    async def __aexit__(self, *exc) -> None:
        await self.consumer.stop()
        await self.producer.stop()

    async def one(self, timeout: float = 30.0) -> float:
        [(eid, key, value)] = load.commit_events(1, f"idle{uuid.uuid4().hex[:8]}")
        meta = await (await self.producer.send(self.w.topic("commits"), value=value, key=key))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = await self.consumer.getmany(timeout_ms=500)
            for records in got.values():
                for m in records:
                    if load.request_id_of(m) == eid:
                        return float(m.timestamp - meta.timestamp)
        raise TimeoutError(f"no finding for {eid} in {timeout} s: {self.w.log_tail()}")


async def probes(w: Worker, args) -> dict:
    async with Probe(w) as probe:
        for _ in range(3):
            await probe.one(timeout=120.0)  # warm-up: the first events pay for lazy setup
    # No client of the bench is connected meanwhile: the broker serves the worker alone.
    await asyncio.sleep(args.settle_s)
    pids = {"worker": w.proc.pid, "broker": args.broker_pid}
    before = {k: cpu_s(p) for k, p in pids.items()}
    t0 = time.monotonic()
    await asyncio.sleep(args.idle_s)
    wall = time.monotonic() - t0
    cpu = {k: round(100 * (cpu_s(p) - before[k]) / wall, 2) for k, p in pids.items()}
    async with Probe(w) as probe:
        first = [await probe.one()]
        steady = []
        for _ in range(5):
            await asyncio.sleep(0.5)
            steady.append(await probe.one())
        for _ in range(args.gaps):
            await asyncio.sleep(args.gap_s)
            first.append(await probe.one())
    return {"cpu_percent_of_a_core": cpu, "first_after_idle_ms": first, "steady_ms": steady}


def summarize(runs: list[dict]) -> dict:
    def flat(key: str) -> list[float]:
        return [x for r in runs for x in r[key]]

    return {
        "worker_cpu_percent": trials_summary([r["cpu_percent_of_a_core"]["worker"] for r in runs]),
        "broker_cpu_percent": trials_summary([r["cpu_percent_of_a_core"]["broker"] for r in runs]),
        "first_after_idle_ms": trials_summary(flat("first_after_idle_ms")),
        "steady_ms": trials_summary(flat("steady_ms")),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = {"off": {"REVIEWBUS_FETCH_IDLE_AFTER_S": "0"},
                "on": {"REVIEWBUS_FETCH_IDLE_AFTER_S": str(args.after_s),
                       "REVIEWBUS_FETCH_IDLE_WAIT_MS": str(args.wait_ms)}}
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
        broker = Broker(Path(tmp) / "broker")
        args.broker_pid = broker.info.pid
        try:
            for i in range(args.runs):
                for name in ("off", "on") if i % 2 == 0 else ("on", "off"):
                    w = Worker(Path(tmp) / f"{name}{i}", broker.address, noop_config(0),
                               extra_env=settings[name])
                    w.start()
                    try:
                        run = asyncio.run(probes(w, args))
                    finally:
                        w.stop()
                    runs[name].append(run)
                    log(f"{name} run {i + 1}: cpu {run['cpu_percent_of_a_core']}, first after "
                        f"idle {run['first_after_idle_ms']} ms, steady {run['steady_ms']} ms")
        finally:
            broker.stop()
    result = {
        "benchmark": "idle", "args": {k: v for k, v in vars(args).items() if k != "broker_pid"},
        "settings": settings, "seconds": round(time.time() - started, 1),
        "machine": machine_info(), "runs": runs,
        "summary": {name: summarize(r) for name, r in runs.items()},
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"idle-{stamp}{'-' + args.label if args.label else ''}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=True, default=str))
    for name, s in result["summary"].items():
        log(f"{name}: " + "; ".join(f"{k} {v['median']} ({v['min']}-{v['max']})"
                                    for k, v in s.items()))
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
