"""One loop for every hop: take a batch, handle each event, send all outputs, ack in order.

    await run_batches(ctx, stream, "router", handle)   # inside the agent

Per batch (up to `settings.batch_max` events or `settings.batch_within_s`, with Faust's
`noack_take`, never `take`, which would ack before the outputs are on the broker):

1. `handle(event)` for each event, in order: it returns the outputs of that event
   (`(topic, key, Event | bytes)` tuples). An exception dead-letters that one event with
   `reason(exc)` and the rest of the batch goes on.
2. Every output of the batch is sent without awaiting each one; the broker's acks are awaited
   once (`emit`).
3. Only then the batch's events are acked, in the order they were taken. Faust commits the
   first run of consecutive acked offsets of a partition (transport/consumer.py _new_offset),
   so acks in order mean a crash at any point only repeats work: at-least-once.

If the broker refuses the outputs, `on_send_error(events, exc)` runs (router, shadow:
dead-letter each source; intake: log) and the batch is acked as before batching did.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .context import AppContext, emit
from .metrics import BATCH_EVENTS

log = logging.getLogger("reviewbus")

Handle = Callable[[Any], Awaitable[list] | list]


async def dead_letter_all(ctx: AppContext, events: Sequence, reason: str, agent: str) -> None:
    for event in events:
        with contextlib.suppress(Exception):
            await ctx.send_to_dlq(event, reason, agent)


async def handle_batch(ctx: AppContext, events: Sequence, agent: str, handle: Handle, *,
                       reason: Callable[[Exception], str] = repr,
                       on_send_error: Callable | None = None,
                       after: Callable[[], None] | None = None,
                       expected: tuple[type[Exception], ...] = ()) -> list:
    """Steps 1 and 2 for one batch; returns the outputs sent (for tests)."""
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
            with contextlib.suppress(Exception):  # a broker that refuses even this: logged
                await ctx.send_to_dlq(event, why, agent)
    if after is not None:
        after()
    try:
        await emit(outputs)
    except Exception as exc:
        log.exception("%s could not publish a batch of %d events", agent, len(events))
        if on_send_error is not None:
            await on_send_error(events, exc)
    return outputs


async def run_batches(ctx: AppContext, stream, agent: str, handle: Handle, *,
                      reason: Callable[[Exception], str] = repr,
                      on_send_error: Callable | None = None,
                      after: Callable[[], None] | None = None,
                      expected: tuple[type[Exception], ...] = ()) -> None:
    settings = ctx.settings
    async for events in stream.noack_take(settings.batch_max, within=settings.batch_within_s):
        BATCH_EVENTS.labels(agent=agent).observe(len(events))
        try:
            await handle_batch(ctx, events, agent, handle, reason=reason,
                               on_send_error=on_send_error, after=after, expected=expected)
        finally:
            for event in events:  # in the order taken: see the module's docstring
                await stream.ack(event)


__all__ = ["dead_letter_all", "handle_batch", "run_batches"]
