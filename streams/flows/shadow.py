"""shadow: join candidate and stable results by request id; emit ShadowComparison.

Results reach the join through streams/flows/results.py, the one consumer of `results` (it
also feeds quarantine's health tracker).

The join's state is in memory, bounded in time and size (agents/shadow_join.py says why it is
no Faust table); `results` is keyed by request id, so each worker joins the partitions it owns.
"""

from __future__ import annotations

from agents.routing import answering_versions, cohort_key, stable_version
from agents.shadow import compare_results
from schemas import InferenceResult, Role

from ..context import AppContext
from ..metrics import EVENTS, SHADOW_JOIN_DROPPED, SHADOW_JOIN_PENDING

COMPARED_ROLES = (Role.primary, Role.shadow, Role.canary)


def answering(ctx: AppContext, result: InferenceResult) -> set[str]:
    """The versions that answer this request while the registry stays as it is (those behind
    an open circuit get no copy); the result's own version always counts."""
    return _answering(ctx, result.repo, result.pull_request, result.sha, result.version_id)


def _answering(ctx: AppContext, repo: str, pull_request: int | None, sha: str,
               version_id: str) -> set[str]:
    registry = ctx.registry.registry
    cohort = cohort_key(repo, pull_request, sha)
    out = set(answering_versions(registry, cohort, repo=repo or None))
    return (out - ctx.unavailable()) | {version_id}


def comparisons_for(ctx: AppContext, result: InferenceResult, entry: dict[str, str]) -> list:
    # the stable version of the result's repository (a scoped stable serves its own)
    stable = stable_version(ctx.registry.registry, result.repo or None)
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


def join_result(ctx: AppContext, head: dict, raw: bytes) -> list:
    """One result into the join (`head`: its JSON read with orjson); the comparisons due.

    Most results compare with nothing yet: the join keeps the raw JSON and the pydantic model
    is built only for a pair (bench/parse.py: the model is what costs)."""
    if head.get("role") not in COMPARED_ROLES or head.get("run_id"):
        return []
    stable = stable_version(ctx.registry.registry, head.get("repo") or None)
    if stable is None:
        return []
    version = head["version_id"]
    entry = ctx.shadow_join.add(
        head["request_id"], version, raw.decode(),
        _answering(ctx, head.get("repo") or "", head.get("pull_request"),
                   head.get("sha") or "", version))
    if (version == stable and len(entry) < 2) or (version != stable and stable not in entry):
        return []
    outputs = comparisons_for(ctx, InferenceResult.model_validate_json(raw), entry)
    if outputs:
        EVENTS.labels(agent="shadow", outcome="compared").inc(len(outputs))
    return outputs


def register(ctx: AppContext) -> None:
    """The expiry timer; results reach the join through streams/flows/results.py."""

    @ctx.timer(ctx.config.shadow.expire_interval_s, name="shadow_join_expiry")
    async def expire_joins() -> None:
        """Expiry when no result comes to run it (the join is no Faust table: a timer may)."""
        ctx.shadow_join.expire()
        publish_join_metrics(ctx)
