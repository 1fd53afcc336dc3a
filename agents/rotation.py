"""Rotation: the pure decision from the numbers that measure candidates.

One tick of the rotation agent (streams/flows/rotation.py) does, for each candidate that is
not paused (shadow and canary versions, sorted by id):

1. proposals(): the move it would make if its gates pass (shadow -> first canary step ->
   next step ... -> stable; a canary may also try `replace_stable`, straight to stable).
2. window_for(): the window its numbers come from. Never before the version entered its
   current state or step (each stage is judged on its own traffic), and at most `window_s`
   long; with `on_inconclusive: extend` up to `max_window_s`. It ends `settle_s` before the
   tick, so that rows still on their way to ClickHouse do not change a re-run.
3. The queries of infra/queries.py (`measurement`), for the candidate and for the stable
   version over the same window. A candidate scoped to repositories (a learner refit) is
   measured against the stable version that serves them, on their requests only: the
   numbers of both sides come from the same traffic.
4. decide(): the gates (agents/gates.py) and the policies turn the numbers into a verdict:
   promote, rollback (a failing canary back to shadow), quarantine, or hold. Every verdict
   is a LifecycleEvent with its evidence; a hold changes nothing and is only recorded.

Event ids are derived from the registry position, and events carry that position, so repeated
ticks, restarts and a second worker can never apply the same decision twice or a stale one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import LifecycleAction, LifecycleEvent, Registry, VersionState

from .config import RotationConfig
from .gates import GateConfig, GateDecision, VersionMetrics, evaluate_gates
from .lifecycle_commands import next_canary_step, transition_event_id
from .registry import apply_event
from .routing import same_scope_stable

LATENCY_SAMPLE = 20_000
S = VersionState


@dataclass(frozen=True)
class Window:
    """[start, end) in UTC; `scope` says how it was chosen."""

    start: datetime
    end: datetime
    scope: str = "sliding"  # sliding | stage | extended

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(),
                "seconds": round(self.seconds, 3), "scope": self.scope}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Window:
        return cls(datetime.fromisoformat(d["start"]), datetime.fromisoformat(d["end"]),
                   d.get("scope", "sliding"))


def metrics_from_rows(version_id: str, interactions: Mapping[str, Any],
                      agreement: Mapping[str, Any] | None) -> VersionMetrics:
    agreement = agreement or {}
    return VersionMetrics(
        version_id=version_id, n=int(interactions.get("n") or 0),
        errors=int(interactions.get("errors") or 0),
        latencies_ms=[float(x) for x in interactions.get("latencies") or []],
        agree=int(agreement.get("agree") or 0), compared=int(agreement.get("compared") or 0),
        correct=int(interactions.get("correct") or 0),
        labelled=int(interactions.get("labelled") or 0),
        cost_sum=float(interactions.get("cost_sum") or 0.0),
        cost_sumsq=float(interactions.get("cost_sumsq") or 0.0))


Rows = Mapping[str, Sequence[Mapping[str, Any]]]  # query name -> result rows


def metrics_from_results(candidate: str, stable: str | None, rows: Rows
                         ) -> tuple[VersionMetrics, VersionMetrics | None]:
    """The query results of infra.queries.measurement (name -> rows) as the gates' inputs."""
    def first(name: str) -> Mapping[str, Any]:
        got = rows.get(name) or []
        return got[0] if got else {}

    cand = metrics_from_rows(candidate, first("candidate"), first("agreement"))
    stab = metrics_from_rows(stable, first("stable"), None) if stable is not None else None
    return cand, stab


# -- proposals and windows --------------------------------------------------------------------

@dataclass(frozen=True)
class Proposal:
    version_id: str
    from_state: VersionState
    to_state: VersionState
    traffic_percent: float
    gate_name: str


def proposals(registry: Registry, cfg: RotationConfig) -> list[Proposal]:
    """The next move each candidate would make if its gates pass; paused versions make none.
    A canary with `replace_stable` configured first proposes going straight to stable."""
    out = []
    for vid, entry in sorted(registry.versions.items()):
        if entry.paused:
            continue
        if entry.state == S.shadow:
            out.append(Proposal(vid, entry.state, S.canary, cfg.canary_steps[0],
                                "shadow_to_canary"))
        elif entry.state == S.canary:
            if cfg.replace_stable is not None:
                out.append(Proposal(vid, entry.state, S.stable, 100.0, "replace_stable"))
            step = next_canary_step(entry.traffic_percent, cfg.canary_steps)
            if step is None:
                out.append(Proposal(vid, entry.state, S.stable, 100.0, "canary_to_stable"))
            else:
                out.append(Proposal(vid, entry.state, S.canary, step, "canary_step"))
    return out


def window_for(since: datetime | None, cfg: RotationConfig, now: datetime) -> Window:
    """The window of a decision at `now` for a version in its current stage since `since`."""
    end = now - timedelta(seconds=cfg.settle_s)
    longest = cfg.max_window_s if cfg.on_inconclusive == "extend" else cfg.window_s
    start = end - timedelta(seconds=longest)
    scope = "extended" if cfg.on_inconclusive == "extend" else "sliding"
    if since is not None and since >= start:
        start, scope = min(since, end), "stage"
    return Window(start=_ms(start), end=_ms(end), scope=scope)


def _ms(value: datetime) -> datetime:
    value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def gate_config(cfg: RotationConfig, gate_name: str) -> GateConfig:
    gates = getattr(cfg, gate_name)
    if not isinstance(gates, GateConfig):
        raise ValueError(f"rotation has no gate set {gate_name!r}")
    return gates


def policy(cfg: RotationConfig) -> dict[str, Any]:
    return {"on_inconclusive": cfg.on_inconclusive,
            "inconclusive_timeout_s": cfg.inconclusive_timeout_s, "on_fail": cfg.on_fail,
            "window_s": cfg.window_s, "max_window_s": cfg.max_window_s,
            "canary_steps": list(cfg.canary_steps)}


def config_hash(cfg: RotationConfig, gate_name: str | None = None) -> str:
    """sha256 (16 hex) of what decides: the gate set (or the whole rotation config when no
    gate set is named) and the policies."""
    if gate_name is None:
        body: Any = cfg.model_dump(mode="json")
    else:
        body = {"gate_set": gate_name,
                "gates": gate_config(cfg, gate_name).model_dump(mode="json"),
                "policy": policy(cfg)}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


# -- the decision ---------------------------------------------------------------------------

PROMOTE, ROLLBACK, QUARANTINE, HOLD = "promote", "rollback", "quarantine", "hold"


@dataclass
class Verdict:
    proposal: Proposal
    decision: GateDecision
    verdict: str  # promote | rollback | quarantine | hold | skip (replace_stable not met)
    why: str
    event: LifecycleEvent | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def moves(self) -> bool:
        return self.verdict in (PROMOTE, ROLLBACK, QUARANTINE)


def _verdict(registry: Registry, proposal: Proposal, decision: GateDecision,
             cfg: RotationConfig, dwell_s: float | None) -> tuple[str, str]:
    outcome = decision.outcome
    canary = proposal.from_state == S.canary
    if proposal.gate_name == "replace_stable":
        if outcome == "pass":
            return PROMOTE, "replace_stable: candidate clearly better than stable"
        return "skip", f"replace_stable: {outcome}; the regular step decides"
    if outcome == "pass":
        # the stable version a promotion would replace (a scoped one replaces its scope's)
        stable = same_scope_stable(registry, proposal.version_id)
        if (proposal.to_state == S.stable and stable is not None
                and registry.versions[stable].paused):
            return HOLD, f"gates pass, but stable version {stable} is paused"
        return PROMOTE, f"{proposal.gate_name}: every gate passes"
    if outcome == "fail":
        failed = ", ".join(g.name for g in decision.gates if g.outcome == "fail")
        if cfg.on_fail == "quarantine":
            return QUARANTINE, f"{proposal.gate_name}: failed {failed}; policy quarantines"
        if canary:
            return ROLLBACK, f"{proposal.gate_name}: failed {failed}; rolled back to shadow"
        return HOLD, f"{proposal.gate_name}: failed {failed}; a shadow stays in shadow"
    if (cfg.on_inconclusive == "rollback_after_timeout" and canary and dwell_s is not None
            and dwell_s >= cfg.inconclusive_timeout_s):
        return ROLLBACK, (f"{proposal.gate_name}: inconclusive after {dwell_s:.0f} s in the "
                          f"stage (timeout {cfg.inconclusive_timeout_s:g} s); rolled back")
    undecided = ", ".join(g.name for g in decision.gates if g.outcome == "inconclusive")
    return HOLD, f"{proposal.gate_name}: inconclusive ({undecided}); policy {cfg.on_inconclusive}"


def decide(registry: Registry, proposal: Proposal, candidate: VersionMetrics,
           stable: VersionMetrics | None, cfg: RotationConfig, sql: dict[str, str],
           window: Window, now: datetime, record_every_s: float | None = None) -> Verdict:
    """Gates + policies -> the verdict and its LifecycleEvent (a hold event for holds, none
    for an unmet replace_stable). Deterministic: the same registry, numbers and time bucket
    give the same event id."""
    entry = registry.versions[proposal.version_id]
    dwell_s = (now - entry.since).total_seconds() if entry.since is not None else None
    gates = gate_config(cfg, proposal.gate_name)
    decision = evaluate_gates(candidate, stable, gates, dwell_s=dwell_s)
    verdict, why = _verdict(registry, proposal, decision, cfg, dwell_s)
    evidence = {
        "kind": "rotation", "gate_set": proposal.gate_name, "verdict": verdict, "why": why,
        "proposal": {"from_state": proposal.from_state.value,
                     "from_traffic": entry.traffic_percent,
                     "to_state": proposal.to_state.value,
                     "to_traffic": proposal.traffic_percent},
        "position": registry.applied, "window": window.to_dict(),
        "stage_since": entry.since.isoformat() if entry.since else None,
        "dwell_s": None if dwell_s is None else round(dwell_s, 3),
        "candidate": proposal.version_id,
        "stable_version": stable.version_id if stable else None,
        **decision.to_evidence(),
        "policy": policy(cfg), "config_hash": config_hash(cfg, proposal.gate_name),
        "sql": dict(sql), "queries": list(sql.values()),
    }
    out = Verdict(proposal, decision, verdict, why, evidence=evidence)
    if verdict == "skip":
        return out
    vid = proposal.version_id
    common = dict(task=registry.task, version_id=vid, from_state=proposal.from_state,
                  actor="rotation", evidence=evidence, position=registry.applied,
                  occurred_at=now)
    if verdict in (PROMOTE, ROLLBACK, QUARANTINE):
        out.event = _transition(registry, proposal, verdict, why, common)
        _, refused = apply_event(registry, out.event)
        if refused is None:
            return out
        # The gates say move, the registry says no (e.g. canary shares above 100 %): hold,
        # and say why, rather than send an event that the fold would skip on every tick.
        out.verdict = verdict = HOLD
        out.why = why = f"{why}; but the move cannot apply: {refused.text}"
        evidence.update({"verdict": verdict, "why": why})
        common["evidence"] = evidence
    every = record_every_s or cfg.record_every_s
    bucket = int(now.timestamp() // every) if every > 0 else 0
    since = entry.since.isoformat() if entry.since else ""
    key = f"{registry.task}|{vid}|hold|{registry.applied}|{since}|" \
          f"{proposal.gate_name}|{decision.signature()}|{bucket}"
    out.event = LifecycleEvent(
        event_id=hashlib.sha256(key.encode()).hexdigest()[:32],
        action=LifecycleAction.hold, to_state=proposal.from_state,
        traffic_percent=entry.traffic_percent, reason=why, **common)
    return out


def _transition(registry: Registry, proposal: Proposal, verdict: str, why: str,
                common: dict[str, Any]) -> LifecycleEvent:
    vid = proposal.version_id
    if verdict == PROMOTE:
        return LifecycleEvent(
            event_id=transition_event_id(registry.task, vid, proposal.from_state,
                                         proposal.to_state, registry.applied),
            action=LifecycleAction.promote, to_state=proposal.to_state,
            traffic_percent=proposal.traffic_percent if proposal.to_state == S.canary else 0.0,
            reason=why, **common)
    to = S.shadow if verdict == ROLLBACK else S.quarantined
    action = LifecycleAction.rollback if verdict == ROLLBACK else LifecycleAction.quarantine
    return LifecycleEvent(
        event_id=transition_event_id(registry.task, vid, proposal.from_state, to,
                                     registry.applied),
        action=action, to_state=to, traffic_percent=0.0, reason=why, **common)


# -- explain: the same decision again ----------------------------------------------------------

def reevaluate(evidence: dict[str, Any], rows: Rows,
               cfg: RotationConfig | None = None) -> dict[str, Any]:
    """Re-judge a stored rotation decision on freshly queried rows (name -> rows of the
    stored SQL): with the stored gate config, and with `cfg`'s gate set when given.

    Returns {"then": ..., "now": ..., "now_current_config": ..., "same_numbers": bool,
    "same_outcome": bool, ...}.
    """
    gate_set = evidence.get("gate_set")
    stored_cfg = GateConfig.model_validate(evidence.get("config") or {})
    candidate_id = str(evidence.get("candidate"))
    stable_id = evidence.get("stable_version")
    cand, stab = metrics_from_results(candidate_id, stable_id, rows)
    dwell = evidence.get("dwell_s")
    now_stored = evaluate_gates(cand, stab, stored_cfg, dwell_s=dwell)
    out: dict[str, Any] = {
        "event_gate_set": gate_set,
        "then": {"outcome": evidence.get("outcome"), "samples": evidence.get("samples"),
                 "gates": {g["name"]: g["outcome"] for g in evidence.get("gates", [])}},
        "now": {"outcome": now_stored.outcome, "samples": now_stored.samples,
                "gates": {g.name: g.outcome for g in now_stored.gates},
                "detail": [g.to_dict() for g in now_stored.gates]},
    }
    out["same_numbers"] = _same_samples(evidence.get("samples") or {}, now_stored.samples)
    out["same_outcome"] = out["then"]["outcome"] == now_stored.outcome
    if cfg is not None and gate_set and getattr(cfg, gate_set, None) is not None:
        current = gate_config(cfg, gate_set)
        now_current = evaluate_gates(cand, stab, current, dwell_s=dwell)
        out["now_current_config"] = {
            "outcome": now_current.outcome, "config_hash": config_hash(cfg, gate_set),
            "config_changed": config_hash(cfg, gate_set) != evidence.get("config_hash"),
            "gates": {g.name: g.outcome for g in now_current.gates}}
    return out


def _same_samples(then: dict[str, Any], now: dict[str, Any]) -> bool:
    return json.dumps(then, sort_keys=True) == json.dumps(now, sort_keys=True)
