"""`python -m bench.hop_cost [--records N] [--trials T]`: CPU per record of each way a hop can
send and read, on the embedded broker.

Every path runs in a worker-like process of its own: the worker's process setup
(`streams.worker.configure_process`: uvloop, the Faust patches, quiet library loggers, the
collector threshold) and the worker's Faust app (`streams.app.faust_app`: acks from all
replicas, 5 ms linger, 1 MiB batches) running, so each figure carries the same background.
The figure is the process's CPU time (`time.process_time`, all threads) over the records,
1,000 bytes each, 4 partitions, in takes and sends of 500 as a hop does:

- send: Faust's `Topic.send(force=True)` per record (how the hops sent before); the aiokafka
  producer under Faust's, `send` per record (`streams.context.send_all` now); both await the
  acks once per 500 records;
- read: a Faust agent's `noack_take(500, within=0.05)` with an ack per event (how intake,
  inference and results read before they got consumer groups of their own); an aiokafka
  consumer's `getmany(max_records=500)` with a commit per call (how the sink reads:
  streams/group_consumer.py; the other hops read through getmany too).

Writes bench/results/hop-cost-<time>[-label].json and prints the medians per record.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from .core import RESULTS_DIR, ROOT, machine_info, table

VALUE = b"x" * 1000
CHUNK = 500
PATHS = ("faust_send", "aiokafka_send", "faust_read", "getmany_read")


async def _create_and_fill(address: str, topic: str, n: int) -> None:
    """The topic (4 partitions) and, for a read path, `n` records in it."""
    from agents.settings import Settings
    from infra.kafka import ensure_topics, produce_all, start_producer

    settings = Settings()
    await ensure_topics(settings, address, {topic: 4})
    if n:
        producer = await start_producer(settings, address, max_batch_size=1 << 20)
        try:
            await produce_all(producer, topic, ((str(i).encode(), VALUE) for i in range(n)))
        finally:
            await producer.stop()


def child(path: str, address: str, topic: str, n: int, out: str) -> None:
    """One path in a worker-like Faust app; writes the CPU seconds to `out` and exits the
    process (Faust's worker takes over stdout and the event loop)."""
    from faust.worker import Worker

    from agents.settings import Settings
    from infra.faust_compat import aiokafka_producer
    from streams.app import faust_app
    from streams.worker import configure_process

    home = Path(out).parent / "home"  # inside the parent's temporary directory: removed after
    home.mkdir(parents=True, exist_ok=True)
    settings = Settings(home=home, kafka=address, partitions=4, app_id=f"hop-cost-{topic}",
                        log_level="error")
    configure_process(settings)
    app = faust_app(settings, address)
    app.conf.web_enabled = False
    channel = app.topic(topic, value_serializer="raw", key_serializer="raw", partitions=4)

    def done(cpu_s: float) -> None:
        Path(out).write_text(json.dumps({"cpu_s": cpu_s}))
        os._exit(0)

    async def send_all(send) -> None:
        start = time.process_time()
        for chunk in range(0, n, CHUNK):
            acks = [await send(str(i).encode()) for i in range(chunk, min(n, chunk + CHUNK))]
            await asyncio.gather(*acks)
        done(time.process_time() - start)

    if path == "faust_send":
        @app.task
        async def faust_send() -> None:
            await (await channel.send(key=b"warm", value=b"warm", force=True))
            await send_all(lambda key: channel.send(key=key, value=VALUE, force=True))
    elif path == "aiokafka_send":
        @app.task
        async def producer_send() -> None:
            producer = aiokafka_producer(app)
            await producer.send_and_wait(topic, b"warm", key=b"warm")
            await send_all(lambda key: producer.send(topic, VALUE, key=key))
    elif path == "getmany_read":
        @app.task
        async def getmany_read() -> None:
            from aiokafka import AIOKafkaConsumer

            consumer = AIOKafkaConsumer(
                topic, bootstrap_servers=address, group_id=f"g-{topic}",
                auto_offset_reset="earliest", enable_auto_commit=False,
                fetch_max_bytes=16 << 20, max_partition_fetch_bytes=16 << 20)
            await consumer.start()
            seen, start = 0, None
            while seen < n:
                got = await consumer.getmany(timeout_ms=50, max_records=CHUNK)
                if got and start is None:
                    start = time.process_time()
                seen += sum(len(records) for records in got.values())
                if got:
                    await consumer.commit()
            done(time.process_time() - (start or time.process_time()))
    else:
        state: dict = {"seen": 0, "start": None}

        @app.agent(channel)
        async def faust_read(stream) -> None:
            async for events in stream.noack_take(CHUNK, within=0.05):
                if state["start"] is None:
                    state["start"] = time.process_time()
                for event in events:
                    await stream.ack(event)
                state["seen"] += len(events)
                if state["seen"] >= n:
                    done(time.process_time() - state["start"])

    Worker(app, loglevel="error", quiet=True).execute_from_commandline()


def measure(address: str, path: str, n: int) -> float:
    topic = f"hop-{uuid.uuid4().hex[:8]}"
    asyncio.run(_create_and_fill(address, topic, n if path.endswith("_read") else 0))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cpu.json"
        done = subprocess.run([sys.executable, "-m", "bench.hop_cost", "--child", path, address,
                               topic, str(n), str(out)], cwd=ROOT, capture_output=True,
                              text=True, timeout=600)
        if not out.exists():
            raise RuntimeError(f"{path} failed: {(done.stdout + done.stderr)[-2000:]}")
        return json.loads(out.read_text())["cpu_s"] / n * 1e6


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1], argv[2], argv[3], int(argv[4]), argv[5])
        return 0
    p = argparse.ArgumentParser(prog="python -m bench.hop_cost", description=__doc__.split("\n")[0])
    p.add_argument("--records", type=int, default=20_000)
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--label", default=None)
    args = p.parse_args(argv)
    from infra.broker import start_embedded_broker, stop_embedded_broker

    home = Path(tempfile.mkdtemp(prefix="hop-cost-broker-"))
    info = start_embedded_broker(home)
    runs: dict[str, list[float]] = {path: [] for path in PATHS}
    try:
        for trial in range(args.trials):  # paths alternate within a trial: same machine state
            for path in PATHS:
                runs[path].append(round(measure(info.address, path, args.records), 2))
                print(f"trial {trial + 1}/{args.trials} {path}: {runs[path][-1]} us/record",
                      flush=True)
    finally:
        stop_embedded_broker(home)
        shutil.rmtree(home, ignore_errors=True)
    medians = {path: statistics.median(v) for path, v in runs.items()}
    result = {"bench": "hop_cost", "records": args.records, "trials": args.trials,
              "us_per_record": runs, "median_us_per_record": medians,
              "ratios": {"faust_send/aiokafka_send": round(medians["faust_send"]
                                                           / medians["aiokafka_send"], 2),
                         "faust_read/getmany_read": round(medians["faust_read"]
                                                          / medians["getmany_read"], 2)},
              "machine": machine_info()}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = RESULTS_DIR / f"hop-cost-{stamp}{'-' + args.label if args.label else ''}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=True))
    print(table([[k, v] for k, v in medians.items()], ["path", "CPU us per record (median)"]))
    print(json.dumps(result["ratios"]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
