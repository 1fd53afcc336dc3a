"""router: send each accepted change to its serving version and mirror it to shadows."""

from __future__ import annotations

from agents.intake import cohort_of
from agents.routing import mirrors, plan_route
from schemas import AcceptedChange, InferenceRequest, ReviewFindings, Role, Status

from .. import topics
from ..app import app
from ..metrics import EVENTS
from ..runtime import emit, log, runtime, send_to_dlq


def requests_for(accepted: AcceptedChange) -> list[InferenceRequest]:
    registry = runtime.registry.registry
    plan = plan_route(registry, cohort_of(accepted), unavailable=runtime.unavailable(),
                      repo=accepted.change.repo)
    base = dict(request_id=accepted.request_id, task=accepted.task, label=accepted.label,
                change=accepted.change, accepted_at=accepted.occurred_at)
    out = []
    if plan.primary:
        out.append(InferenceRequest(version_id=plan.primary, role=plan.role,
                                    fallback_from=plan.fallback_from, **base))
    out += [InferenceRequest(version_id=v, role=Role.shadow, **base)
            for v in mirrors(registry, plan, runtime.unavailable()) if v in topics.inference]
    return out


def unserved(accepted: AcceptedChange) -> ReviewFindings:
    c = accepted.change
    return ReviewFindings(
        request_id=accepted.request_id, task=accepted.task, repo=c.repo, sha=c.sha,
        pull_request=c.pull_request, version_id="-", role=Role.primary, status=Status.error,
        error="no healthy version can serve this request")


@app.agent(topics.accepted, name="router", concurrency=1)
async def router(stream):
    await runtime.registry.ready.wait()
    async for event in stream.events():
        try:
            accepted = AcceptedChange.model_validate_json(event.value)
            requests = [r for r in requests_for(accepted) if r.version_id in topics.inference]
            if not any(r.role != Role.shadow for r in requests):
                await emit([(topics.findings, accepted.change.repo, unserved(accepted))])
            await emit([(topics.inference[r.version_id], r.request_id, r) for r in requests])
            EVENTS.labels(agent="router", outcome="routed").inc()
        except Exception as exc:
            log.exception("router failed on one event")
            await send_to_dlq(event, repr(exc), "router")
