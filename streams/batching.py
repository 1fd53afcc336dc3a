"""One loop for every hop: take a batch, handle each event, send all outputs, ack in order.

    await run_batches(ctx, stream, "router", handle)   # inside the agent

Per batch (up to `settings.batch_max` events or `settings.batch_within_s`, with Faust's
`noack_take`, never `take`, which would ack before the outputs are on the broker):

1. `handle(event)` for each event, in order: it returns the outputs of that event
   (`(topic, key, Event | bytes)` tuples). An exception dead-letters that one event with
   `reason(exc)` and the rest of the batch goes on.
2. Every output of the batch is handed to the producer without awaiting each one
   (`send_all`), and the hop takes its next batch.
3. Meanwhile `InOrderAcks` awaits the broker's acks of the batch's outputs and only then acks
   its events, in the order they were taken, after every earlier batch's. Faust commits the
   first run of consecutive acked offsets of a partition (transport/consumer.py _new_offset),
   so a crash at any point only repeats work: at-least-once. At most
   `settings.batch_acks_in_flight` batches wait for their acks at a time.

If the broker refuses the outputs, `on_send_error(events, exc)` runs (router, shadow:
dead-letter each source; intake: log) and the batch is acked as before batching did.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .context import AppContext, send_all
from .metrics import BATCH_EVENTS

log = logging.getLogger("reviewbus")

Handle = Callable[[Any], Awaitable[list] | list]


async def dead_letter_all(ctx: AppContext, events: Sequence, reason: str, agent: str) -> None:
    for event in events:
        with contextlib.suppress(Exception):
            await ctx.send_to_dlq(event, reason, agent)


async def handle_events(ctx: AppContext, events: Sequence, agent: str, handle: Handle, *,
                        reason: Callable[[Exception], str] = repr,
                        expected: tuple[type[Exception], ...] = (),
                        dead_letters: list | None = None) -> list:
    """Step 1 for one batch: the outputs of every event, in order; the events that fail are
    dead-lettered with `reason(exc)` (with `dead_letters`, added to it as (event, why) for
    the caller to send with the batch, instead of sent here)."""
    outputs: list = []
    for event in events:
        try:
            out = handle(event)
            if hasattr(out, "__await__"):
                out = await out
            if out:
                outputs += out
        except Exception as exc:  # one event never stops the batch nor the stream
            why = reason(exc)
            if not isinstance(exc, expected):
                log.exception("%s failed on one event", agent)
            if dead_letters is not None:
                dead_letters.append((event, why))
                continue
            with contextlib.suppress(Exception):  # a broker that refuses even this: logged
                await ctx.send_to_dlq(event, why, agent)
    return outputs


class InOrderAcks:
    """Step 3 in the background: each batch's sources are acked once the broker acked all of
    its outputs, batch after batch in the order taken, while the hop takes and handles the
    next one. At most `depth` batches wait for their acks; the next hand-over waits then.

    Waiting for the acks before the next take held every event that arrived meanwhile for a
    broker round trip (7 ms at the median at 900 events/s, docs/concepts/batching.md). Faust
    commits only acked offsets, so acking later, in order, keeps at-least-once: a crash before
    the acks repeats the batch."""

    def __init__(self, stream, agent: str, depth: int = 4, *, strict: bool = False) -> None:
        """`strict`: a batch whose outputs failed is acked only if `on_send_error` returned
        (its dead letters are on the broker); otherwise it stays unacked and is raised, and so
        do the batches after it (intake's consumer: read again). Not strict: acked anyway, as
        the Faust hops did before batching."""
        self.stream, self.agent, self.depth, self.strict = stream, agent, depth, strict
        self.pending: deque[asyncio.Task] = deque()

    async def hand_over(self, events: Sequence, futures: list[asyncio.Future],
                        on_send_error: Callable | None,
                        ack: Callable[[], Awaitable[Any]] | None = None) -> None:
        """Queue one batch's acks (`ack()`, by default acking `events` on the stream); waits
        while `depth` batches wait. Raises the failure of a batch that could not be acked."""
        while len(self.pending) >= self.depth:
            await self._settle_oldest()
        before = self.pending[-1] if self.pending else None
        self.pending.append(asyncio.ensure_future(
            self._finish(before, events, futures, on_send_error, ack)))

    def check(self) -> None:
        """Raise the failure of a batch already finished (a take calls this while waiting),
        so a strict hop stops at once instead of after `depth` more batches."""
        while self.pending and self.pending[0].done():
            self.pending.popleft().result()

    async def _settle_oldest(self) -> None:
        await asyncio.wait({self.pending[0]})
        self.pending.popleft().result()

    async def _finish(self, before: asyncio.Task | None, events: Sequence,
                      futures: list[asyncio.Future], on_send_error: Callable | None,
                      ack: Callable[[], Awaitable[Any]] | None) -> None:
        if before is not None:
            await asyncio.wait({before})  # acks in the order taken
            if before.cancelled() or before.exception() is not None:
                # An earlier batch was not acked: acking this one would leave a gap below
                # acked offsets, which a rebalance can commit past. Its failure is raised
                # by hand_over or drain; this batch is read again with it.
                raise Unacked(f"{self.agent}: an earlier batch was not acked")
        try:
            if futures:
                await asyncio.gather(*futures)
        except Exception as exc:
            log.exception("%s could not publish a batch of %d events", self.agent, len(events))
            if on_send_error is not None and self.strict:
                await on_send_error(events, exc)  # raising: this batch stays unacked
            elif on_send_error is not None:
                with contextlib.suppress(Exception):  # logged by the callback; acked anyway
                    await on_send_error(events, exc)
            elif self.strict:
                raise
        await (ack() if ack is not None else ack_all(self.stream, events))

    async def drain(self) -> None:
        """Wait for every batch handed over (a stream that ended), raising as hand_over."""
        while self.pending:
            await self._settle_oldest()

    async def close(self) -> None:
        """The hop stops: batches whose outputs are not acked yet stay unacked, so Faust does
        not commit them and they are read again (at-least-once)."""
        tasks = list(self.pending)
        self.pending.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


class Unacked(Exception):
    """A batch could not be acked in order; the batches after it are left unacked too."""


async def ack_all(stream, events: Sequence) -> None:
    """Ack in the order taken (the module's docstring); the first ack that fails stops it, so
    no later offset is acked above one that is not."""
    for event in events:
        await stream.ack(event)


async def run_batches(ctx: AppContext, stream, agent: str, handle: Handle, *,
                      reason: Callable[[Exception], str] = repr,
                      on_send_error: Callable | None = None,
                      after: Callable[[], None] | None = None,
                      expected: tuple[type[Exception], ...] = ()) -> None:
    settings = ctx.settings
    acks = InOrderAcks(stream, agent, depth=settings.batch_acks_in_flight)
    try:
        async for events in stream.noack_take(settings.batch_max,
                                              within=settings.batch_within_s):
            BATCH_EVENTS.labels(agent=agent).observe(len(events))
            futures: list[asyncio.Future] = []
            outputs = await handle_events(ctx, events, agent, handle, reason=reason,
                                          expected=expected)
            if after is not None:
                try:
                    after()
                except Exception:  # a metrics hook: never the batch's fault
                    log.exception("%s: the hook after a batch failed", agent)
            try:
                futures = await send_all(outputs)
            except Exception as exc:  # noqa: BLE001 - a refused send: InOrderAcks logs it
                futures = [failed_future(exc)]
            await acks.hand_over(events, futures, on_send_error)
        await acks.drain()
    finally:
        await acks.close()


def failed_future(exc: Exception) -> asyncio.Future:
    future = asyncio.get_running_loop().create_future()
    future.set_exception(exc)
    # A batch cancelled before it awaited this one: no "exception never retrieved".
    future.add_done_callback(lambda f: f.exception())
    return future


__all__ = ["InOrderAcks", "Unacked", "ack_all", "dead_letter_all", "failed_future", "handle_events",
           "run_batches"]
