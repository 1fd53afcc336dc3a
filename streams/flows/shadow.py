"""shadow: join candidate and stable results by request id; emit ShadowComparison."""

from __future__ import annotations

import time

from agents.routing import stable_version
from agents.shadow import compare_results
from schemas import InferenceResult, Role

from .. import topics
from ..app import app
from ..metrics import EVENTS
from ..runtime import emit, log, runtime, send_to_dlq
from ..tables import shadow_join

JOIN_TTL_S = 900.0
COMPARED_ROLES = (Role.primary, Role.shadow, Role.canary)


def comparisons_for(result: InferenceResult, entry: dict) -> list:
    stable = stable_version(runtime.registry.registry)
    if stable is None:
        return []
    if result.version_id == stable:
        pairs = [(result, InferenceResult.model_validate_json(raw))
                 for v, raw in entry.items() if v not in (stable, "_ts")]
    elif stable in entry:
        pairs = [(InferenceResult.model_validate_json(entry[stable]), result)]
    else:
        pairs = []
    return [(topics.shadow_comparisons, cand.version_id,
             compare_results(base, cand, label=result.label))
            for base, cand in pairs]


@app.agent(topics.results, name="shadow", concurrency=1)
async def shadow(stream):
    await runtime.registry.ready.wait()
    async for event in stream.events():
        try:
            result = InferenceResult.model_validate_json(event.value)
            if result.role not in COMPARED_ROLES or result.run_id:
                continue
            entry = dict(shadow_join[result.request_id])
            entry.setdefault("_ts", time.time())
            entry[result.version_id] = event.value.decode()
            shadow_join[result.request_id] = entry
            outputs = comparisons_for(result, entry)
            if outputs:
                await emit(outputs)
                EVENTS.labels(agent="shadow", outcome="compared").inc(len(outputs))
        except Exception as exc:
            log.exception("shadow failed on one event")
            await send_to_dlq(event, repr(exc), "shadow")


@app.timer(60.0)
async def expire_joins() -> None:
    cutoff = time.time() - JOIN_TTL_S
    for key, entry in list(shadow_join.items()):
        if entry.get("_ts", 0) < cutoff:
            del shadow_join[key]
