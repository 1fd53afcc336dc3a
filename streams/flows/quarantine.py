"""quarantine: a version that keeps failing gets no more traffic (a LifecycleEvent says why)."""

from __future__ import annotations

import hashlib

from schemas import (
    InferenceResult,
    LifecycleAction,
    LifecycleEvent,
    QuarantineEvent,
    Status,
    VersionState,
)

from .. import topics
from ..app import app
from ..metrics import EVENTS, LIFECYCLE
from ..runtime import emit, log, runtime, send_to_dlq

NO_TRAFFIC = (VersionState.quarantined, VersionState.archived)


def quarantine_events(result: InferenceResult, trigger: str, evidence: dict) -> list:
    registry = runtime.registry.registry
    entry = registry.versions.get(result.version_id)
    if entry is None or entry.state in NO_TRAFFIC:
        return []
    # Same id from every worker and every repeat: the registry fold keeps only the first.
    event_id = hashlib.sha256(
        f"{registry.task}|{result.version_id}|quarantine|{registry.applied}".encode()
    ).hexdigest()[:32]
    cause = f"{trigger}: last error: {result.error or result.status.value}"[:300]
    return [
        (topics.lifecycle, result.version_id, LifecycleEvent(
            event_id=event_id, task=registry.task, version_id=result.version_id,
            action=LifecycleAction.quarantine, from_state=entry.state,
            to_state=VersionState.quarantined, actor="quarantine", reason=cause,
            evidence=evidence)),
        (topics.healing, result.version_id, QuarantineEvent(
            event_id=f"q-{event_id}", task=registry.task, version_id=result.version_id,
            trigger=trigger, root_cause=cause, evidence=evidence)),
    ]


@app.agent(topics.results, name="quarantine", concurrency=1)
async def quarantine(stream):
    await runtime.registry.ready.wait()
    async for event in stream.events():
        try:
            result = InferenceResult.model_validate_json(event.value)
            verdict = runtime.health.observe(result.version_id, result.status == Status.ok)
            if verdict is None:
                continue
            trigger, evidence = verdict
            outputs = quarantine_events(result, trigger, evidence)
            if outputs:
                await emit(outputs)
                LIFECYCLE.labels(action="quarantine").inc()
                EVENTS.labels(agent="quarantine", outcome="quarantined").inc()
        except Exception as exc:
            log.exception("quarantine failed on one event")
            await send_to_dlq(event, repr(exc), "quarantine")
