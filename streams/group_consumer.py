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

Intake reads this way too (streams/flows/intake.py), and the inference and results hops
share one consumer of their own (streams/topic_streams.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from infra.kafka import FETCH_MAX_WAIT_MS, client_kwargs, start_group_consumer, stop_consumer

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


class Received:
    """A record as a hop's code reads a Faust event: `value`, and `message` with its topic,
    partition, offset, key and timestamp (seconds, as Faust's)."""

    __slots__ = ("key", "message", "offset", "partition", "timestamp", "topic", "value")

    def __init__(self, record: ConsumerRecord) -> None:
        self.value, self.key = record.value, record.key
        self.topic, self.partition, self.offset = record.topic, record.partition, record.offset
        stamp = record.timestamp
        self.timestamp = stamp / 1000.0 if stamp is not None and stamp > 0 else None
        self.message = self


async def carry_offsets(consumer: AIOKafkaConsumer, other: AIOKafkaConsumer,
                        assigned: set[TopicPartition]) -> dict[TopicPartition, int]:
    """Seek each assigned partition this group never committed to where `other`'s group
    committed it (the Faust group that read these topics before the hop had a group of its
    own); the offsets it moved to."""
    moved: dict[TopicPartition, int] = {}
    for tp in sorted(assigned):
        if await consumer.committed(tp) is not None:
            continue
        offset = await other.committed(tp)
        if offset is not None:
            consumer.seek(tp, offset)
            moved[tp] = offset
    return moved


class CarryOffsets(Joined):
    """Joined, and on each assignment the offsets carried over from the Faust group
    (`from_group`): the assigned partitions are paused before anything else (aiokafka starts
    fetching them before it calls this), carried, the carried offsets committed, then resumed.
    A carry that fails leaves them paused and is raised by `check` (the task restarts)."""

    def __init__(self, agent: str, joined: asyncio.Event, settings, bootstrap: str,
                 from_group: str) -> None:
        super().__init__(agent, joined)
        self.settings, self.bootstrap, self.from_group = settings, bootstrap, from_group
        self.consumer: AIOKafkaConsumer | None = None
        self.started = asyncio.Event()  # `consumer` is set
        self.carried = asyncio.Event()  # the first assignment was carried
        self.failure: BaseException | None = None

    def check(self) -> None:
        if self.failure is not None:
            raise self.failure

    async def wait_carried(self) -> None:
        """Until the first assignment was carried; raises the carry's failure (a first carry
        that failed would otherwise leave the task waiting for good, its partitions paused)."""
        while not self.carried.is_set():
            self.check()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.carried.wait(), 0.5)
        self.check()

    def attach(self, consumer: AIOKafkaConsumer) -> None:
        """The consumer this listener serves, once started (the listener waits for it)."""
        self.consumer = consumer
        self.started.set()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.started.wait()  # set once start() returned; no yield after that
        consumer = self.consumer
        assert consumer is not None
        consumer.pause(*assigned)
        other = AIOKafkaConsumer(**client_kwargs(self.settings, self.bootstrap),
                                 group_id=self.from_group, enable_auto_commit=False)
        try:
            await other.start()
            moved = await carry_offsets(consumer, other, assigned)
            if moved:
                await consumer.commit(moved)  # once: the next assignment finds them
                log.warning("%s: %d partitions start where the worker group left them",
                            self.agent, len(moved))
        except Exception as exc:
            log.exception("%s: the offsets of the worker group could not be carried", self.agent)
            self.failure = exc
            return
        finally:
            await stop_consumer(other)
        consumer.resume(*assigned)
        self.carried.set()
        await super().on_partitions_assigned(assigned)


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


__all__ = ["FEED_CHUNK", "Batch", "CarryOffsets", "Feed", "Gatherer", "Joined", "OneInFlight",
           "Received", "carry_offsets", "commit", "consume", "fetch_wait_ms", "take"]
