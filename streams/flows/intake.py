"""intake: raw input bytes -> AcceptedChange, or the dead-letter topic with the reason.

agents/intake.py accept_input is total (any bytes: an AcceptedChange or InvalidEvent with a
one-line reason, fuzzed by tests/test_fuzz_*.py); input limits are enforced there and named in
the reason (REVIEWBUS_LIMIT_*). The same hop routes each accepted change (streams/flows/
router.py `route`): its outputs are the AcceptedChange (archived by the sink) and the
InferenceRequests, published together and acked after (streams/batching.py).
"""

from __future__ import annotations

import contextlib

from agents.errors import InvalidEvent
from agents.intake import accept_input, cohort_of, record_time

from ..batching import dead_letter_all, run_batches
from ..context import AppContext, log
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


def register(ctx: AppContext) -> None:
    async def dead_letter(events, exc: Exception) -> None:
        await dead_letter_all(ctx, events, repr(exc), "intake")

    @ctx.agent(ctx.topics.inputs, name="intake")
    async def intake(stream):
        await ctx.registry.ready.wait()  # routing reads the registry
        # A broker that refuses the outputs: each source is dead-lettered (when even that
        # fails, logged), never raised.
        await run_batches(ctx, stream, "intake", lambda event: accept_and_route(ctx, event),
                          reason=reason, expected=(InvalidEvent,), on_send_error=dead_letter)
