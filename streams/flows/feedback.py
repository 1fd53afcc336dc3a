"""feedback: people's verdicts on findings -> suppression filters in versions' specs.

The sink stores every Feedback event (`reviewbus feedback FINGERPRINT --false-positive`); on
the leader, every `feedback.interval_s`, this reads the verdicts per version and rule from
ClickHouse and applies agents/feedback.py: a rule of a candidate whose false-positive rate is
far above the stable version's gets `{"suppress_rule": rule}` added to its spec by an
`update_spec` LifecycleEvent (the inference flow builds its next batch from the registry's
spec), and loses it again when later verdicts clear it. Each change is also a HealingAction
`filter` with the numbers in its reason and the full evidence on the lifecycle event.
"""

from __future__ import annotations

import hashlib

from agents.feedback import apply_change, baselines_of, filter_changes
from agents.routing import stable_version
from infra import queries
from schemas import HealingAction, LifecycleAction, LifecycleEvent, VersionState

from ..context import AppContext, emit, log
from ..metrics import EVENTS, LIFECYCLE

FILTERED_STATES = (VersionState.shadow, VersionState.canary, VersionState.deprecated)


async def update_filters(ctx: AppContext) -> list[LifecycleEvent]:
    """One pass; the events emitted (one per version whose filters change)."""
    if ctx.store is None or not ctx.config.feedback.enabled or ctx.registry.frozen:
        return []
    registry = ctx.registry.registry
    stable = stable_version(registry)
    candidates = {v: list(e.spec.filters) for v, e in registry.versions.items()
                  if e.state in FILTERED_STATES}
    baselines = baselines_of(registry, candidates)
    if not any(baselines.values()):
        return []
    query = queries.verdicts(registry.task, ctx.config.feedback.window_s,
                             ctx.config.feedback.verdict_window_s, ctx.settings.timer_max_lag_s)
    rows = (await ctx.store.query(query.sql, query.params)).as_dicts()
    original = {v: list(spec.filters) if (spec := ctx.config.spec(v)) else [] for v in candidates}
    changes = filter_changes(rows, stable, candidates, original, ctx.config.feedback,
                             baselines)
    by_version: dict[str, list] = {}
    for change in changes:
        by_version.setdefault(change.version_id, []).append(change)
    outputs, events = [], []
    for vid, mine in sorted(by_version.items()):
        entry = registry.versions[vid]
        filters = list(entry.spec.filters)
        for change in mine:
            filters = apply_change(filters, change)
        spec = entry.spec.model_copy(update={"filters": filters})
        summary = "; ".join(c.reason() for c in mine)
        digest = hashlib.sha256(
            f"{registry.task}|{vid}|update_spec|{registry.applied}|{summary}".encode())
        event_id = digest.hexdigest()[:32]
        event = LifecycleEvent(
            event_id=event_id, task=registry.task, version_id=vid,
            action=LifecycleAction.update_spec, from_state=entry.state, to_state=entry.state,
            actor="feedback", reason=f"false-positive filter: {summary}"[:1000],
            evidence={"changes": [{"rule_id": c.rule_id, "action": c.action, **c.evidence}
                                  for c in mine], "filters": filters},
            spec=spec.model_dump(mode="json"))
        events.append(event)
        outputs.append((ctx.topics.lifecycle, vid, event))
        for i, change in enumerate(mine):
            outputs.append((ctx.topics.healing, vid, HealingAction(
                event_id=f"fl-{event_id}-{i}", task=registry.task, action="filter",
                version_id=vid, target_version=None,
                reason=f"{change.action} suppress_rule {change.rule_id}: {change.reason()}"[:500])))
    if outputs:
        await emit(outputs)
        for event in events:
            log.warning("version %s filters updated: %s", event.version_id, event.reason)
            LIFECYCLE.labels(action="update_spec").inc()
        EVENTS.labels(agent="feedback", outcome="filter").inc(len(changes))
    return events


def register(ctx: AppContext) -> None:
    @ctx.timer(ctx.config.feedback.interval_s, name="feedback_filters", on_leader=True)
    async def feedback_timer() -> None:
        if ctx.registry.ready.is_set():
            await update_filters(ctx)
