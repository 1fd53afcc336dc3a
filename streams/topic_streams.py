"""The inference and results hops read through one consumer group of their own, not Faust's.

Faust's consumer fetches in a thread of its own and hands an agent one message per loop turn:
about 50 us of CPU per record (`python -m bench.hop_cost`) against about 4 us for aiokafka's
`getmany`, and a second thread fighting the event loop for the GIL. The inference and results
hops read one record per event each, so one aiokafka consumer in the group `<app id>-hops`
(`names.hops_group`) fetches their topics on the main loop, and a `TopicStream` per topic
hands each hop its records through the two calls the hops make of a Faust stream,
`noack_take(n, within=...)` and `ack(event)`; the hops' code is unchanged
(docs/concepts/batching.md).

- **Commits only below the first unacked record**, per partition, as Faust's: the offsets
  handed to a hop are remembered in order, and an ack commits up to the first one not acked
  yet. Commits go out every `commit_interval_s`, when partitions are revoked and when the
  consumer stops; a crash before a commit repeats work: at-least-once.
- **A hop that restarts reads its unacked records again** (`TopicStream.rewind`, called when
  its guarded task starts): the consumer is moved back to its first unacked offset per
  partition, so a hop that died holding a batch loses nothing and does not stall the commits.
- **Backpressure.** A topic whose stream holds more than `buffer` records is paused until its
  hop took half of them: a slow version never makes the worker hold its whole topic.
- **Rebalances.** A revoked partition's buffered records are dropped (the new owner reads
  them from the last commit), the batches of it in flight get up to `settle_s` (half of what
  the rebalance timeout leaves after a heartbeat) to be acked, its acked offsets are
  committed, and later acks of it are ignored: work in flight is repeated, never skipped.
- **Upgrades.** The first assignment of a partition this group never committed starts where
  the worker's Faust group had committed it (`group_consumer.CarryOffsets`), as intake's.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable, Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from .group_consumer import CarryOffsets, Received
from .metrics import GROUP_COMMITS_REFUSED

log = logging.getLogger("reviewbus")


class TopicStream:
    """One topic's records for one hop: `noack_take` and `ack`, as a Faust stream's."""

    def __init__(self, hub: TopicStreams, topic: str) -> None:
        self.hub, self.topic = hub, topic
        self.buffer: collections.deque[Received] = collections.deque()
        self.arrived = asyncio.Event()

    async def noack_take(self, max_: int, within: float) -> AsyncIterator[list[Received]]:
        """Batches of up to `max_` records, gathered until the end of the `within` window the
        first one came in; waits as long as it takes for a first one.

        Faust's take closes a window every `within` whether anything came or not, so a lone
        record waits half a window on average, not a whole one (a commit on a quiet bus was
        served 25 ms later with whole windows of inference's 50 ms). The windows here are on
        the same fixed grid, without waking up while nothing comes."""
        loop = asyncio.get_running_loop()
        origin = loop.time()
        while True:
            while not self.buffer:
                self.arrived.clear()
                await self.arrived.wait()
            now = loop.time()
            deadline = origin + math.ceil((now - origin) / within) * within if within > 0 else now
            while len(self.buffer) < max_:
                left = deadline - loop.time()
                if left <= 0:
                    break
                self.arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.arrived.wait(), left)
            batch = [self.buffer.popleft() for _ in range(min(max_, len(self.buffer)))]
            if not batch:  # emptied meanwhile (a revocation, a rewind): wait again
                continue
            self.hub.handed_out(self, batch)
            yield batch

    async def ack(self, event: Received) -> None:
        self.hub.acked(event)

    def rewind(self) -> None:
        """The hop starts (again): what it was handed and did not ack is read again."""
        self.hub.rewind(self.topic)


class TopicStreams:
    """The one consumer of the hops' topics and a stream per topic (`stream(topic)`), run by
    `run` in a guarded task."""

    def __init__(self, name: str, buffer: int = 5000, commit_interval_s: float = 1.0) -> None:
        self.name, self.buffer, self.commit_interval_s = name, buffer, commit_interval_s
        self.streams: dict[str, TopicStream] = {}
        self.consumer: AIOKafkaConsumer | None = None
        # Per partition: the offsets handed to the hop and not acked yet, in the order handed
        # out, and the acked ones among them; the offset to commit next.
        self.outstanding: dict[TopicPartition, collections.deque[int]] = {}
        self.done: dict[TopicPartition, set[int]] = {}
        self.to_commit: dict[TopicPartition, int] = {}
        self.paused: set[str] = set()

    def stream(self, topic: str) -> TopicStream:
        return self.streams.setdefault(topic, TopicStream(self, topic))

    @property
    def topics(self) -> list[str]:
        return list(self.streams)

    # ---- the hops' side

    def handed_out(self, stream: TopicStream, batch: list[Received]) -> None:
        for event in batch:
            tp = TopicPartition(event.topic, event.partition)
            self.outstanding.setdefault(tp, collections.deque()).append(event.offset)
        self._resume_if_room(stream)

    def _resume_if_room(self, stream: TopicStream) -> None:
        if stream.topic in self.paused and len(stream.buffer) <= self.buffer // 2:
            self.paused.discard(stream.topic)
            if self.consumer is not None:
                self.consumer.resume(*self._partitions_of(stream.topic))

    def acked(self, event: Received) -> None:
        tp = TopicPartition(event.topic, event.partition)
        waiting = self.outstanding.get(tp)
        if not waiting:
            return  # revoked or rewound since it was handed out: read again elsewhere
        if event.offset < waiting[0]:
            return  # handed out before a rewind or a revocation, re-read since
        done = self.done.setdefault(tp, set())
        done.add(event.offset)
        while waiting and waiting[0] in done:
            offset = waiting.popleft()
            done.discard(offset)
            self.to_commit[tp] = offset + 1

    def rewind(self, topic: str) -> None:
        stream = self.streams.get(topic)
        consumer = self.consumer
        if stream is None or consumer is None:
            return
        # Back to the first record of each partition the hop has not acked: handed out and not
        # acked, else still in the buffer (cleared here: fetched again from there).
        back: dict[TopicPartition, int] = {}
        for event in stream.buffer:
            back.setdefault(TopicPartition(event.topic, event.partition), event.offset)
        for tp in [tp for tp in self.outstanding if tp.topic == topic]:
            waiting = self.outstanding.pop(tp)
            self.done.pop(tp, None)
            if waiting:
                back[tp] = waiting[0]
        stream.buffer.clear()
        assigned = consumer.assignment()
        for tp, offset in back.items():
            if tp in assigned:
                consumer.seek(tp, offset)
        if back:
            log.warning("%s: %s: re-reading from the first unacked record of %d partitions",
                        self.name, topic, len(back))
        self._resume_if_room(stream)  # paused while full: nothing else would resume it now

    # ---- the consumer's side

    def _partitions_of(self, topic: str) -> list[TopicPartition]:
        assert self.consumer is not None
        return [tp for tp in self.consumer.assignment() if tp.topic == topic]

    async def commit(self, only: Iterable[TopicPartition] | None = None) -> None:
        """Commit the acked offsets (of `only`, else all) of the partitions still assigned. An
        entry is forgotten only once committed and unchanged meanwhile, so a refused commit is
        simply tried again by the next one, and `revoked` forgetting a partition is final."""
        consumer = self.consumer
        if consumer is None or not self.to_commit:
            return
        assigned = consumer.assignment()
        wanted = set(only) if only is not None else set(self.to_commit)
        offsets = {tp: o for tp, o in self.to_commit.items() if tp in wanted and tp in assigned}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:  # a rebalance took them: their new owner reads them again
            GROUP_COMMITS_REFUSED.labels(agent=self.name).inc()
            log.warning("%s: commit refused (%s); tried again while the partitions stay ours",
                        self.name, exc)
            return
        for tp, offset in offsets.items():
            if self.to_commit.get(tp) == offset:
                del self.to_commit[tp]

    async def settle(self, partitions: Iterable[TopicPartition], timeout_s: float) -> None:
        """Wait at most `timeout_s` for the records handed out of `partitions` to be acked."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        wanted = set(partitions)
        while loop.time() < deadline and any(self.outstanding.get(tp) for tp in wanted):
            await asyncio.sleep(0.02)

    def drop_buffered(self, revoked: set[TopicPartition]) -> None:
        """Records of revoked partitions not handed out yet: dropped (their next owner reads
        them from the last commit), so that no new batch of them starts meanwhile."""
        dropped = 0
        topics = {tp.topic for tp in revoked}
        for stream in self.streams.values():
            if stream.topic in topics:
                kept = collections.deque(e for e in stream.buffer
                                         if TopicPartition(e.topic, e.partition) not in revoked)
                dropped += len(stream.buffer) - len(kept)
                stream.buffer = kept
        if dropped:
            log.info("%s: %d buffered records of revoked partitions dropped; their owner "
                     "re-reads them from the last commit", self.name, dropped)
        self.paused -= topics

    def revoked(self, revoked: set[TopicPartition]) -> None:
        """Forget revoked partitions: their buffered records, what was handed out of them (a
        late ack is ignored) and what was not committed."""
        self.drop_buffered(revoked)
        for tp in revoked:
            self.outstanding.pop(tp, None)
            self.done.pop(tp, None)
            self.to_commit.pop(tp, None)

    async def run(self, consumer: AIOKafkaConsumer, timeout_ms: int = 1000,
                  check: Callable[[], None] | None = None) -> None:
        """Fetch and hand out records until cancelled (or `check` raises), committing as it
        goes and at the end."""
        self.consumer = consumer
        loop = asyncio.get_running_loop()
        next_commit = loop.time() + self.commit_interval_s
        try:
            while True:
                if check is not None:
                    check()
                got = await consumer.getmany(timeout_ms=timeout_ms)
                for tp, records in got.items():
                    stream = self.streams.get(tp.topic)
                    if stream is None:
                        continue
                    stream.buffer.extend(map(Received, records))
                    stream.arrived.set()
                    if len(stream.buffer) > self.buffer and tp.topic not in self.paused:
                        self.paused.add(tp.topic)
                        consumer.pause(*self._partitions_of(tp.topic))
                for topic in list(self.paused):  # a hop that took them, or a rewind
                    self._resume_if_room(self.streams[topic])
                if loop.time() >= next_commit:
                    next_commit = loop.time() + self.commit_interval_s
                    await self.commit()
        finally:
            try:
                with contextlib.suppress(Exception):
                    await self.commit()
            finally:
                self.consumer = None
                for stream in self.streams.values():  # the next consumer fetches them again
                    stream.buffer.clear()
                self.outstanding.clear()
                self.done.clear()
                self.to_commit.clear()
                self.paused.clear()


class HopsListener(CarryOffsets):
    """CarryOffsets (the first assignment starts where the Faust group left off, then joined),
    and on revocation the hub's commit and drop."""

    def __init__(self, hub: TopicStreams, *args, settle_s: float = 0.5, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hub, self.settle_s = hub, settle_s

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        hub, revoked = self.hub, set(revoked)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settle_s
        try:
            # Every rebalance revokes every partition: no new batch of them starts, and the
            # batches in flight get a moment to be acked, so a partition that comes straight
            # back is not read again whole. Bounded well inside the rebalance timeout.
            hub.drop_buffered(revoked)
            await hub.settle(revoked, self.settle_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(hub.commit(revoked), max(0.1, deadline - loop.time()))
        finally:
            hub.revoked(revoked)
            await super().on_partitions_revoked(revoked)


__all__ = ["HopsListener", "TopicStream", "TopicStreams"]
