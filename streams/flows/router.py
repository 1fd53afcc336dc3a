"""router: send each accepted change to its serving version and mirror it to shadows.

A version served since the start has its own inference topic; one registered since (by
`reviewbus versions register`, `reviewbus train`, the learner agent) goes to the shared pool
topic, `inference._pool`, until the next start gives it its own (`inference_topic_of`).

The routing step runs in intake's hop (`route`, called by intake for every accepted change,
and by the end-to-end repair for a lost one), not as an agent on `accepted`: it needs nothing
but the registry, which every worker holds whole, so a hop of its own only cost one more
consume, parse and ack per event (measured in bench/: docs/concepts/batching.md). `accepted`
is still published: the sink archives it for replay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agents.intake import cohort_of
from agents.routing import mirrors, plan_route
from schemas import (
    AcceptedChange,
    InferenceRequest,
    ReviewFindings,
    Role,
    Status,
    VersionState,
)

from ..context import AppContext
from ..metrics import EVENTS

if TYPE_CHECKING:
    from faust import TopicT


def inference_topic_of(ctx: AppContext, version_id: str, role: Role = Role.primary
                       ) -> TopicT | None:
    """Where a request of this role for this version goes: the version's own topic (versions
    served since the worker started), else the pool topic when the registry holds the version
    in a state that gets traffic (registered since the start); a replay (e.g. a quarantined
    version's re-test) goes there while the version is quarantined too. None: nowhere (not in
    the registry, archived, or quarantined for anything but a replay)."""
    own = ctx.topics.inference.get(version_id)
    if own is not None:
        return own
    entry = ctx.registry.registry.versions.get(version_id)
    if entry is None or entry.state == VersionState.archived:
        return None
    if entry.state == VersionState.quarantined and role != Role.replay:
        return None
    return ctx.topics.pool


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
    # Versions nothing serves are left out by `route` (inference_topic_of), once for all.
    out += [InferenceRequest(version_id=v, role=Role.shadow, **base)
            for v in mirrors(registry, plan, ctx.unavailable(), repo=accepted.change.repo)]
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
    routed = [(topic, r) for r in requests_for(ctx, accepted)
              if (topic := inference_topic_of(ctx, r.version_id, r.role)) is not None]
    out: list = []
    if not any(r.role != Role.shadow for _, r in routed):
        out.append((ctx.topics.findings, accepted.change.repo, unserved(accepted)))
    out += [(topic, r.request_id, r) for topic, r in routed]
    EVENTS.labels(agent="router", outcome="routed").inc()
    return out
