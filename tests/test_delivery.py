"""The in-order delivery guard's decisions (infra/faust_compat.py); the end-to-end proof is
tests/test_reliability_crash.py (kill -9 with 2,000 events in flight, nothing lost)."""

from __future__ import annotations

from infra.consumer_rules import expected_after_seek, is_skip, lowest_offsets, rewinds_due
from infra.faust_compat import install


def test_a_record_ahead_of_the_next_expected_offset_is_a_skip():
    assert is_skip(97, 99)  # two records (97, 98) would be lost
    assert is_skip(97, 98)  # one record: the jump Faust cannot see (it reads 97 as "last read")
    assert not is_skip(97, 97)
    assert not is_skip(97, 90)  # behind: a re-read, which Faust drops or processes again
    assert not is_skip(None, 1234)  # nothing committed yet: the first record sets the position


def test_the_next_offset_after_a_seek_is_the_committed_offset():
    committed = {"a": 269, "b": None, "c": -1, "d": 0}
    assert expected_after_seek(committed) == {"a": 269, "d": 0}


def test_install_patches_faust_once():
    from faust.transport.consumer import Consumer, ThreadDelegateConsumer

    install()
    patched = (Consumer.getmany, Consumer.seek, ThreadDelegateConsumer.seek_to_committed)
    install()
    assert (Consumer.getmany, Consumer.seek, ThreadDelegateConsumer.seek_to_committed) == patched
    assert all(getattr(f, "_reviewbus_in_order", False) for f in patched)


class _Msg:
    def __init__(self, tp, offset):
        self.tp, self.offset = tp, offset


class _Event:
    def __init__(self, tp, offset):
        self.message = _Msg(tp, offset)


def test_the_lowest_dropped_offset_per_partition_is_noted():
    from faust.types import TP

    a, b, log = TP("x.accepted", 0), TP("x.accepted", 1), TP("x-shadow-join-changelog", 0)
    items = [_Event(a, 4), _Event(a, 2), _Event(b, 7), _Event(log, 1), "not an event"]
    assert lowest_offsets(items) == {a: 2, b: 7}  # changelogs belong to Faust's recovery


def test_dropped_records_are_read_again_only_once_the_position_passed_them():
    dropped = {"a": 2, "b": 7, "c": 3}
    expected = {"a": 6, "b": 7, "c": None}
    # a: position 6 passed the dropped 2..5 -> re-read; b: a seek put it back at 7 already;
    # c: position unknown -> a seek could skip records, leave it.
    assert rewinds_due(dropped, expected) == {"a": 2}


def test_a_queue_clear_sends_the_consumer_back_to_the_dropped_records():
    """Faust's flow_control.resume() empties the stream queues (see infra/faust_compat.py): the
    patched clear notes what it threw away, the patched getmany seeks back to it."""
    import asyncio

    from faust.transport.consumer import Consumer
    from faust.types import TP
    from mode.utils.queues import FlowControlEvent, FlowControlQueue

    from infra import faust_compat as delivery

    install()
    tp = TP("x.accepted", 0)

    async def scenario():
        flow = FlowControlEvent()
        queue = FlowControlQueue(flow_control=flow, clear_on_resume=True)
        for offset in (0, 1, 2):
            queue.put_nowait(_Event(tp, offset))
        flow.resume()  # Faust's second resume in recovery: the queue is emptied
        assert queue.qsize() == 0 and delivery._dropped == {tp: 0}

        class FakeConsumer:  # only what the patched getmany touches
            _reviewbus_next = {tp: 3}
            _reviewbus_rewinds: dict = {}
            seeks: list = []

            def assignment(self):
                return {tp}

            async def seek(self, partition, offset):
                self.seeks.append((partition, offset))
                self._reviewbus_next[partition] = offset

        consumer = FakeConsumer()
        async def nothing(self, timeout):
            return
            yield

        original = delivery._original_getmany
        delivery._original_getmany = nothing
        try:
            got = [x async for x in Consumer.getmany(consumer, 0.1)]
        finally:
            delivery._original_getmany = original
        return got, consumer.seeks

    got, seeks = asyncio.run(scenario())
    assert got == [] and seeks == [(tp, 0)]
    assert delivery._dropped == {}
