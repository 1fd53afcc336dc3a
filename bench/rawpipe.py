"""The second ceiling: the bus's hops in raw aiokafka, batched the same way, in one process.

`python -m bench.rawpipe BOOTSTRAP PREFIX GROUP BATCH WITHIN_MS` runs the two hops the worker
has (intake, which routes too: commits -> accepted + inference.<stable>; inference: -> results +
findings, the findings published by the hop that holds the result), each its own consumer
group member; as in the worker, nobody but the sink (absent here) reads `accepted`. Per hop
and batch (`getmany(max_records=BATCH, timeout_ms=WITHIN_MS)`): parse each message with
orjson, build the output dicts, send them all without awaiting each, await the acks once;
offsets are committed at most once a second, after the acks of
everything they cover (the worker's Faust commits every second too): at-least-once. No Faust,
no pydantic, no sink, no shadow join: the best this topology can do in Python here. Prints
`ready` once every hop owns its partitions; stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import orjson
from aiokafka import AIOKafkaConsumer

from agents.settings import Settings
from infra.kafka import client_kwargs, start_producer

STABLE = "noop-stable"
# The worker's producer settings (streams/app.py), chosen by measuring this pipeline.
PRODUCER_BATCH_BYTES = 1_048_576
LINGER_MS = 5
COMMIT_INTERVAL_S = 1.0  # as the worker's broker_commit_interval (streams/app.py)


def intake(value: bytes) -> list[tuple[str, bytes | None, bytes]]:
    c = orjson.loads(value)
    change = {k: c.get(k) for k in ("repo", "sha", "branch", "author", "message", "diff",
                                    "files")}
    accepted = {"event_id": c["event_id"] + "-a", "request_id": c["event_id"],
                "task": "code-review", "label": None, "change": change,
                "occurred_at": time.time()}
    return [("accepted", c["repo"].encode(), orjson.dumps(accepted)), *route(accepted)]


def route(a: dict) -> list[tuple[str, bytes | None, bytes]]:
    request = {"event_id": a["request_id"] + "-r", "request_id": a["request_id"],
               "task": a["task"], "version_id": STABLE, "role": "primary", "label": a["label"],
               "change": a["change"], "accepted_at": a["occurred_at"]}
    return [(f"inference.{STABLE}", a["request_id"].encode(), orjson.dumps(request))]


def inference(value: bytes) -> list[tuple[str, bytes | None, bytes]]:
    r = orjson.loads(value)
    c = r["change"]
    result = {"event_id": r["request_id"] + "-x", "request_id": r["request_id"],
              "task": r["task"], "version_id": r["version_id"], "role": r["role"],
              "status": "ok", "latency_ms": 0.0, "repo": c["repo"], "sha": c["sha"],
              "change_type": "feat", "findings": [], "accepted_at": r["accepted_at"]}
    findings = dict(result, event_id=r["request_id"] + "-f")
    return [("results", r["request_id"].encode(), orjson.dumps(result)),
            ("findings", c["repo"].encode(), orjson.dumps(findings))]


HOPS = (("commits", intake), (f"inference.{STABLE}", inference))


async def hop(settings, bootstrap, prefix, group, src, fn, producer, batch, within_ms, stop,
              ready: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(prefix + src, **client_kwargs(settings, bootstrap),
                                group_id=f"{group}-{src}", auto_offset_reset="earliest",
                                enable_auto_commit=False, fetch_max_wait_ms=10,
                                fetch_max_bytes=16_000_000, max_partition_fetch_bytes=16_000_000)
    await consumer.start()
    committed, pending = time.monotonic(), False
    try:
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=within_ms, max_records=batch)
            if consumer.assignment():
                ready.set()
            futures = []
            for messages in fetched.values():
                for m in messages:
                    for topic, key, value in fn(m.value):
                        futures.append(await producer.send(prefix + topic, key=key, value=value))
            if futures:
                await asyncio.gather(*futures)
            if fetched:
                pending = True
            if pending and time.monotonic() - committed >= COMMIT_INTERVAL_S:
                await consumer.commit()  # only offsets whose outputs the broker acked
                committed, pending = time.monotonic(), False
    finally:
        await consumer.stop()


async def main(bootstrap: str, prefix: str, group: str, batch: int, within_ms: int,
               batch_bytes: int = PRODUCER_BATCH_BYTES, linger_ms: int = LINGER_MS) -> None:
    settings = Settings(kafka=bootstrap)
    producer = await start_producer(settings, bootstrap, max_batch_size=batch_bytes,
                                    linger_ms=linger_ms)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    readies = [asyncio.Event() for _ in HOPS]
    tasks = [asyncio.ensure_future(hop(settings, bootstrap, prefix, group, src, fn, producer,
                                       batch, within_ms, stop, ready))
             for (src, fn), ready in zip(HOPS, readies)]
    for ready in readies:
        await asyncio.wait([asyncio.ensure_future(ready.wait()), *tasks],
                           return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            if t.done():
                t.result()  # a hop that failed at start: raise, no `ready`
    print("ready", flush=True)
    try:
        await stop.wait()
    finally:
        await asyncio.gather(*tasks, return_exceptions=True)
        await producer.stop()


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(a[0], a[1], a[2], *(int(x) for x in a[3:7])))
