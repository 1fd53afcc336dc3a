"""`take_batches(stream, n, within)`: Faust's `Stream.noack_take`, except that an idle stream
costs nothing and a batch's window starts with its first event.

Faust's `noack_take` loops on `wait_for_stopped(buffer_full, timeout=within)` whether or not
anything came, and every turn goes through mode's `wait_first` (three tasks and an
`asyncio.wait`). With the hops' 10 ms window an idle worker woke 100 times a second per hop
agent: `python -m bench.idle` measured an idle worker at 8.3 % of a core against 5.9 % with a
50 ms window. Here the loop waits for the first event without a timeout (a stopping stream
still ends it: `wait_for_stopped` returns on stop), then gathers for at most `within` or until
`n` events, as before. Everything else is Faust's code as it stands in faust-streaming 0.15.3
(`faust/streams.py` `noack_take`), kept line for line where it can be: the same processor adds
each event to the buffer, acks stay disabled, the caller acks after its outputs are on the
broker (streams/batching.py). infra/faust_check.py refuses to start a worker whose Faust
no longer has the internals this relies on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from mode.utils.futures import notify


async def take_batches(stream: Any, max_: int, within: float) -> AsyncIterator[Sequence[Any]]:
    """Lists of up to `max_` events (Faust events: ack each after use), each gathered for at
    most `within` seconds from its first event."""
    self = stream
    buffer: list[Any] = []
    events: list[Any] = []
    buffer_full = asyncio.Event()
    buffer_consumed = asyncio.Event()
    buffer_started = asyncio.Event()  # the one addition: set by the batch's first event
    stream_enable_acks: bool = self.enable_acks
    buffer_consuming: asyncio.Future | None = None
    channel_it = self.channel.__aiter__()

    async def add_to_buffer(value: Any) -> Any:
        nonlocal buffer_consuming
        try:
            if buffer_consuming is not None:  # the loop is reading the buffer
                try:
                    await buffer_consuming
                finally:
                    buffer_consuming = None
            event = self.current_event  # events, not values: the caller acks them
            if event is None:
                raise RuntimeError("Take buffer found current_event is None")
            buffer.append(event)
            events.append(event)
            buffer_started.set()
            if len(buffer) >= max_:
                buffer_full.set()
                buffer_consumed.clear()
                await self.wait(buffer_consumed)  # never more than max_ per batch
        except asyncio.CancelledError:  # pragma: no cover
            raise
        except Exception as exc:
            self.log.exception("Error adding to take buffer: %r", exc)
            await self.crash(exc)
        return value

    self.enable_acks = False
    self.add_processor(add_to_buffer)
    self._enable_passive(channel_it)
    try:
        while not self.should_stop:
            if not buffer:
                buffer_started.clear()
                # Idle: no timeout, so no wake-ups until an event comes (or the stream stops).
                if await self.wait_for_stopped(buffer_started):
                    break
            await self.wait_for_stopped(buffer_full, timeout=within)
            if buffer:
                buffer_consuming = self.loop.create_future()
                try:
                    yield list(buffer)
                finally:
                    buffer.clear()
                    events.clear()
                    notify(buffer_consuming)
                    buffer_full.clear()
                    buffer_consumed.set()
    finally:
        self.enable_acks = stream_enable_acks
        self._processors.remove(add_to_buffer)


__all__ = ["take_batches"]
