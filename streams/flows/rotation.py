"""rotation: on the leader, measure candidates in ClickHouse and promote or roll back.

Idempotent by construction: every event id is derived from the registry position and every
event carries that position, so the fold (streams/flows/registry.py) applies a decision at
most once and never one taken on a stale registry, whichever worker or tick emitted it. At
most one version moves per tick, because the next move must be decided on the registry that
the first one produced.
"""

from __future__ import annotations

import os
import time

from agents.rotation import Verdict, decide, metrics_from_results, proposals, window_for
from agents.routing import baseline_of, outside_of
from infra import queries
from schemas import LifecycleEvent, utcnow

from ..context import AppContext, emit, log
from ..metrics import LIFECYCLE

# ctx.rotation_recorded, per version: (what its last recorded hold said, when) so an unchanged
# hold is recorded once per `record_every_s`; ctx.rotation_sent: ids of transitions sent and
# not folded yet, so a tick that comes before the fold does not send the same event again.
SENT_TTL_S = 60.0


async def measure(ctx: AppContext, sql: dict[str, queries.Query]) -> dict[str, list[dict]]:
    return {name: (await ctx.store.query(q.sql, q.params)).as_dicts()
            for name, q in sql.items()}


async def evaluate(ctx: AppContext, now=None) -> list[Verdict]:
    """Every candidate's verdict on the current registry, stopping at the first that moves."""
    registry = ctx.registry.registry
    cfg = ctx.config.rotation
    now = now or utcnow()
    verdicts: list[Verdict] = []
    for proposal in proposals(registry, cfg):
        entry = registry.versions[proposal.version_id]
        # A candidate is judged against the stable version that serves its scope, on the
        # traffic that version serves alone (a narrower stable's repositories left out).
        repos = entry.spec.repos
        stable_id = baseline_of(registry, proposal.version_id)
        window = window_for(entry.since, cfg, now)
        sql = queries.measurement(ctx.config.task, proposal.version_id, stable_id, window,
                                  ctx.settings.timer_max_lag_s, repos=repos,
                                  exclude=sorted(outside_of(registry, proposal.version_id)))
        candidate, stable = metrics_from_results(proposal.version_id, stable_id,
                                                 await measure(ctx, sql))
        # The evidence keeps the literal SQL: `reviewbus explain` runs it again.
        text = {name: q.text() for name, q in sql.items()}
        verdict = decide(registry, proposal, candidate, stable, cfg, text, window, now)
        log.info("rotation %s %s->%s [%s]: %s -> %s (%s)", proposal.version_id,
                 proposal.from_state.value, proposal.to_state.value, proposal.gate_name,
                 verdict.decision.outcome, verdict.verdict,
                 ", ".join(f"{g.name}={g.outcome}" for g in verdict.decision.gates))
        verdicts.append(verdict)
        if verdict.moves:
            break
    return verdicts


def decided_by() -> dict[str, int]:
    """Which worker took a decision (in its evidence): with several workers, what a leader
    that was stopped and woke up decided can be told from what its successor decided."""
    return {"pid": os.getpid(), "worker_index": int(os.environ.get("REVIEWBUS_WORKER_INDEX")
                                                     or 0)}


def to_send(ctx: AppContext, verdicts: list[Verdict]) -> list[LifecycleEvent]:
    cfg = ctx.config.rotation
    _recorded, _sent = ctx.rotation_recorded, ctx.rotation_sent
    clock = time.monotonic()
    for key, at in list(_sent.items()):
        if clock - at > SENT_TTL_S:
            del _sent[key]
    out: list[LifecycleEvent] = []
    for v in verdicts:
        event = v.event
        if event is None:
            continue
        # The id stays the one derived from the registry position: the same decision taken
        # by two workers is still one event to the fold.
        event = event.model_copy(update={"evidence": {**(event.evidence or {}),
                                                      "decided_by": decided_by()}})
        seen = ctx.registry.registry.seen_event_ids
        if v.moves:
            if event.event_id in _sent or event.event_id in seen:
                continue
            _sent[event.event_id] = clock
            out.append(event)
            continue
        if not cfg.record_holds:
            continue
        key = f"{event.position}|{v.proposal.gate_name}|{v.decision.signature()}"
        last = _recorded.get(event.version_id)
        if last is not None and last[0] == key and clock - last[1] < cfg.record_every_s:
            continue
        if event.event_id in seen:
            continue
        _recorded[event.version_id] = (key, clock)
        out.append(event)
    return out


async def rotate_once(ctx: AppContext, now=None) -> list[LifecycleEvent]:
    """One idempotent pass: the event ids are derived from the registry position."""
    if ctx.store is None or not ctx.registry.ready.is_set() or ctx.registry.frozen:
        return []
    events = to_send(ctx, await evaluate(ctx, now))
    if events:
        # Holds first: they do not move the position, so the transition after them applies.
        events.sort(key=lambda e: e.action.value != "hold")
        await emit([(ctx.topics.lifecycle, e.version_id, e) for e in events])
        for e in events:
            LIFECYCLE.labels(action=e.action.value).inc()
    return events


def register(ctx: AppContext) -> None:
    @ctx.timer(ctx.config.rotation.interval_s, name="rotation", on_leader=True)
    async def rotation() -> None:
        await rotate_once(ctx)
