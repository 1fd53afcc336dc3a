"""The second ceiling: the bus's hops in raw aiokafka, batched the same way, in one process.

`python -m bench.rawpipe BOOTSTRAP PREFIX GROUP BATCH WITHIN_MS [STORE_DIR]` runs the hops the
worker has: intake, which routes too (commits -> accepted + inference.<stable>); inference
(-> results + findings, the findings published by the hop that holds the result); and, given a
STORE_DIR, the two readers of what inference wrote: the results hop (the worker's shadow join
and health judge, which read every result: here a parse and nothing more, as with no shadow)
and the sink (accepted + results -> chDB in STORE_DIR, the worker's tables). Without STORE_DIR
it is the two-hop pipeline the earlier runs measured.

Per hop and batch (`getmany(max_records=BATCH, timeout_ms=WITHIN_MS)`): parse each message with
orjson, build the output dicts, send them all without awaiting each, await the acks once;
offsets are committed at most once a second, after the acks of everything they cover (the
worker's Faust commits every second too): at-least-once. The sink gathers batches as the
worker's does (streams/group_consumer.py `take`: up to 5,000 records, 1 s, 0.2 s idle; the
same 100 ms fetch wait), inserts in a thread while it takes the next batch, and commits after
the insert. It does less than the worker's sink, as a ceiling should: it reads the two topics
this run writes (the worker's reads eight), builds 10 interaction and 7 archive columns from
the orjson dict (infra/rows.py fills about 30 and 11, from validated events), and has no
dead letters and no seen-id check. No Faust, no pydantic: the best this topology can do in
Python here. Prints `ready` once every hop owns its partitions; stops on SIGTERM, and exits
1 (with the error on stderr) when a hop failed meanwhile, so a ceiling that lost a hop is
never reported.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaConsumer

from agents.settings import Settings
from infra.kafka import client_kwargs, start_group_consumer, start_producer, stop_consumer
from streams.group_consumer import OneInFlight, commit, fetch_wait_ms, take

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


def results(value: bytes) -> list[tuple[str, bytes | None, bytes]]:
    orjson.loads(value)  # read, judged and joined with nothing: no shadow in this run
    return []


HOPS = (("commits", intake), (f"inference.{STABLE}", inference))
READERS = (("results", results),)  # with a store only: the readers of inference's outputs
SINK_BATCH, SINK_WITHIN_S, SINK_IDLE_S = 5000, 1.0, 0.2  # the worker's defaults


def _time(seconds: float | None) -> datetime:
    return datetime.fromtimestamp(seconds or 0.0, UTC)


ARCHIVE_COLUMNS = ["request_id", "event_id", "task", "repo", "sha", "accepted",
                   "occurred_at"]
INTERACTION_COLUMNS = ["event_id", "request_id", "task", "version_id", "role", "status",
                       "latency_ms", "repo", "sha", "occurred_at"]


def archive_row(a: dict, value: bytes) -> list:
    c = a["change"]
    return [a["request_id"], a["event_id"], a["task"], c["repo"], c["sha"], value.decode(),
            _time(a["occurred_at"])]


def interaction_row(r: dict) -> list:
    return [r["event_id"], r["request_id"], r["task"], r["version_id"], r["role"],
            r["status"], r["latency_ms"], r["repo"], r["sha"], _time(r["accepted_at"])]


class Stopped(Exception):
    pass


async def sink(settings, bootstrap, prefix, group, store_dir: str, stop: asyncio.Event,
               ready: asyncio.Event) -> None:
    from infra.store import Store

    store = await asyncio.to_thread(Store.connect, f"chdb:///{store_dir}")
    await asyncio.to_thread(store.migrate)
    consumer = await start_group_consumer(settings, bootstrap, f"{group}-sink",
                                          [prefix + "accepted", prefix + "results"],
                                          fetch_max_wait_ms=fetch_wait_ms(SINK_IDLE_S))
    storing = OneInFlight()

    def check() -> None:
        if consumer.assignment():
            ready.set()
        if stop.is_set():
            raise Stopped
        storing.check()

    def insert(archive: list, interactions: list) -> None:
        for table, columns, rows in (("events_archive", ARCHIVE_COLUMNS, archive),
                                     ("interactions", INTERACTION_COLUMNS, interactions)):
            if rows:
                store.insert_rows(table, [list(c) for c in zip(*rows)], columns,
                                  column_oriented=True)

    async def store_and_commit(batch, archive: list, interactions: list) -> None:
        await asyncio.to_thread(insert, archive, interactions)
        await commit(consumer, batch, "rawpipe-sink")

    try:
        while True:
            batch = await take(consumer, SINK_BATCH, SINK_WITHIN_S, check, SINK_IDLE_S)
            archive, interactions = [], []
            for records in batch.values():
                for m in records:
                    event = orjson.loads(m.value)
                    if m.topic.endswith(".accepted"):
                        archive.append(archive_row(event, m.value))
                    else:
                        interactions.append(interaction_row(event))
            await storing.submit(store_and_commit(batch, archive, interactions))
    except Stopped:  # the insert in flight finishes (and commits) before the store closes
        if storing.task is not None:
            await storing.task
    finally:
        await storing.cancel()
        await stop_consumer(consumer)
        await asyncio.to_thread(store.close)


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
               store_dir: str | None = None, batch_bytes: int = PRODUCER_BATCH_BYTES,
               linger_ms: int = LINGER_MS) -> None:
    settings = Settings(kafka=bootstrap)
    producer = await start_producer(settings, bootstrap, max_batch_size=batch_bytes,
                                    linger_ms=linger_ms)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    hops = HOPS + READERS if store_dir else HOPS
    readies = [asyncio.Event() for _ in hops]
    tasks = [asyncio.ensure_future(hop(settings, bootstrap, prefix, group, src, fn, producer,
                                       batch, within_ms, stop, ready))
             for (src, fn), ready in zip(hops, readies)]
    if store_dir:
        readies.append(asyncio.Event())
        tasks.append(asyncio.ensure_future(sink(settings, bootstrap, prefix, group, store_dir,
                                                stop, readies[-1])))
    for ready in readies:
        await asyncio.wait([asyncio.ensure_future(ready.wait()), *tasks],
                           return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            if t.done():
                t.result()  # a hop that failed at start: raise, no `ready`
    print("ready", flush=True)
    try:
        await asyncio.wait([asyncio.ensure_future(stop.wait()), *tasks],
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        await producer.stop()
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    if failed:
        raise SystemExit(f"a hop failed: {failed[0]!r}")


if __name__ == "__main__":
    from .core import gc_like_the_worker

    gc_like_the_worker()
    a = sys.argv[1:]
    asyncio.run(main(a[0], a[1], a[2], int(a[3]), int(a[4]), a[5] if len(a) > 5 else None))
