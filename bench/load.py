"""Load generation and measurement over Kafka: produce at full speed or at a paced rate,
count answers on an output topic, and join message timestamps across topics afterwards.

Timestamps: every message carries its Kafka CreateTime, set by the producing client when it
sends (aiokafka, in the bench, the relay and the Faust worker alike; one host clock, 1 ms
resolution). The latency of a hop is the output message's CreateTime minus the input's, joined
by event id; it includes the consumer fetch wait, processing and queueing in between.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.settings import Settings
from infra.kafka import client_kwargs, start_producer, start_tail_consumer, true_end_offsets
from schemas import ChangedFile, CommitEvent

SAMPLE_CODE = (
    "import os\n\n\n"
    "def handler(event):\n"
    "    path = os.path.join('/tmp', event['name'])\n"
    "    with open(path) as fh:\n"
    "        return fh.read()\n"
)


def commit_events(n: int, run: str, repo: str = "bench/repo") -> list[tuple[str, bytes, bytes]]:
    """n small, valid commits: (event_id, key, value) with a Conventional Commits subject."""
    diff = "".join(f"+{line}\n" for line in SAMPLE_CODE.splitlines())
    diff = f"--- /dev/null\n+++ b/src/handler.py\n@@ -0,0 +1,7 @@\n{diff}"
    out = []
    for i in range(n):
        eid = f"{run}-{i}"
        sha = hashlib.sha1(eid.encode()).hexdigest()
        event = CommitEvent(
            event_id=eid, repo=repo, sha=sha, branch="main", author="bench",
            message=f"feat(handler): read the event file {i}\n\nBody of commit {i}.",
            diff=diff, files=[ChangedFile(path="src/handler.py", status="added", added=7,
                                          deleted=0, content=SAMPLE_CODE)])
        out.append((eid, repo.encode(), event.model_dump_json().encode()))
    return out


async def produce(settings: Settings, bootstrap: str, topic: str,
                  messages: list[tuple[str, bytes, bytes]], rate: float | None = None) -> float:
    """Send every message (at `rate` per second when given); return the send start time."""
    producer = await start_producer(settings, bootstrap)
    try:
        start = time.monotonic()
        futures = []
        if rate is None:
            for _, key, value in messages:
                futures.append(await producer.send(topic, value=value, key=key))
        else:
            tick = 0.01
            sent = 0
            while sent < len(messages):
                due = min(len(messages), int((time.monotonic() - start) * rate) + 1)
                while sent < due:
                    _, key, value = messages[sent]
                    futures.append(await producer.send(topic, value=value, key=key))
                    sent += 1
                await asyncio.sleep(tick)
        await asyncio.gather(*futures)
        return start
    finally:
        await producer.stop()


async def wait_for_count(consumer: AIOKafkaConsumer, wanted: set[str],
                         key_of: Callable[[object], str | None], timeout: float,
                         progress: Callable[[int], None] | None = None) -> float:
    """Consume until every wanted id was seen; return the monotonic time of the last one."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    while len(seen) < len(wanted):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(seen)} of {len(wanted)} answers after {timeout:g} s")
        batch = await consumer.getmany(timeout_ms=200, max_records=5000)
        for messages in batch.values():
            for m in messages:
                k = key_of(m)
                if k in wanted and k not in seen:
                    seen.add(k)
                    last = time.monotonic()
        if progress:
            progress(len(seen))
    return last


def key_is_id(m) -> str | None:
    return m.key.decode() if m.key else None


def request_id_of(m) -> str | None:
    """The request id inside a ReviewFindings value (its key is the repository)."""
    try:
        return orjson.loads(m.value).get("request_id")
    except orjson.JSONDecodeError:
        return None


def event_id_of(m) -> str | None:
    try:
        return orjson.loads(m.value).get("event_id")
    except orjson.JSONDecodeError:
        return None


async def run_load(settings: Settings, bootstrap: str, in_topic: str, out_topic: str,
                   messages: list[tuple[str, bytes, bytes]], id_of: Callable[[object], str | None],
                   rate: float | None = None, timeout: float = 600.0) -> dict:
    """Produce messages to in_topic and wait for one answer per message on out_topic."""
    consumer = await start_tail_consumer(settings, bootstrap, out_topic)
    try:
        wanted = {eid for eid, _, _ in messages}
        waiter = asyncio.ensure_future(wait_for_count(consumer, wanted, id_of, timeout))
        start = await produce(settings, bootstrap, in_topic, messages, rate)
        sent = time.monotonic()
        last = await waiter
    finally:
        await consumer.stop()
    elapsed = last - start
    return {"events": len(messages), "seconds": round(elapsed, 3),
            "send_seconds": round(sent - start, 3),
            "events_per_s": len(messages) / elapsed if elapsed > 0 else None}


async def timestamps(settings: Settings, bootstrap: str, topic: str,
                     id_of: Callable[[object], str | None], prefix: str = "") -> dict[str, int]:
    """id -> CreateTime (ms) of the first message with an id starting with `prefix`, over the
    whole topic up to its end."""
    consumer = await start_tail_consumer(settings, bootstrap, topic, from_beginning=True)
    out: dict[str, int] = {}
    try:
        tps = list(consumer.assignment())
        ends = await true_end_offsets(consumer, tps)
        while True:
            batch = await consumer.getmany(timeout_ms=500, max_records=10000)
            for messages in batch.values():
                for m in messages:
                    k = id_of(m)
                    if k is not None and k.startswith(prefix) and k not in out:
                        out[k] = m.timestamp
            positions = [await consumer.position(tp) for tp in tps]
            if all(p >= ends[tp] for p, tp in zip(positions, tps)):
                return out
    finally:
        await consumer.stop()


def hop_latencies(src: dict[str, int], dst: dict[str, int]) -> list[float]:
    return [float(dst[k] - src[k]) for k in src if k in dst]


async def group_consumer(settings: Settings, bootstrap: str, topic: str, group: str,
                         **kw) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(topic, **client_kwargs(settings, bootstrap), group_id=group,
                                auto_offset_reset="earliest", enable_auto_commit=True,
                                # Tansu holds a fetch for its whole max wait even when data
                                # arrives, so a tuned relay asks for short waits.
                                fetch_max_wait_ms=kw.pop("fetch_max_wait_ms", 10),
                                fetch_max_bytes=16_000_000,
                                max_partition_fetch_bytes=16_000_000, **kw)
    await consumer.start()
    return consumer


__all__ = ["TopicPartition", "commit_events", "hop_latencies", "produce", "run_load",
           "timestamps"]
