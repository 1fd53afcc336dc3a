"""sink: batched, idempotent inserts of every event into ClickHouse; acked only once stored."""

from __future__ import annotations

import asyncio
import contextlib

import orjson

from agents.errors import StoreBusy
from infra.store import StoreUnavailable
from schemas import (
    AcceptedChange,
    DeadLetter,
    Event,
    FailureEvent,
    Feedback,
    HealingAction,
    InferenceResult,
    LifecycleEvent,
    QuarantineEvent,
    ShadowComparison,
)

from ..context import AppContext, emit, log
from ..metrics import BATCH_EVENTS, EVENTS, SINK_ROWS

# Short topic name -> the one event type it carries ("healing" carries two: see parse).
EVENT_TYPES: dict[str, type[Event]] = {
    "accepted": AcceptedChange,
    "results": InferenceResult,
    "shadow-comparisons": ShadowComparison,
    "failures": FailureEvent,
    "lifecycle": LifecycleEvent,
    "feedback": Feedback,
    "dlq": DeadLetter,
}
HEALING = "healing"
MAX_BACKOFF_S = 10.0
DATA_ATTEMPTS = 3  # a batch the server keeps rejecting for its data is split after this


def parse(types: dict[str, type[Event]], topic: str, value: bytes) -> Event:
    """`types`: full topic name -> event type, None for the healing topic."""
    kind = types[topic]
    if kind is None:  # healing carries two event types; quarantine ones have a trigger
        kind = QuarantineEvent if "trigger" in orjson.loads(value) else HealingAction
    return kind.model_validate_json(value)


async def store_batch(ctx: AppContext, events: list[Event]) -> list[Event]:
    """Insert with retries; returns the events that cannot be stored even alone (the DLQ's).

    While ClickHouse is unreachable this waits and retries the whole batch with capped
    exponential backoff: backpressure. Nothing is acked meanwhile, and the unacked batch plus
    Faust's bounded stream buffer is all the memory an outage costs (the rest waits in Kafka).
    Only a batch the server rejects for its data is split, to find the bad event.
    """
    delay, attempts, outage = 0.5, 0, False
    while True:
        try:
            written = await ctx.store.insert_events(events)
            SINK_ROWS.labels(outcome="written").inc(written)
            if outage:
                log.warning("sink: ClickHouse is back; %d events stored after %d attempts",
                            len(events), attempts + 1)
            return []
        except Exception as exc:
            attempts += 1
            SINK_ROWS.labels(outcome="retry").inc()
            if isinstance(exc, StoreUnavailable | StoreBusy | OSError):
                if not outage or attempts % 10 == 0:
                    log.warning("sink: ClickHouse unavailable (attempt %d, %d events held, "
                                "retrying): %s", attempts, len(events), exc)
                outage = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
                continue
            log.warning("sink: insert of %d events failed (attempt %d): %s",
                        len(events), attempts, exc)
            if attempts >= DATA_ATTEMPTS and len(events) > 1:
                mid = len(events) // 2
                return await store_batch(ctx, events[:mid]) + await store_batch(ctx, events[mid:])
            if attempts >= DATA_ATTEMPTS:
                return events
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)


def register(ctx: AppContext) -> None:
    types: dict = {ctx.topics.name(short): kind for short, kind in EVENT_TYPES.items()}
    types[ctx.topics.name(HEALING)] = None
    sink_topics = ctx.app.topic(*types, key_type=bytes, value_type=bytes,
                                key_serializer="raw", value_serializer="raw")
    settings = ctx.settings

    @ctx.agent(sink_topics, name="sink")
    async def sink(stream):
        async for batch in stream.noack_take(settings.sink_batch, within=settings.sink_within_s):
            BATCH_EVENTS.labels(agent="sink").observe(len(batch))
            parsed, origin = [], {}
            for event in batch:
                try:
                    item = parse(types, event.message.topic, event.value)
                    origin[id(item)] = event
                    parsed.append(item)
                except Exception as exc:
                    with contextlib.suppress(Exception):
                        await ctx.send_to_dlq(
                            event, f"unreadable {event.message.topic} event: {exc}", "sink")
            if parsed:
                for bad in await store_batch(ctx, parsed):
                    if bad.__class__ is not DeadLetter:
                        with contextlib.suppress(Exception):
                            await ctx.send_to_dlq(origin[id(bad)], "store rejected the row",
                                                  "sink")
            for event in batch:
                await stream.ack(event)
            EVENTS.labels(agent="sink", outcome="stored").inc(len(parsed))


__all__ = ["emit", "register"]
