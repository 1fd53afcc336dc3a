"""In-order delivery: the worker's consumer never skips records of a partition.

Faust (0.15) can hand its streams records from ahead of the position it sought: after a
rebalance it resumes the fetcher before it seeks the partitions to their committed offsets, and
a fetch already under way returns records from where the old position was. Faust takes the jump
for a gap in the log; worse, it records its read position after a seek as the committed offset
itself (the *next* record), so a jump of one record is not even seen as a gap. Either way the
skipped records are never processed: with a jump of one, the commit position stops for good
(the head of the acked queue has a hole, so nothing is committed on that partition again); with
a larger jump, the offsets in between are marked done and committed past (seen with `kill -9`
under load: tests/test_reliability_crash.py lost about 5 % of the requests).

Our topics have no gaps (no compaction, no transactions), so a record ahead of the next
expected offset is always a skip: seek back to the expected offset and drop the rest of that
partition's records from this fetch (at-least-once: a record may be processed twice, which the
idempotent storage absorbs). `MAX_REWINDS` per (partition, offset) lets a genuine gap through.

A second way Faust loses records: every `flow_control.resume()` empties the channel queues,
and recovery resumes twice -- once to start fetching, once more after it has sought the
partitions to their committed offsets. Records fetched in between sit in the queues of agents
that have not taken them yet (ours wait for the registry first) and are thrown away; the
consumer's position is already past them, so they never come again, and since a copy is
never acked the partition's commit position stops for good (seen in the crash-loop test: a
worker that came up after two crashes never served two of three requests). The guard notes
the lowest thrown-away offset per partition and, on the next fetch, seeks back to it when the
position has moved past it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping

from aiokafka import TopicPartition

log = logging.getLogger(__name__)

MAX_REWINDS = 3
_MARK = "_reviewbus_in_order"


def _next_offsets(consumer) -> dict:
    """Per partition, the offset of the next record the streams must see (None: unknown)."""
    table = getattr(consumer, "_reviewbus_next", None)
    if table is None:
        table = consumer._reviewbus_next = {}
        consumer._reviewbus_rewinds = {}
    return table


def expected_after_seek(committed: Mapping) -> dict:
    """Committed offsets (None or negative: none committed) -> next offsets to expect."""
    return {tp: off for tp, off in committed.items() if off is not None and off >= 0}


def is_skip(expected: int | None, offset: int) -> bool:
    """A record ahead of the next expected one means records in between were skipped."""
    return expected is not None and offset > expected


def lowest_offsets(items) -> dict:
    """Queued events -> {partition: lowest offset} (other items, e.g. plain values, ignored)."""
    out: dict = {}
    for item in items:
        message = getattr(item, "message", None)
        tp, offset = getattr(message, "tp", None), getattr(message, "offset", None)
        if tp is None or not isinstance(offset, int) or _internal(tp.topic):
            continue
        out[tp] = min(offset, out.get(tp, offset))
    return out


def rewinds_due(dropped: Mapping, expected: Mapping) -> dict:
    """Dropped records to fetch again: those the consumer's position has already passed. A
    position at or below the dropped offset (a seek to the committed offset since) delivers
    them anyway, and an unknown one (a seek with nothing committed) is left alone: seeking
    forward could skip records."""
    return {tp: off for tp, off in dropped.items()
            if expected.get(tp) is not None and off < expected[tp]}


def fetch_position(consumer, tp) -> int | None:
    """Where the aiokafka consumer under Faust will fetch `tp` next (None: unknown, or not
    the aiokafka transport)."""
    try:
        client = consumer._thread._ensure_consumer()
        state = client._subscription.subscription.assignment.state_value(
            TopicPartition(tp.topic, tp.partition))
        return state._position if state is not None else None
    except Exception:  # noqa: BLE001 - a private API: without it the guard only loses a check
        return None


def passed_unseen(position: int | None, expected: int | None) -> bool:
    """Between two fetches the consumer's position must equal the next offset the streams
    were handed; a position ahead means records were fetched and never handed on."""
    return position is not None and expected is not None and position > expected


_dropped: dict = {}  # partition -> lowest offset thrown away by a queue clear
_original_getmany = None  # Faust's, called by the patched one (module-level for the tests)


def install() -> None:
    """Patch Faust's consumer and flow control (idempotent)."""
    global _original_getmany
    from faust.transport.consumer import Consumer, ThreadDelegateConsumer
    from mode.utils.queues import FlowControlEvent

    if getattr(Consumer.getmany, _MARK, False):
        return
    original_clear = FlowControlEvent.clear

    def clear(self) -> None:
        for queue in list(self._queues):
            for tp, offset in lowest_offsets(list(getattr(queue, "_queue", ()))).items():
                _dropped[tp] = min(offset, _dropped.get(tp, offset))
        original_clear(self)

    _original_getmany = Consumer.getmany
    original_seek = Consumer.seek
    original_seek_to_committed = ThreadDelegateConsumer.seek_to_committed

    async def seek_to_committed(self):
        committed = await original_seek_to_committed(self)
        table = _next_offsets(self)
        for tp in committed:
            table.pop(tp, None)
        table.update(expected_after_seek(committed))
        # Nothing committed: the position is the start of the log ("earliest"), and records
        # fetched before a new generation must be read again from there like any others.
        fresh = [tp for tp, off in committed.items()
                 if (off is None or off < 0) and not _internal(tp.topic)]
        if fresh:
            try:
                starts = await self.earliest_offsets(*fresh)
            except Exception:  # noqa: BLE001 - the guard then only watches these from a record on
                log.warning("cannot read the start offsets of %d partitions", len(fresh),
                            exc_info=True)
                starts = {}
            table.update({tp: off for tp, off in starts.items()
                          if isinstance(off, int) and off >= 0})
        return committed

    async def seek(self, partition, offset: int) -> None:
        await original_seek(self, partition, offset)
        _next_offsets(self)[partition] = offset

    async def getmany(self, timeout: float) -> AsyncIterator:
        table = _next_offsets(self)
        rewinds = self._reviewbus_rewinds
        if _dropped:
            due = rewinds_due(_dropped, table)
            _dropped.clear()
            assigned = self.assignment()
            for tp, offset in sorted(due.items()):
                if tp in assigned:
                    log.warning("%s: records from offset %d were dropped from a stream queue "
                                "unprocessed: re-reading from there", tp, offset)
                    await self.seek(tp, offset)
        for tp in sorted(self.assignment()):
            if _internal(tp.topic):
                continue
            position = fetch_position(self, tp)
            if passed_unseen(position, table.get(tp)) and _may_rewind(rewinds, tp, table[tp]):
                log.warning("%s: the consumer is at offset %d but the streams were handed "
                            "records up to %d only: re-reading from there", tp, position,
                            table[tp])
                await self.seek(tp, table[tp])
        rewound = set()
        async for tp, message in _original_getmany(self, timeout):
            if tp in rewound:
                continue
            expected = table.get(tp)
            if (is_skip(expected, message.offset) and not _internal(tp.topic)
                    and _may_rewind(rewinds, tp, expected)):
                rewound.add(tp)
                log.warning("consumer got %s offset %d where %d was next: re-reading from "
                            "%d instead of skipping", tp, message.offset, expected, expected)
                await self.seek(tp, expected)
                continue
            if expected is None or message.offset >= expected:
                table[tp] = message.offset + 1
            yield tp, message

    for func in (getmany, seek, seek_to_committed, clear):
        setattr(func, _MARK, True)
    FlowControlEvent.clear = clear
    Consumer.getmany = getmany
    Consumer.seek = seek
    ThreadDelegateConsumer.seek_to_committed = seek_to_committed


def _may_rewind(rewinds: dict, tp, offset: int) -> bool:
    """At most MAX_REWINDS seeks back to one offset: a genuine gap (or a log whose start moved
    past it) must not make the consumer go round for ever."""
    key = (tp, offset)
    rewinds[key] = rewinds.get(key, 0) + 1
    return rewinds[key] <= MAX_REWINDS


def _internal(topic: str) -> bool:
    """Faust's own topics (table changelogs, the leader topic) are read by its recovery."""
    return topic.endswith("-changelog") or "__assignor" in topic


__all__ = ["MAX_REWINDS", "expected_after_seek", "install", "is_skip", "lowest_offsets",
           "rewinds_due"]
