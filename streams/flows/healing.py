"""healing: when a served request fails, re-send it to another healthy version (fallback)."""

from __future__ import annotations

from agents.routing import choose_fallback
from schemas import FailureEvent, HealingAction, ReviewFindings, Role, Status

from .. import topics
from ..app import app
from ..metrics import EVENTS
from ..runtime import config, emit, log, runtime, send_to_dlq


def plan(failure: FailureEvent) -> list:
    request = failure.request
    assert request is not None
    tried = [*request.tried, failure.version_id]
    exclude = set(tried) | set(runtime.unavailable()) | {
        v for v in runtime.registry.registry.versions if v not in topics.inference}
    target = None
    if request.attempt <= config.inference.max_fallback_attempts:
        target = choose_fallback(runtime.registry.registry, exclude)
    if target is None:
        c = request.change
        final = ReviewFindings(
            request_id=request.request_id, task=request.task, repo=c.repo, sha=c.sha,
            pull_request=c.pull_request, version_id=failure.version_id, role=request.role,
            status=Status(failure.status), fallback_from=request.fallback_from,
            error=f"every version failed ({', '.join(tried)}): {failure.error}")
        return [(topics.findings, c.repo, final)]
    retry = request.model_copy(update={
        "event_id": f"{request.request_id}-fb{request.attempt}",
        "version_id": target, "role": Role.fallback, "attempt": request.attempt + 1,
        "tried": tried, "fallback_from": request.fallback_from or failure.version_id})
    action = HealingAction(
        event_id=f"{request.request_id}-heal{request.attempt}", task=request.task,
        action="fallback", version_id=failure.version_id, target_version=target,
        request_id=request.request_id, reason=f"{failure.status}: {failure.error}"[:500])
    return [(topics.inference[target], request.request_id, retry),
            (topics.healing, failure.version_id, action)]


@app.agent(topics.failures, name="healing", concurrency=1)
async def healing(stream):
    await runtime.registry.ready.wait()
    async for event in stream.events():
        try:
            failure = FailureEvent.model_validate_json(event.value)
            if failure.request is not None:
                await emit(plan(failure))
                EVENTS.labels(agent="healing", outcome="handled").inc()
        except Exception as exc:
            log.exception("healing failed on one event")
            await send_to_dlq(event, repr(exc), "healing")
