"""The embedded broker's cost of a fetch, against how many batches a partition holds.

    python -m bench.tansu_fetch [--steps 0,2000,4000,8000] [--probes 40]

Isolates the broker from the worker. On one fresh embedded Tansu (memory storage), topic
`single` grows by one-record batches (what a worker writes: every emit waits for its ack)
and topic `bulk` by the same number of records in batches of ~500. At each size: the time
from producing one record to a consumer (positioned at that record) receiving it, median of
`--probes`, per topic. Then DeleteRecords up to the end on `single` and the same probe again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete

from .core import RESULTS_DIR
from .stack import Broker


async def probe(bootstrap: str, topic: str, producer: AIOKafkaProducer, n: int) -> float:
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                fetch_max_wait_ms=20)
    await consumer.start()
    try:
        consumer.assign([tp])
        times = []
        for _ in range(n):
            end = (await consumer.end_offsets([tp]))[tp]
            consumer.seek(tp, end)
            t = time.perf_counter()
            await producer.send_and_wait(topic, b"x" * 200, partition=0)
            await consumer.getone()
            times.append((time.perf_counter() - t) * 1000)
        return round(statistics.median(times), 2)
    finally:
        await consumer.stop()


async def grow(producer: AIOKafkaProducer, topic: str, n: int, batch: int) -> None:
    for start in range(0, n, batch):
        futures = [await producer.send(topic, b"y" * 200, partition=0)
                   for _ in range(min(batch, n - start))]
        await asyncio.gather(*futures)


async def run(bootstrap: str, steps: list[int], probes: int) -> dict:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic("single", 1, 1), NewTopic("bulk", 1, 1)])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks="all")
    await producer.start()
    rows, size = [], 0
    try:
        for step in steps:
            # one record per batch: await each send alone (the worker's emit does the same)
            for _ in range(step - size):
                await producer.send_and_wait("single", b"y" * 200, partition=0)
            await grow(producer, "bulk", step - size, 500)
            size = step
            row = {"records": step, "single_ms": await probe(bootstrap, "single", producer, probes),
                   "bulk_ms": await probe(bootstrap, "bulk", producer, probes)}
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
        tp = TopicPartition("single", 0)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await consumer.start()
        end = (await consumer.end_offsets([tp]))[tp]
        await consumer.stop()
        t = time.perf_counter()
        try:
            low = await admin.delete_records({tp: RecordsToDelete(before_offset=end)},
                                            timeout_ms=10_000)
            deleted = {"ok": True, "ms": round((time.perf_counter() - t) * 1000, 1),
                       "low_watermark": {str(k): v for k, v in low.items()}}
        except Exception as exc:  # noqa: BLE001 - what the broker supports is the question
            deleted = {"ok": False, "error": repr(exc)}
        after = await probe(bootstrap, "single", producer, probes)
        print(json.dumps({"delete_records": deleted, "single_ms_after": after}), file=sys.stderr)
        return {"rows": rows, "delete_records": deleted, "single_ms_after_delete": after}
    finally:
        await producer.stop()
        await admin.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tansu_fetch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", default="0,2000,4000,8000")
    p.add_argument("--probes", type=int, default=40)
    p.add_argument("--label", default="run")
    args = p.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="rb-tansu-"))
    broker = Broker(home)
    try:
        steps = [int(s) for s in args.steps.split(",")]
        result = asyncio.run(run(broker.address, steps, args.probes))
    finally:
        broker.stop()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"tansu-fetch-{args.label}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"-> {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
