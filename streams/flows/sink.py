"""sink: batched, idempotent inserts of every event into ClickHouse; committed only once stored.

The sink reads every stored topic and writes nothing back but dead letters, so it reads with a
consumer group of its own (`names.sink_group`, streams/group_consumer.py) rather than as a
Faust agent, which delivered each message through its conductor, a stream and an ack: with
10,000 results the worker's CPU fell from 270 to 193 us per result when the sink left Faust
(py-spy, bench/sink.py). The guarantee is the same at-least-once: offsets are committed after
the batch is stored, and a batch read again after a crash or a rebalance collapses in the
ReplacingMergeTree tables (and, on the same worker, in the store's seen ids).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord

from agents.errors import StoreBusy
from infra.event_rows import EventRows
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

from .. import names
from ..context import AppContext, emit, log
from ..group_consumer import FEED_CHUNK, Batch, OneInFlight, commit, consume
from ..metrics import EVENTS, SINK_ROWS

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


async def _insert(ctx: AppContext, insert: Callable[[], Awaitable[int]], held: int) -> bool:
    """One insert with retries; False when the server rejected it for its data
    DATA_ATTEMPTS times.

    While ClickHouse is unreachable this waits and retries with capped exponential backoff:
    backpressure. Nothing is acked meanwhile, and the uncommitted batch is all the memory an
    outage costs (the rest waits in Kafka).
    """
    delay, attempts, outage = 0.5, 0, False
    while True:
        try:
            written = await insert()
            SINK_ROWS.labels(outcome="written").inc(written)
            if outage:
                log.warning("sink: ClickHouse is back; %d events stored after %d attempts",
                            held, attempts + 1)
            return True
        except Exception as exc:
            attempts += 1
            SINK_ROWS.labels(outcome="retry").inc()
            if isinstance(exc, StoreUnavailable | StoreBusy | OSError):
                if not outage or attempts % 10 == 0:
                    log.warning("sink: ClickHouse unavailable (attempt %d, %d events held, "
                                "retrying): %s", attempts, held, exc)
                outage = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
                continue
            log.warning("sink: insert of %d events failed (attempt %d): %s", held, attempts, exc)
            if attempts >= DATA_ATTEMPTS:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)


async def _split(ctx: AppContext, events: list[Event]) -> list[Event]:
    """Halves stored on their own, to find the events the server refuses even alone."""
    if len(events) <= 1:
        return events
    mid = len(events) // 2
    return await store_batch(ctx, events[:mid]) + await store_batch(ctx, events[mid:])


async def store_batch(ctx: AppContext, events: list[Event]) -> list[Event]:
    """Insert with retries (`_insert`); returns the events that cannot be stored even alone
    (the DLQ's). Only a batch the server rejects for its data is split, to find the bad event."""
    if await _insert(ctx, lambda: ctx.store.insert_events(events), len(events)):
        return []
    return await _split(ctx, events)


class ParsedBatch:
    """A batch's rows, built as its records come (group_consumer.take's `feed`), the records
    they came from (in the same order) and the unreadable records with why.

    Parsing a whole batch at its end held the event loop for 40-90 ms at 900 events/s (2,000
    to 5,000 records), once per sink batch, and every other hop of the worker waited: the
    routing p99 followed the sink's batches (docs/concepts/batching.md). Each event is dropped
    once its rows are taken (infra/event_rows.py `EventRows`: a batch of parsed models cost
    the collector more than their parse)."""

    def __init__(self, types: dict) -> None:
        self.types = types
        self.rows = EventRows()
        self.stored: list[ConsumerRecord] = []
        self.letters: list[tuple[ConsumerRecord, str]] = []

    def add(self, records: list[ConsumerRecord]) -> None:
        rows, stored, types = self.rows, self.stored, self.types
        for record in records:
            try:
                rows.add(parse(types, record.topic, record.value), record.value)
            except Exception as exc:
                self.letters.append((record, f"unreadable {record.topic} event: {exc}"))
                continue
            stored.append(record)

    def parts(self) -> tuple[EventRows, list[ConsumerRecord], list[tuple[ConsumerRecord, str]]]:
        return self.rows, self.stored, self.letters


def parse_records(types: dict, records: list[ConsumerRecord]
                  ) -> tuple[EventRows, list[ConsumerRecord], list[tuple[ConsumerRecord, str]]]:
    """ParsedBatch of `records` at once: (rows, the records stored, the unreadable ones)."""
    parsed = ParsedBatch(types)
    parsed.add(records)
    return parsed.parts()


async def store_parsed(ctx: AppContext, types: dict, rows: EventRows,
                       records: list[ConsumerRecord],
                       letters: list[tuple[ConsumerRecord, str]]) -> int:
    """Store one parsed batch; unreadable records and events the store rejects alone go to the
    DLQ. Returns the number of events stored, only once every dead letter is acked by the
    broker, so the caller may then commit the batch's offsets."""
    letters = list(letters)
    if len(rows) and not await _insert(ctx, lambda: ctx.store.insert_event_rows(rows),
                                       len(rows)):
        # Rejected for its data (rare): parse the events again and split to find the bad ones,
        # a loop turn every FEED_CHUNK records as when they came (ParsedBatch).
        events = []
        for index, record in enumerate(records, 1):
            events.append(parse(types, record.topic, record.value))
            if index % FEED_CHUNK == 0:
                await asyncio.sleep(0)
        origin = {id(event): record for event, record in zip(events, records, strict=True)}
        for bad in await _split(ctx, events):
            if bad.__class__ is not DeadLetter:  # a dead letter that cannot be stored is dropped
                letters.append((origin[id(bad)], "store rejected the row"))
    if letters:
        await ctx.dead_letter_messages(letters, "sink")
    EVENTS.labels(agent="sink", outcome="stored").inc(len(rows))
    return len(rows)


def register(ctx: AppContext) -> None:
    settings = ctx.settings
    types: dict = {ctx.topics.name(short): kind for short, kind in EVENT_TYPES.items()}
    types[ctx.topics.name(HEALING)] = None
    topics = names.sink_topics(settings)
    assert set(topics) == set(types), "names.sink_topics and EVENT_TYPES disagree"

    storing = OneInFlight()

    async def store_and_commit(consumer: AIOKafkaConsumer, batch: Batch, parsed) -> None:
        await store_parsed(ctx, types, *parsed)
        await commit(consumer, batch, "sink")

    async def process(consumer: AIOKafkaConsumer, batch: Batch, parsed: ParsedBatch) -> None:
        # Two stages: while the store thread inserts one batch, the loop takes and parses the
        # next (bench/sink.py: the sink idled a third of the time waiting for its insert).
        await storing.submit(store_and_commit(consumer, batch, parsed.parts()))

    @ctx.task(name="sink")
    async def sink() -> None:
        await consume(settings, ctx.bootstrap, "sink", names.sink_group(settings), topics,
                      process, max_records=settings.sink_batch, within_s=settings.sink_within_s,
                      idle_s=settings.sink_idle_s, joined=ctx.joined["sink"], pending=storing,
                      gather=lambda: ParsedBatch(types))


__all__ = ["ParsedBatch", "emit", "parse_records", "register", "store_batch", "store_parsed"]
