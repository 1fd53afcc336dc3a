"""router: send each accepted change to its serving version and mirror it to shadows
(batched: streams/batching.py)."""

from __future__ import annotations

from agents.intake import cohort_of
from agents.routing import mirrors, plan_route
from schemas import AcceptedChange, InferenceRequest, ReviewFindings, Role, Status

from ..batching import dead_letter_all, run_batches
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


def register(ctx: AppContext) -> None:
    inference = ctx.topics.inference

    def handle(event) -> list:
        accepted = AcceptedChange.model_validate_json(event.value)
        requests = [r for r in requests_for(ctx, accepted) if r.version_id in inference]
        out: list = []
        if not any(r.role != Role.shadow for r in requests):
            out.append((ctx.topics.findings, accepted.change.repo, unserved(accepted)))
        out += [(inference[r.version_id], r.request_id, r) for r in requests]
        EVENTS.labels(agent="router", outcome="routed").inc()
        return out

    async def dead_letter(events, exc: Exception) -> None:
        await dead_letter_all(ctx, events, repr(exc), "router")

    @ctx.agent(ctx.topics.accepted, name="router")
    async def router(stream):
        await ctx.registry.ready.wait()
        await run_batches(ctx, stream, "router", handle, on_send_error=dead_letter)
