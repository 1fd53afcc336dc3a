"""intake: raw input bytes -> AcceptedChange, or the dead-letter topic with the reason.

agents/intake.py accept_input is total (any bytes: an AcceptedChange or InvalidEvent with a
one-line reason, fuzzed by tests/test_fuzz_*.py); input limits are enforced there and named in
the reason (REVIEWBUS_LIMIT_*). The same hop routes each accepted change (streams/flows/
router.py `route`): its outputs are the AcceptedChange (archived by the sink) and the
InferenceRequests, published together.

Intake reads with a consumer group of its own on the main loop (`names.intake_group`,
streams/group_consumer.py `take`), not as a Faust agent: Faust's consumer fetches in a thread
of its own and delivers one record per loop turn, which held a routed event about 20 ms at
the median and set the routing p99 (docs/concepts/batching.md). Each batch is committed once
the broker acked all its outputs, batch after batch in order (streams/batching.py
`InOrderAcks`, strict: a batch whose outputs and dead letters both fail is never committed,
so it is read again: at a graceful stop Faust stops the producer before this task). The
group's first assignment of a partition starts where the Faust group had committed it
(`carry_offsets`), so an upgraded worker does not route the retained inputs again.
"""

from __future__ import annotations

import functools

from agents.errors import InvalidEvent
from agents.intake import accept_input, cohort_of, record_time
from infra.kafka import start_group_consumer, stop_consumer

from .. import names
from ..batching import InOrderAcks, failed_future, handle_events
from ..context import AppContext, log, send_all
from ..group_consumer import CarryOffsets, Received, commit, take
from ..metrics import BATCH_EVENTS, EVENTS
from .router import route

# Faust's fetch size per partition (infra/faust_compat.py), not the group consumer's 4 MB.
FETCH_BYTES = 16_000_000


def reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, InvalidEvent) else f"internal error: {exc!r}"


async def accept_and_route(ctx: AppContext, event) -> list:
    """One input: its AcceptedChange and the requests that route it (InvalidEvent raised for
    the batch loop to dead-letter with its reason). A routing failure is dead-lettered under
    "router" with the batch (the dead letter is one of these outputs)."""
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
        outputs += ctx.dead_letter_outputs([(msg, f"routing failed: {exc!r}")], "router")
    return outputs


def register(ctx: AppContext) -> None:
    settings = ctx.settings

    async def dead_letter(events, exc: Exception) -> None:
        # Raises when even the dead letters fail: the batch then stays uncommitted.
        await ctx.dead_letter_messages([(e.message, repr(exc)) for e in events], "intake")

    @ctx.task(name="intake")
    async def intake() -> None:
        await ctx.registry.ready.wait()  # routing reads the registry
        listener = CarryOffsets("intake", ctx.joined["intake"], settings, ctx.bootstrap,
                                ctx.app.conf.id)
        consumer = await start_group_consumer(
            settings, ctx.bootstrap, names.intake_group(settings), names.input_topics(settings),
            listener, max_partition_fetch_bytes=FETCH_BYTES)
        listener.attach(consumer)
        ctx.group_consumers["intake"] = consumer
        acks = InOrderAcks(None, "intake", depth=settings.batch_acks_in_flight, strict=True)

        def check() -> None:
            listener.check()
            acks.check()

        try:
            await listener.wait_carried()  # nothing is taken before the first carry
            while True:
                batch = await take(consumer, settings.batch_max, settings.intake_within_s,
                                   check=check, first_wait_s=1.0)
                events = [Received(r) for records in batch.values() for r in records]
                BATCH_EVENTS.labels(agent="intake").observe(len(events))
                # Dead letters go out with the batch: it is committed only once they are acked.
                letters: list = []
                outputs = await handle_events(ctx, events, "intake",
                                              lambda event: accept_and_route(ctx, event),
                                              reason=reason, expected=(InvalidEvent,),
                                              dead_letters=letters)
                outputs += ctx.dead_letter_outputs([(e.message, why) for e, why in letters],
                                                   "intake")
                try:
                    futures = await send_all(outputs)
                except Exception as exc:  # noqa: BLE001 - a refused send: InOrderAcks logs it
                    futures = [failed_future(exc)]
                await acks.hand_over(events, futures, dead_letter,
                                     ack=functools.partial(commit, consumer, batch, "intake"))
        finally:
            ctx.group_consumers.pop("intake", None)
            try:
                await acks.close()
            finally:
                await stop_consumer(consumer)
