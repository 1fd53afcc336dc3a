"""intake: raw input bytes -> AcceptedChange, or the dead-letter topic with the reason.

agents/intake.py accept_input is total (any bytes: an AcceptedChange or InvalidEvent with a
one-line reason, fuzzed by tests/test_fuzz_*.py); input limits are enforced there and named in
the reason (REVIEWBUS_LIMIT_*). The same hop routes each accepted change (streams/flows/
router.py `route`): its outputs are the AcceptedChange (archived by the sink) and the
InferenceRequests, published together; the batch is committed after the broker acked them
(streams/batching.py `handle_batch`, streams/group_consumer.py).
"""

from __future__ import annotations

import contextlib

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from agents.errors import InvalidEvent
from agents.intake import accept_input, cohort_of, record_time

from .. import names
from ..batching import dead_letter_all, handle_batch
from ..context import AppContext, log
from ..group_consumer import Batch, commit, consume, records_of
from ..metrics import EVENTS
from .router import route


def reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, InvalidEvent) else f"internal error: {exc!r}"


async def accept_and_route(ctx: AppContext, event) -> list:
    """One input: its AcceptedChange and the requests that route it (InvalidEvent raised for
    the batch loop to dead-letter with its reason)."""
    msg = event.message
    accepted = accept_input(
        event.value, source_topic=msg.topic,
        kind=ctx.topics.input_kind_by_topic.get(msg.topic, "commit"), task=ctx.config.task,
        limits=ctx.limits, accepted_at=record_time(getattr(msg, "timestamp", None)))
    EVENTS.labels(agent="intake", outcome="accepted").inc()
    outputs: list = [(ctx.topics.accepted, cohort_of(accepted), accepted)]
    try:
        outputs += route(ctx, accepted)
    except Exception as exc:  # a routing bug: the change is still archived (published to
        # `accepted`), so the end-to-end repair routes it again; the input is dead-lettered
        # under "router" with the reason, as the router agent did
        log.exception("router failed on one accepted change")
        with contextlib.suppress(Exception):
            await ctx.send_to_dlq(event, f"routing failed: {exc!r}", "router")
    return outputs


class Received:
    """An input record as the hop's code reads a Faust event: `value`, and `message` with its
    topic, partition, offset, key and timestamp (seconds, as Faust's)."""

    __slots__ = ("key", "message", "offset", "partition", "timestamp", "topic", "value")

    def __init__(self, record: ConsumerRecord) -> None:
        self.value, self.key = record.value, record.key
        self.topic, self.partition, self.offset = record.topic, record.partition, record.offset
        stamp = record.timestamp
        self.timestamp = stamp / 1000.0 if stamp is not None and stamp > 0 else None
        self.message = self


def register(ctx: AppContext) -> None:
    """Intake reads with a consumer group of its own (streams/group_consumer.py: `getmany`, a
    commit after the batch's outputs are acked), not a Faust agent: Faust's per-message read
    cost 89 us per record against 3.6 us (bench/hop_cost.py)."""
    settings = ctx.settings

    async def dead_letter(events, exc: Exception) -> None:
        await dead_letter_all(ctx, events, repr(exc), "intake")

    async def process(consumer: AIOKafkaConsumer, batch: Batch) -> None:
        events = [Received(record) for record in records_of(batch)]
        # A broker that refuses the outputs: each source is dead-lettered (when even that
        # fails, logged), never raised; then the batch is committed, as Faust acked it.
        await handle_batch(ctx, events, "intake", lambda event: accept_and_route(ctx, event),
                           reason=reason, expected=(InvalidEvent,), on_send_error=dead_letter)
        await commit(consumer, batch, "intake")

    @ctx.task(name="intake")
    async def intake() -> None:
        await ctx.registry.ready.wait()  # routing reads the registry
        await consume(settings, ctx.bootstrap, "intake", names.intake_group(settings),
                      names.input_topics(settings), process, max_records=settings.batch_max,
                      within_s=settings.batch_within_s, joined=ctx.joined["intake"],
                      idle_fetch=True)
