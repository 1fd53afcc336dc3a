"""Hops that read with a plain aiokafka consumer group of their own instead of a Faust agent.

Faust hands an agent one message at a time: its conductor builds an event per message, the
stream buffers it, and every ack is a call. For a hop that reads every event of the bus and
only writes to other topics (the sink, the results hop), that per-message path cost more than
the hop's own work (py-spy, bench/sink.py). aiokafka's `getmany` returns thousands of records
per call instead. The rules are the bus's (docs/concepts/batching.md): take what is there up
to N records or a window, handle them, await the acks of every output, and only then commit.

    await consume(ctx, "sink", group, topics, process, max_records=5000, within_s=1.0)

`process(consumer, batch)` does the work and commits (`commit`). A rebalance can take a
partition between a take and its commit: the commit is refused and counted, and the new owner
reads those records again, so a hop's side effects must be idempotent (they are: the store
collapses repeats; repeated comparisons and health samples carry the same ids).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from infra.kafka import start_group_consumer, stop_consumer

from .metrics import GROUP_COMMITS_REFUSED, GROUP_PARTITIONS

log = logging.getLogger("reviewbus")

Batch = dict[TopicPartition, list[ConsumerRecord]]
Process = Callable[[AIOKafkaConsumer, Batch], Awaitable[None]]


class Delivered:
    """A consumed record dressed as the Faust event the hops' handlers read: `value`, and
    `message` with topic, partition, offset and key (what a dead letter records)."""

    __slots__ = ("message", "value")

    def __init__(self, record: ConsumerRecord) -> None:
        self.message = record
        self.value = record.value


def records_of(batch: Batch) -> list[ConsumerRecord]:
    return [r for records in batch.values() for r in records]


async def take(consumer: AIOKafkaConsumer, max_records: int, within_s: float) -> Batch:
    """Up to `max_records` records, gathered for at most `within_s` from the first one (the
    sink's 1 s window means an insert per second rather than per poll on a quiet bus). Waits
    as long as it takes for a first record."""
    batch: Batch = {}
    count, deadline = 0, None
    while count < max_records:
        wait = within_s if deadline is None else deadline - time.monotonic()
        if wait <= 0:
            break
        got = await consumer.getmany(timeout_ms=max(1, int(wait * 1000)),
                                     max_records=max_records - count)
        if not got and deadline is None:
            continue  # nothing yet: the window starts with the first record
        for tp, records in got.items():
            batch.setdefault(tp, []).extend(records)
            count += len(records)
        if deadline is None:
            deadline = time.monotonic() + within_s
    return batch


async def commit(consumer: AIOKafkaConsumer, batch: Batch, agent: str) -> bool:
    """Commit past the batch. A partition revoked meanwhile refuses the commit: its new owner
    reads those records again (at-least-once)."""
    try:
        await consumer.commit({tp: records[-1].offset + 1 for tp, records in batch.items()})
        return True
    except KafkaError as exc:
        GROUP_COMMITS_REFUSED.labels(agent=agent).inc()
        log.warning("%s: commit refused (%s); the batch will be read again", agent, exc)
        return False


class Joined(ConsumerRebalanceListener):  # type: ignore[misc]
    """Counts the partitions a member holds and says when it first got its assignment."""

    def __init__(self, agent: str, joined: asyncio.Event) -> None:
        self.agent, self.joined = agent, joined

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        pass  # each batch commits itself; a refused commit is the rebalance's only cost

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        GROUP_PARTITIONS.labels(agent=self.agent).set(len(assigned))
        self.joined.set()


async def consume(settings, bootstrap: str, agent: str, group: str, topics: Iterable[str],
                  process: Process, *, max_records: int, within_s: float,
                  joined: asyncio.Event) -> None:
    """Take batches of `topics` as a member of `group` and hand each to `process`, until
    cancelled (a guarded task restarts it when it raises: the uncommitted batch is read
    again)."""
    from .metrics import BATCH_EVENTS

    consumer = await start_group_consumer(settings, bootstrap, group, topics,
                                          Joined(agent, joined))
    try:
        while True:
            batch = await take(consumer, max_records, within_s)
            if batch:
                BATCH_EVENTS.labels(agent=agent).observe(sum(map(len, batch.values())))
                await process(consumer, batch)
    finally:
        await stop_consumer(consumer)


__all__ = ["Batch", "Delivered", "Joined", "commit", "consume", "records_of", "take"]
