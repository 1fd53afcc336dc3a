"""intake: raw input bytes -> AcceptedChange, or the dead-letter topic with the reason.

agents/intake.py accept_input is total (any bytes: an AcceptedChange or InvalidEvent with a
one-line reason, fuzzed by tests/test_fuzz_*.py); input limits are enforced there and named in
the reason (REVIEWBUS_LIMIT_*).
"""

from __future__ import annotations

from agents.errors import InvalidEvent
from agents.intake import accept_input, cohort_of, record_time

from ..context import AppContext, emit, log
from ..metrics import EVENTS


def register(ctx: AppContext) -> None:
    @ctx.agent(ctx.topics.inputs, name="intake")
    async def intake(stream):
        async for event in stream.events():
            msg = event.message
            try:
                accepted = accept_input(
                    event.value, source_topic=msg.topic,
                    kind=ctx.topics.input_kind_by_topic.get(msg.topic, "commit"),
                    task=ctx.config.task, limits=ctx.limits,
                    accepted_at=record_time(getattr(msg, "timestamp", None)))
            except InvalidEvent as exc:
                await dead_letter(ctx, event, str(exc))
                continue
            except Exception as exc:  # one message must never stop the stream
                log.exception("intake failed on %s[%s]@%s", msg.topic, msg.partition, msg.offset)
                await dead_letter(ctx, event, f"internal error: {exc!r}")
                continue
            try:
                await emit([(ctx.topics.accepted, cohort_of(accepted), accepted)])
                EVENTS.labels(agent="intake", outcome="accepted").inc()
            except Exception:  # the broker is gone (its topics with it): log, never crash
                log.exception("intake could not publish %s", accepted.request_id)


async def dead_letter(ctx: AppContext, event, reason: str) -> None:
    """DLQ with the reason; a broker that refuses even that is logged, not raised."""
    try:
        await ctx.send_to_dlq(event, reason, "intake")
    except Exception:
        log.exception("intake could not dead-letter a message (%s)", reason[:200])
