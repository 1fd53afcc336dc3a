"""infra/faust_take.py `take_batches` on a real mode Service standing in for a Faust stream
(the attributes it uses: a processor list, the passive drainer, current_event): batches of at
most n, a window that starts with the batch's first event, and no wake-ups while idle, where
Faust's noack_take wakes every `within`."""

from __future__ import annotations

import asyncio
import weakref
from types import SimpleNamespace

from mode import Service

from infra.faust_take import take_batches


class QueueStream(Service):
    """What take_batches reads of a Faust Stream, fed from an asyncio.Queue."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.enable_acks = True
        self._processors: list = []
        self.current_event = None
        self.channel = SimpleNamespace(__aiter__=lambda: None)
        self.waits = 0
        self.drainer: asyncio.Task | None = None
        self._active_agens: weakref.WeakSet = weakref.WeakSet()  # as Faust's Stream

    def add_processor(self, processor) -> None:
        self._processors.append(processor)

    def _enable_passive(self, channel_it) -> None:
        async def drain() -> None:
            while True:
                value = await self.queue.get()
                self.current_event = SimpleNamespace(value=value)
                for processor in list(self._processors):
                    await processor(value)
        self.drainer = asyncio.ensure_future(drain())

    async def wait_first(self, *coros, timeout=None):
        self.waits += 1
        return await super().wait_first(*coros, timeout=timeout)


async def _gather(stream: QueueStream, n: int, within: float, until: int, feed) -> list:
    got: list = []

    async def consume() -> None:
        async for batch in take_batches(stream, n, within):
            got.append(([e.value for e in batch], asyncio.get_running_loop().time()))
            if sum(len(b) for b, _ in got) >= until:
                break

    task = asyncio.ensure_future(consume())
    await feed()
    await asyncio.wait_for(task, 10)
    stream.drainer.cancel()
    return got


def test_batches_hold_at_most_n_and_an_idle_stream_does_not_wake():
    async def run():
        stream = QueueStream()
        waits: dict = {}

        async def feed() -> None:
            await asyncio.sleep(0.3)  # idle: Faust's loop would wake 30 times at 10 ms
            waits["idle"] = stream.waits
            for i in range(5):
                stream.queue.put_nowait(i)

        got = await _gather(stream, 3, 0.01, 5, feed)
        return waits["idle"], [b for b, _ in got], stream.enable_acks, stream._processors

    idle_waits, batches, acks, processors = asyncio.run(run())
    assert idle_waits <= 1
    assert batches == [[0, 1, 2], [3, 4]]
    assert acks is True and processors == []  # restored when the loop ends


def test_the_window_starts_with_the_first_event_of_a_batch():
    """After a quiet spell, the first event's batch closes `within` after it came (Faust's
    timer ran from its last tick), and waits for the rest of that window."""
    async def run():
        stream = QueueStream()
        loop = asyncio.get_running_loop()
        sent: dict = {}

        async def feed() -> None:
            await asyncio.sleep(0.25)
            sent["first"] = loop.time()
            stream.queue.put_nowait("a")
            await asyncio.sleep(0.05)
            stream.queue.put_nowait("b")  # inside the 0.2 s window of "a"

        got = await _gather(stream, 10, 0.2, 2, feed)
        return got, sent["first"]

    got, first = asyncio.run(run())
    assert [b for b, _ in got] == [["a", "b"]]
    assert got[0][1] - first >= 0.2 * 0.9  # held for the window from its first event


def test_a_stopping_stream_ends_the_idle_wait_and_yields_what_it_holds():
    """The idle wait has no timeout: a stop must end it (and a batch buffered when the stop
    came is still yielded, as Faust's loop does, so the caller can ack it)."""
    async def run():
        stream = QueueStream()
        got: list = []

        async def consume() -> None:
            async for batch in take_batches(stream, 10, 5.0):
                got.append([e.value for e in batch])

        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.05)
        await stream.stop()  # idle: nothing buffered
        await asyncio.wait_for(task, 2)
        first = list(got)

        stream2 = QueueStream()
        task = asyncio.ensure_future(_consume_into(stream2, got))
        await asyncio.sleep(0.05)
        stream2.queue.put_nowait("x")
        await asyncio.sleep(0)  # the drainer buffers "x" ...
        await asyncio.sleep(0)
        await stream2.stop()  # ... and the stream stops before the window is over
        await asyncio.wait_for(task, 2)
        stream.drainer.cancel()
        stream2.drainer.cancel()
        return first, got

    first, got = asyncio.run(run())
    assert first == [] and got == [["x"]]


def test_a_take_is_registered_on_its_stream_as_fausts_are():
    """Faust's Stream.on_stop closes the takes in `_active_agens` a caller left behind."""
    async def run():
        stream = QueueStream()
        agen = take_batches(stream, 10, 0.01)
        tracked = agen in stream._active_agens
        await agen.aclose()
        return tracked

    assert asyncio.run(run())


async def _consume_into(stream: QueueStream, got: list) -> None:
    async for batch in take_batches(stream, 10, 5.0):
        got.append([e.value for e in batch])


def test_events_that_come_while_a_batch_is_handled_make_the_next_batch():
    async def run():
        stream = QueueStream()
        got: list = []

        async def consume() -> None:
            async for batch in take_batches(stream, 10, 0.02):
                got.append([e.value for e in batch])
                if len(got) == 1:
                    for i in range(3):  # arrive while this batch is being handled
                        stream.queue.put_nowait(f"late{i}")
                    await asyncio.sleep(0.05)
                if sum(map(len, got)) >= 4:
                    break

        task = asyncio.ensure_future(consume())
        stream.queue.put_nowait("first")
        await asyncio.wait_for(task, 5)
        stream.drainer.cancel()
        return got

    assert asyncio.run(run()) == [["first"], ["late0", "late1", "late2"]]


def test_with_quiet_a_batch_closes_once_no_event_came_for_that_long():
    """A lone event is handed on after `quiet`, not after the whole window; events that keep
    coming closer together than `quiet` stay in one batch until the window ends."""
    async def run():
        stream = QueueStream()
        loop = asyncio.get_running_loop()
        sent: dict = {}
        got: list = []

        async def consume() -> None:
            async for batch in take_batches(stream, 100, 3.0, 0.1):
                got.append(([e.value for e in batch], loop.time()))
                if sum(len(b) for b, _ in got) >= 7:
                    break

        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.05)
        sent["lone"] = loop.time()
        stream.queue.put_nowait("lone")
        await asyncio.sleep(0.5)
        for i in range(6):  # 5 ms apart: much closer than quiet
            stream.queue.put_nowait(i)
            await asyncio.sleep(0.005)
        await asyncio.wait_for(task, 5)
        stream.drainer.cancel()
        return got, sent["lone"], stream.waits

    got, lone_at, waits = asyncio.run(run())
    assert [b for b, _ in got] == [["lone"], [0, 1, 2, 3, 4, 5]]
    assert got[0][1] - lone_at < 1.5  # after quiet (0.1 s), not the 3 s window
    assert waits < 10  # a few checks per batch, not one per event
