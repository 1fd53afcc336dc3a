"""A hop that reads with a plain aiokafka consumer group of its own instead of a Faust agent.

Faust hands an agent one message at a time: its conductor builds an event per message, the
stream buffers it, and every ack is a call. For the sink, which reads every event of the bus
and writes nothing back but dead letters, that per-message path cost more than its own work
(py-spy, bench/sink.py). aiokafka's `getmany` returns thousands of records per call instead.
The rules are the bus's (docs/concepts/batching.md): take what is there up to N records or a
window, handle them, await the acks of every output, and only then commit.

    await consume(settings, bootstrap, "sink", group, topics, process, max_records=5000,
                  within_s=1.0, idle_s=0.2, joined=event)

`process(consumer, batch, gathered)` does the work and commits (`commit`), possibly later, in the
background (`OneInFlight`). A rebalance can take a partition between a take and its commit:
the commit is refused and counted, and the new owner reads those records again, so the hop's
side effects must be idempotent (the store's are: it collapses repeats).

The results hop stays a Faust agent: moved here too it showed no CPU gain beyond the noise,
and its health judge then started a group join (~5 s on Tansu) after the worker, letting a
broken version answer that long before quarantine saw it (docs/concepts/batching.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from infra.kafka import FETCH_MAX_WAIT_MS, start_group_consumer, stop_consumer

from .metrics import BATCH_EVENTS, GROUP_COMMITS_REFUSED, GROUP_PARTITIONS

log = logging.getLogger("reviewbus")

Batch = dict[TopicPartition, list[ConsumerRecord]]
Feed = Callable[[list[ConsumerRecord]], None]
# (consumer, batch, what `gather()` returned for it, fed its records as they came, or None)
Process = Callable[[AIOKafkaConsumer, Batch, Any], Awaitable[None]]
# Records handed to `feed` at a time: about 9 ms of the sink's parsing (18 us per record).
FEED_CHUNK = 500


class Gatherer(Protocol):
    """What a hop builds from its batch as the records come (the sink: their rows)."""

    def add(self, records: list[ConsumerRecord]) -> None: ...


async def take(consumer: AIOKafkaConsumer, max_records: int, within_s: float,
               check: Callable[[], None] | None = None, idle_s: float | None = None,
               feed: Feed | None = None, first_wait_s: float | None = None) -> Batch:
    """Up to `max_records` records, gathered for at most `within_s` from the first one (the
    sink's 1 s window: an insert per second, not one per poll, while events keep coming), or
    until nothing more arrived for `idle_s` (a bus gone quiet: its last records are handled
    `idle_s` after they came, not at the end of the window; batches still last `idle_s` at
    least). Waits as long as it takes for a first record, calling `check` (which may raise)
    at least every `within_s` (or `first_wait_s`) meanwhile: a short window need not mean
    polling that often on a quiet bus.

    `feed(records)` is called with the records as they come, at most `FEED_CHUNK` at a time,
    with a loop turn after each: a hop that parses its batch there spreads the work over the
    window instead of holding the event loop for the whole batch at its end (which delayed
    every other hop of the worker: docs/concepts/batching.md)."""
    batch: Batch = {}
    count, deadline = 0, None
    while count < max_records:
        if check is not None:
            check()
        if deadline is None:
            wait = within_s if first_wait_s is None else first_wait_s
        else:
            wait = deadline - time.monotonic()
        if wait <= 0:
            break
        if deadline is not None and idle_s is not None:
            wait = min(wait, idle_s)
        asked = time.monotonic()
        room = max_records - count
        got = await consumer.getmany(timeout_ms=max(1, int(wait * 1000)),
                                     max_records=room if feed is None else min(room, FEED_CHUNK))
        if not got:
            if deadline is None:
                continue  # nothing yet: the window starts with the first record
            # Quiet for idle_s, unless the loop itself was late: a busy worker can hold it
            # past the timeout while the fetched records wait in the socket (that is load,
            # not quiet; closing then split a steady stream into batches of a few hundred).
            if idle_s is not None and time.monotonic() - asked < 1.5 * wait:
                break
        for tp, records in got.items():
            batch.setdefault(tp, []).extend(records)
            count += len(records)
            if feed is not None:
                feed(records)
        if feed is not None and got:
            await asyncio.sleep(0)  # getmany does not yield when records are buffered
        if deadline is None:
            deadline = time.monotonic() + within_s
    return batch


def fetch_wait_ms(idle_s: float | None) -> int:
    """The fetch wait of a hop that gathers until idle_s of quiet: half of that (it waits for
    more anyway), at most 500 ms; without idle_s, the bus's short wait. Every fetch that finds
    nothing costs the worker and the broker CPU (an empty fetch waits up to that long)."""
    if idle_s is None:
        return FETCH_MAX_WAIT_MS
    return min(500, max(FETCH_MAX_WAIT_MS, int(idle_s * 500)))


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
        # Each batch commits itself; a refused commit is the rebalance's only cost.
        GROUP_PARTITIONS.labels(agent=self.agent).set(0)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        GROUP_PARTITIONS.labels(agent=self.agent).set(len(assigned))
        self.joined.set()


class OneInFlight:
    """The last stage of each batch (the sink's insert and commit) in the background, one at
    a time and in order, while the loop takes and parses the next batch. A failed stage is
    raised by the next `submit` or `check`, so no later batch commits past it."""

    def __init__(self) -> None:
        self.task: asyncio.Future[None] | None = None

    def check(self) -> None:
        """Raise the failure of a finished stage (take() calls this while the bus is quiet)."""
        task = self.task
        if task is not None and task.done() and not task.cancelled() and task.exception():
            self.task = None
            raise task.exception()  # type: ignore[misc]

    async def submit(self, stage: Coroutine[Any, Any, None]) -> None:
        """Wait for the previous stage (raising its failure), then start this one."""
        previous, self.task = self.task, None
        if previous is not None:
            try:
                await previous
            except BaseException:
                stage.close()  # never started: its batch is read again
                raise
        self.task = asyncio.ensure_future(stage)

    async def cancel(self) -> None:
        """Stop the stage in flight (its batch is not committed: read again), without taking
        a cancellation meant for the caller."""
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})


async def consume(settings, bootstrap: str, agent: str, group: str, topics: Iterable[str],
                  process: Process, *, max_records: int, within_s: float,
                  joined: asyncio.Event, pending: OneInFlight | None = None,
                  idle_s: float | None = None,
                  gather: Callable[[], Gatherer] | None = None) -> None:
    """Take batches of `topics` as a member of `group` and hand each to `process`, until
    cancelled (a guarded task restarts it when it raises: the uncommitted batch is read
    again). `pending`: the stages `process` left in flight, checked while waiting and
    cancelled before the consumer stops. `gather`: a fresh Gatherer per batch, fed its
    records as they come (`take`) and handed to `process` with the batch."""
    consumer = await start_group_consumer(settings, bootstrap, group, topics,
                                          Joined(agent, joined),
                                          fetch_max_wait_ms=fetch_wait_ms(idle_s))
    try:
        while True:
            gathered = gather() if gather is not None else None
            batch = await take(consumer, max_records, within_s,
                               pending.check if pending is not None else None, idle_s,
                               gathered.add if gathered is not None else None)
            if batch:
                BATCH_EVENTS.labels(agent=agent).observe(sum(map(len, batch.values())))
                await process(consumer, batch, gathered)
    finally:
        if pending is not None:
            await pending.cancel()
        await stop_consumer(consumer)


__all__ = ["FEED_CHUNK", "Batch", "Feed", "Gatherer", "Joined", "OneInFlight", "commit", "consume",
           "fetch_wait_ms", "take"]
