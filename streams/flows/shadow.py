"""shadow: join candidate and stable results by request id; emit ShadowComparison.

The join's state is in memory, bounded in time and size (agents/shadow_join.py says why it is
no Faust table); `results` is keyed by request id, so each worker joins the partitions it owns.
"""

from __future__ import annotations

from agents.routing import answering_versions, cohort_key, stable_version
from agents.shadow import compare_results
from agents.shadow_join import ShadowJoin
from schemas import InferenceResult, Role

from .. import topics
from ..app import app
from ..metrics import EVENTS, SHADOW_JOIN_DROPPED, SHADOW_JOIN_PENDING
from ..runtime import config, emit, log, runtime, send_to_dlq, timer

COMPARED_ROLES = (Role.primary, Role.shadow, Role.canary)

join = ShadowJoin(ttl_s=config.shadow.join_ttl_s, max_pending=config.shadow.max_pending)
_reported = {"expired": 0, "evicted": 0}


def answering(result: InferenceResult) -> set[str]:
    """The versions that answer this request while the registry stays as it is (those behind
    an open circuit get no copy); the result's own version always counts."""
    registry = runtime.registry.registry
    cohort = cohort_key(result.repo, result.pull_request, result.sha)
    out = set(answering_versions(registry, cohort, repo=result.repo or None))
    return (out - runtime.unavailable()) | {result.version_id}


def comparisons_for(result: InferenceResult, entry: dict[str, str]) -> list:
    stable = stable_version(runtime.registry.registry)
    if stable is None:
        return []
    if result.version_id == stable:
        pairs = [(result, InferenceResult.model_validate_json(raw))
                 for v, raw in entry.items() if v != stable]
    elif stable in entry:
        pairs = [(InferenceResult.model_validate_json(entry[stable]), result)]
    else:
        pairs = []
    return [(topics.shadow_comparisons, cand.version_id,
             compare_results(base, cand, label=result.label))
            for base, cand in pairs]


def publish_join_metrics() -> None:
    SHADOW_JOIN_PENDING.set(len(join))
    for reason in _reported:
        now = getattr(join.stats, reason)
        if now > _reported[reason]:
            SHADOW_JOIN_DROPPED.labels(reason=reason).inc(now - _reported[reason])
            _reported[reason] = now


@app.agent(topics.results, name="shadow", concurrency=1)
async def shadow(stream):
    await runtime.registry.ready.wait()
    async for event in stream.events():
        try:
            result = InferenceResult.model_validate_json(event.value)
            if result.role not in COMPARED_ROLES or result.run_id:
                continue
            if stable_version(runtime.registry.registry) is None:
                continue
            entry = join.add(result.request_id, result.version_id, event.value.decode(),
                             answering(result))
            outputs = comparisons_for(result, entry)
            if outputs:
                await emit(outputs)
                EVENTS.labels(agent="shadow", outcome="compared").inc(len(outputs))
        except Exception as exc:
            log.exception("shadow failed on one event")
            await send_to_dlq(event, repr(exc), "shadow")
        finally:
            publish_join_metrics()


@timer(config.shadow.expire_interval_s, name="shadow_join_expiry")
async def expire_joins() -> None:
    """Expiry when no result comes to run it (the join is no Faust table: a timer may)."""
    join.expire()
    publish_join_metrics()
