"""shadow: join candidate and stable results by request id; emit ShadowComparison.

The join's state is in memory, bounded in time and size (agents/shadow_join.py says why it is
no Faust table); `results` is keyed by request id, so each worker joins the partitions it owns.
"""

from __future__ import annotations

from agents.routing import answering_versions, cohort_key, stable_version
from agents.shadow import compare_results
from schemas import InferenceResult, Role

from ..context import AppContext, emit, log
from ..metrics import EVENTS, SHADOW_JOIN_DROPPED, SHADOW_JOIN_PENDING

COMPARED_ROLES = (Role.primary, Role.shadow, Role.canary)


def answering(ctx: AppContext, result: InferenceResult) -> set[str]:
    """The versions that answer this request while the registry stays as it is (those behind
    an open circuit get no copy); the result's own version always counts."""
    registry = ctx.registry.registry
    cohort = cohort_key(result.repo, result.pull_request, result.sha)
    out = set(answering_versions(registry, cohort, repo=result.repo or None))
    return (out - ctx.unavailable()) | {result.version_id}


def comparisons_for(ctx: AppContext, result: InferenceResult, entry: dict[str, str]) -> list:
    stable = stable_version(ctx.registry.registry)
    if stable is None:
        return []
    if result.version_id == stable:
        pairs = [(result, InferenceResult.model_validate_json(raw))
                 for v, raw in entry.items() if v != stable]
    elif stable in entry:
        pairs = [(InferenceResult.model_validate_json(entry[stable]), result)]
    else:
        pairs = []
    return [(ctx.topics.shadow_comparisons, cand.version_id,
             compare_results(base, cand, label=result.label))
            for base, cand in pairs]


def publish_join_metrics(ctx: AppContext) -> None:
    join, reported = ctx.shadow_join, ctx.join_reported
    SHADOW_JOIN_PENDING.set(len(join))
    for reason in reported:
        now = getattr(join.stats, reason)
        if now > reported[reason]:
            SHADOW_JOIN_DROPPED.labels(reason=reason).inc(now - reported[reason])
            reported[reason] = now


def register(ctx: AppContext) -> None:
    @ctx.agent(ctx.topics.results, name="shadow")
    async def shadow(stream):
        await ctx.registry.ready.wait()
        async for event in stream.events():
            try:
                result = InferenceResult.model_validate_json(event.value)
                if result.role not in COMPARED_ROLES or result.run_id:
                    continue
                if stable_version(ctx.registry.registry) is None:
                    continue
                entry = ctx.shadow_join.add(result.request_id, result.version_id,
                                            event.value.decode(), answering(ctx, result))
                outputs = comparisons_for(ctx, result, entry)
                if outputs:
                    await emit(outputs)
                    EVENTS.labels(agent="shadow", outcome="compared").inc(len(outputs))
            except Exception as exc:
                log.exception("shadow failed on one event")
                await ctx.send_to_dlq(event, repr(exc), "shadow")
            finally:
                publish_join_metrics(ctx)

    @ctx.timer(ctx.config.shadow.expire_interval_s, name="shadow_join_expiry")
    async def expire_joins() -> None:
        """Expiry when no result comes to run it (the join is no Faust table: a timer may)."""
        ctx.shadow_join.expire()
        publish_join_metrics(ctx)
