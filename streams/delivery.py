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
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping

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


def install() -> None:
    """Patch Faust's consumer (idempotent)."""
    from faust.transport.consumer import Consumer, ThreadDelegateConsumer

    if getattr(Consumer.getmany, _MARK, False):
        return
    original_getmany = Consumer.getmany
    original_seek = Consumer.seek
    original_seek_to_committed = ThreadDelegateConsumer.seek_to_committed

    async def seek_to_committed(self):
        committed = await original_seek_to_committed(self)
        table = _next_offsets(self)
        for tp in committed:
            table.pop(tp, None)
        table.update(expected_after_seek(committed))
        return committed

    async def seek(self, partition, offset: int) -> None:
        await original_seek(self, partition, offset)
        _next_offsets(self)[partition] = offset

    async def getmany(self, timeout: float) -> AsyncIterator:
        table = _next_offsets(self)
        rewinds = self._reviewbus_rewinds
        rewound = set()
        async for tp, message in original_getmany(self, timeout):
            if tp in rewound:
                continue
            expected = table.get(tp)
            if is_skip(expected, message.offset) and not _internal(tp.topic):
                key = (tp, expected)
                rewinds[key] = rewinds.get(key, 0) + 1
                if rewinds[key] <= MAX_REWINDS:
                    rewound.add(tp)
                    log.warning("consumer got %s offset %d where %d was next: re-reading from "
                                "%d instead of skipping", tp, message.offset, expected, expected)
                    await self.seek(tp, expected)
                    continue
            if expected is None or message.offset >= expected:
                table[tp] = message.offset + 1
            yield tp, message

    for func in (getmany, seek, seek_to_committed):
        setattr(func, _MARK, True)
    Consumer.getmany = getmany
    Consumer.seek = seek
    ThreadDelegateConsumer.seek_to_committed = seek_to_committed


def _internal(topic: str) -> bool:
    """Faust's own topics (table changelogs, the leader topic) are read by its recovery."""
    return topic.endswith("-changelog") or "__assignor" in topic


__all__ = ["MAX_REWINDS", "expected_after_seek", "install", "is_skip"]
