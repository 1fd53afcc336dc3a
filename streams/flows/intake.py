"""intake: raw input bytes -> AcceptedChange, or the dead-letter topic with the reason."""

from __future__ import annotations

from agents.errors import InvalidEvent
from agents.intake import accept_input, cohort_of

from .. import topics
from ..app import app
from ..metrics import EVENTS
from ..runtime import config, emit, log, runtime, send_to_dlq


@app.agent(topics.inputs, name="intake", concurrency=1)
async def intake(stream):
    async for event in stream.events():
        msg = event.message
        try:
            accepted = accept_input(
                event.value, source_topic=msg.topic,
                kind=topics.INPUT_KIND_BY_TOPIC.get(msg.topic, "commit"),
                task=config.task, limits=runtime.limits)
        except InvalidEvent as exc:
            await send_to_dlq(event, str(exc), "intake")
            continue
        except Exception as exc:  # one message must never stop the stream
            log.exception("intake failed on %s[%s]@%s", msg.topic, msg.partition, msg.offset)
            await send_to_dlq(event, f"internal error: {exc!r}", "intake")
            continue
        await emit([(topics.accepted, cohort_of(accepted), accepted)])
        EVENTS.labels(agent="intake", outcome="accepted").inc()
