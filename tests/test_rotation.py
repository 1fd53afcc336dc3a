"""Rotation (pure): which move each candidate proposes, and what a decision emits."""

from __future__ import annotations

from agents.config import RotationConfig
from agents.gates import GateConfig, VersionMetrics
from agents.registry import fold, register_events
from agents.rotation import decide, interactions_sql, proposals, quote
from schemas import LifecycleAction, VersionSpec, VersionState

CFG = RotationConfig(
    canary_steps=(5, 50),
    shadow_to_canary=GateConfig(min_samples=20, max_error_rate=0.2, max_latency_ratio=2.0,
                                min_agreement=0.5),
    canary_step=GateConfig(min_samples=20, max_error_rate=0.2, max_latency_ratio=2.0,
                           min_agreement=0.5),
)


def registry(**states):
    specs = [VersionSpec(id=v, backend="fake", initial_state=s,
                         initial_traffic_percent=5 if s == "canary" else 0)
             for v, s in states.items()]
    reg = fold("code-review", [])
    return fold("code-review", register_events(specs, reg))


def metrics(vid, n, errors, latency=10.0, agree=None):
    return VersionMetrics(version_id=vid, n=n, errors=errors, latencies_ms=[latency] * n,
                          agree=n if agree is None else agree, compared=n)


def test_proposals_follow_the_lifecycle():
    reg = registry(a="stable", b="shadow", c="canary")
    moves = {p.version_id: (p.to_state, p.traffic_percent, p.gate_name) for p in proposals(reg, CFG)}
    assert moves == {"b": (VersionState.canary, 5, "shadow_to_canary"),
                     "c": (VersionState.canary, 50, "canary_step")}


def test_a_good_candidate_is_promoted_with_evidence():
    reg = registry(a="stable", b="shadow")
    proposal = proposals(reg, CFG)[0]
    decision, event = decide(reg, proposal, metrics("b", 200, 0), metrics("a", 200, 0), CFG,
                             ["SELECT 1"])
    assert decision.outcome == "pass"
    assert event.action == LifecycleAction.promote and event.to_state == VersionState.canary
    assert event.traffic_percent == 5 and event.actor == "rotation"
    assert event.evidence["queries"] == ["SELECT 1"] and event.evidence["config_hash"]
    # Deterministic id: a second tick on the same registry proposes the same event.
    _, again = decide(reg, proposal, metrics("b", 200, 0), metrics("a", 200, 0), CFG, [])
    assert again.event_id == event.event_id


def test_too_little_data_emits_nothing():
    reg = registry(a="stable", b="shadow")
    decision, event = decide(reg, proposals(reg, CFG)[0], metrics("b", 5, 0), metrics("a", 5, 0),
                             CFG, [])
    assert decision.outcome == "inconclusive" and event is None


def test_a_failing_canary_goes_back_to_shadow():
    reg = registry(a="stable", c="canary")
    decision, event = decide(reg, proposals(reg, CFG)[0], metrics("c", 200, 120),
                             metrics("a", 200, 0), CFG, [])
    assert decision.outcome == "fail"
    assert event.action == LifecycleAction.demote and event.to_state == VersionState.shadow


def test_a_failing_shadow_stays_put():
    reg = registry(a="stable", b="shadow")
    _, event = decide(reg, proposals(reg, CFG)[0], metrics("b", 200, 150), metrics("a", 200, 0),
                      CFG, [])
    assert event is None


def test_sql_quotes_values():
    assert quote("it's") == "'it\\'s'"
    sql = interactions_sql("t'x", "v1", 60)
    assert "'t\\'x'" in sql and "INTERVAL 60 SECOND" in sql
