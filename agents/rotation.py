"""Rotation: the SQL that measures candidates, and the pure decision from those numbers."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from schemas import LifecycleAction, LifecycleEvent, Registry, VersionState

from .config import RotationConfig
from .gates import GateConfig, GateDecision, VersionMetrics, evaluate_gates
from .registry import next_canary_step, transition_event_id

LATENCY_SAMPLE = 5000


def quote(value: str) -> str:
    """A ClickHouse string literal (values are ids we validated, but never trust that)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def interactions_sql(task: str, version_id: str, window_s: float) -> str:
    return f"""SELECT count() AS n, countIf(status != 'ok') AS errors,
       arraySlice(groupArrayIf(latency_ms, status = 'ok'), 1, {LATENCY_SAMPLE}) AS latencies,
       countIf(label IS NOT NULL) AS labelled,
       countIf(label IS NOT NULL AND predicted_label = label) AS correct
FROM interactions FINAL
WHERE task = {quote(task)} AND version_id = {quote(version_id)} AND run_id = ''
  AND occurred_at >= now64(3) - INTERVAL {int(window_s)} SECOND"""


def agreement_sql(task: str, version_id: str, window_s: float) -> str:
    return f"""SELECT count() AS compared, countIf(change_type_agree = 1) AS agree
FROM shadow_comparisons FINAL
WHERE task = {quote(task)} AND candidate_version = {quote(version_id)}
  AND change_type_agree IS NOT NULL
  AND occurred_at >= now64(3) - INTERVAL {int(window_s)} SECOND"""


def metrics_from_rows(version_id: str, interactions: dict, agreement: dict | None) -> VersionMetrics:
    agreement = agreement or {}
    return VersionMetrics(
        version_id=version_id, n=int(interactions.get("n") or 0),
        errors=int(interactions.get("errors") or 0),
        latencies_ms=[float(x) for x in interactions.get("latencies") or []],
        agree=int(agreement.get("agree") or 0), compared=int(agreement.get("compared") or 0),
        correct=int(interactions.get("correct") or 0),
        labelled=int(interactions.get("labelled") or 0))


@dataclass(frozen=True)
class Proposal:
    version_id: str
    from_state: VersionState
    to_state: VersionState
    traffic_percent: float
    gate_name: str


def proposals(registry: Registry, cfg: RotationConfig) -> list[Proposal]:
    """The next move each candidate would make if its gates pass."""
    out = []
    for vid, entry in sorted(registry.versions.items()):
        if entry.state == VersionState.shadow:
            out.append(Proposal(vid, entry.state, VersionState.canary, cfg.canary_steps[0],
                                "shadow_to_canary"))
        elif entry.state == VersionState.canary:
            step = next_canary_step(entry.traffic_percent, cfg.canary_steps)
            if step is None:
                out.append(Proposal(vid, entry.state, VersionState.stable, 100.0,
                                    "canary_to_stable"))
            else:
                out.append(Proposal(vid, entry.state, VersionState.canary, step, "canary_step"))
    return out


def config_hash(cfg: RotationConfig) -> str:
    return hashlib.sha256(json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()
                          ).hexdigest()[:16]


def decide(registry: Registry, proposal: Proposal, candidate: VersionMetrics,
           stable: VersionMetrics | None, cfg: RotationConfig, queries: list[str]
           ) -> tuple[GateDecision, LifecycleEvent | None]:
    """Pass -> the promotion event; a failing canary -> back to shadow; else no event."""
    gates: GateConfig = getattr(cfg, proposal.gate_name)
    decision = evaluate_gates(candidate, stable, gates)
    evidence = {
        "gate_set": proposal.gate_name, "window_s": cfg.window_s, "outcome": decision.outcome,
        **decision.to_evidence(), "queries": queries, "config_hash": config_hash(cfg),
        "stable_version": stable.version_id if stable else None,
    }
    if decision.outcome == "pass":
        action, to_state, traffic = LifecycleAction.promote, proposal.to_state, \
            proposal.traffic_percent
    elif decision.outcome == "fail" and proposal.from_state == VersionState.canary:
        action, to_state, traffic = LifecycleAction.demote, VersionState.shadow, 0.0
    else:
        return decision, None
    event = LifecycleEvent(
        event_id=transition_event_id(registry.task, proposal.version_id, proposal.from_state,
                                     to_state, registry.applied),
        task=registry.task, version_id=proposal.version_id, action=action,
        from_state=proposal.from_state, to_state=to_state, traffic_percent=traffic,
        actor="rotation", reason=f"{proposal.gate_name}: {decision.outcome}", evidence=evidence)
    return decision, event
