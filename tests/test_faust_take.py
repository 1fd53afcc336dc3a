"""infra/faust_take.py `take_batches` on a real mode Service standing in for a Faust stream
(the attributes it uses: a processor list, the passive drainer, current_event): batches of at
most n, a window that starts with the batch's first event, and no wake-ups while idle, where
Faust's noack_take wakes every `within`."""

from __future__ import annotations

import asyncio
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
