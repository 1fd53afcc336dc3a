"""router: send each accepted change to its serving version and mirror it to shadows.

The routing step runs in intake's hop (`route`, called by intake for every accepted change,
and by the end-to-end repair for a lost one), not as an agent on `accepted`: it needs nothing
but the registry, which every worker holds whole, so a hop of its own only cost one more
consume, parse and ack per event (bench/: docs/concepts/architecture.md says what it
measured). `accepted` is still published: the sink archives it for replay.
"""

from __future__ import annotations

from agents.intake import cohort_of
from agents.routing import mirrors, plan_route
from schemas import AcceptedChange, InferenceRequest, ReviewFindings, Role, Status

from ..context import AppContext
from ..metrics import EVENTS


def requests_for(ctx: AppContext, accepted: AcceptedChange) -> list[InferenceRequest]:
    registry = ctx.registry.registry
    plan = plan_route(registry, cohort_of(accepted), unavailable=ctx.unavailable(),
                      repo=accepted.change.repo)
    base = dict(request_id=accepted.request_id, task=accepted.task, label=accepted.label,
                change=accepted.change, accepted_at=accepted.occurred_at)
    out = []
    if plan.primary:
        out.append(InferenceRequest(version_id=plan.primary, role=plan.role,
                                    fallback_from=plan.fallback_from, **base))
    out += [InferenceRequest(version_id=v, role=Role.shadow, **base)
            for v in mirrors(registry, plan, ctx.unavailable()) if v in ctx.topics.inference]
    return out


def unserved(accepted: AcceptedChange) -> ReviewFindings:
    c = accepted.change
    return ReviewFindings(
        request_id=accepted.request_id, task=accepted.task, repo=c.repo, sha=c.sha,
        pull_request=c.pull_request, version_id="-", role=Role.primary, status=Status.error,
        error="no healthy version can serve this request")


def route(ctx: AppContext, accepted: AcceptedChange) -> list:
    """The outputs that route one accepted change: an InferenceRequest per answering version
    (the serving one, and a copy per shadow), or an error finding when no version can serve."""
    inference = ctx.topics.inference
    requests = [r for r in requests_for(ctx, accepted) if r.version_id in inference]
    out: list = []
    if not any(r.role != Role.shadow for r in requests):
        out.append((ctx.topics.findings, accepted.change.repo, unserved(accepted)))
    out += [(inference[r.version_id], r.request_id, r) for r in requests]
    EVENTS.labels(agent="router", outcome="routed").inc()
    return out
