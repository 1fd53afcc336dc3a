"""rotation: on the leader, measure candidates in ClickHouse and promote or roll back."""

from __future__ import annotations

from agents.rotation import (
    agreement_sql,
    decide,
    interactions_sql,
    metrics_from_rows,
    proposals,
)
from schemas import VersionState

from .. import topics
from ..app import app
from ..metrics import LIFECYCLE
from ..runtime import config, emit, log, runtime


async def measure(version_id: str, with_agreement: bool):
    cfg = config.rotation
    queries = [interactions_sql(config.task, version_id, cfg.window_s)]
    rows = (await runtime.store.query(queries[0])).as_dicts()
    agreement = None
    if with_agreement:
        queries.append(agreement_sql(config.task, version_id, cfg.window_s))
        agreement = (await runtime.store.query(queries[-1])).as_dicts()[0]
    return metrics_from_rows(version_id, rows[0] if rows else {}, agreement), queries


async def rotate_once() -> list:
    """One idempotent pass: the event ids are derived from the registry position."""
    if runtime.store is None or not runtime.registry.ready.is_set():
        return []
    registry = runtime.registry.registry
    stable_id = next((v for v, e in registry.versions.items()
                      if e.state == VersionState.stable), None)
    stable = (await measure(stable_id, False))[0] if stable_id else None
    events = []
    for proposal in proposals(registry, config.rotation):
        candidate, queries = await measure(proposal.version_id, True)
        decision, event = decide(registry, proposal, candidate, stable, config.rotation, queries)
        log.info("rotation %s %s->%s: %s (%s)", proposal.version_id, proposal.from_state.value,
                 proposal.to_state.value, decision.outcome,
                 ", ".join(f"{g.name}={g.outcome}" for g in decision.gates))
        if event is not None:
            events.append(event)
            LIFECYCLE.labels(action=event.action.value).inc()
    if events:
        await emit([(topics.lifecycle, e.version_id, e) for e in events])
    return events


@app.timer(config.rotation.interval_s, on_leader=True)
async def rotation() -> None:
    try:
        await rotate_once()
    except Exception:
        log.exception("rotation tick failed; the next tick retries")
