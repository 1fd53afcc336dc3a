"""Rotation (pure): which move each candidate proposes, the window, what a decision emits."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from agents.config import RotationConfig
from agents.gates import GateConfig, VersionMetrics
from agents.lifecycle_commands import register_events
from agents.registry import SkipCode, apply_event, fold
from agents.rotation import (
    Window,
    config_hash,
    decide,
    proposals,
    reevaluate,
    window_for,
)
from infra.queries import interactions, measurement
from schemas import LifecycleAction, LifecycleEvent, VersionSpec, VersionState

S = VersionState
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
GATES = GateConfig(min_samples=20, max_error_rate=0.2, max_latency_ratio=2.0, min_agreement=0.5)
CFG = RotationConfig(canary_steps=(5, 50), window_s=3600, settle_s=0, shadow_to_canary=GATES,
                     canary_step=GATES, canary_to_stable=GATES)


def registry(at=T0, **states):
    specs = [VersionSpec(id=v, backend="fake", initial_state=s,
                         initial_traffic_percent=5 if s == "canary" else 0)
             for v, s in states.items()]
    events = [e.model_copy(update={"occurred_at": at})
              for e in register_events(specs, fold("code-review", []))]
    return fold("code-review", events)


def metrics(vid, n, errors, latency=10.0, agree=None):
    return VersionMetrics(version_id=vid, n=n, errors=errors, latencies_ms=[latency] * n,
                          agree=n if agree is None else agree, compared=n)


def stable_metrics(vid, n, errors=0, latency=10.0):
    return VersionMetrics(version_id=vid, n=n, errors=errors, latencies_ms=[latency] * n)


def run(reg, cand, stable, cfg=CFG, now=T0 + timedelta(minutes=30), index=0):
    proposal = proposals(reg, cfg)[index]
    entry = reg.versions[proposal.version_id]
    window = window_for(entry.since, cfg, now)
    sql = measurement(reg.task, proposal.version_id, stable.version_id if stable else None,
                      window, 86400)
    return decide(reg, proposal, cand, stable, cfg, {k: q.text() for k, q in sql.items()},
                  window, now)


def test_proposals_follow_the_lifecycle():
    reg = registry(a="stable", b="shadow", c="canary")
    moves = {p.version_id: (p.to_state, p.traffic_percent, p.gate_name)
             for p in proposals(reg, CFG)}
    assert moves == {"b": (S.canary, 5, "shadow_to_canary"),
                     "c": (S.canary, 50, "canary_step")}


def test_paused_versions_propose_nothing():
    reg = registry(a="stable", b="shadow", c="canary")
    pause = LifecycleEvent(task="code-review", version_id="c", action=LifecycleAction.pause,
                           to_state=S.canary, actor="user:x")
    reg, _ = apply_event(reg, pause)
    assert [p.version_id for p in proposals(reg, CFG)] == ["b"]


def test_replace_stable_is_tried_first_for_canaries():
    cfg = CFG.model_copy(update={"replace_stable": GATES})
    reg = registry(a="stable", c="canary")
    assert [(p.gate_name, p.to_state) for p in proposals(reg, cfg)] == [
        ("replace_stable", S.stable), ("canary_step", S.canary)]


def test_window_ends_settle_s_before_the_tick():
    cfg = CFG.model_copy(update={"settle_s": 5.0})
    now = T0 + timedelta(hours=10)
    w = window_for(T0 + timedelta(hours=9), cfg, now)
    assert (w.start, w.end) == (T0 + timedelta(hours=9), now - timedelta(seconds=5))
    w = window_for(now - timedelta(seconds=2), cfg, now)  # the stage just began: empty
    assert w.seconds == 0


def test_window_never_reaches_before_the_stage():
    now = T0 + timedelta(hours=10)
    w = window_for(T0 + timedelta(hours=9), CFG, now)
    assert (w.start, w.end, w.scope) == (T0 + timedelta(hours=9), now, "stage")
    w = window_for(T0, CFG, now)  # the stage is older than window_s: the window slides
    assert (w.start, w.scope, w.seconds) == (now - timedelta(hours=1), "sliding", 3600)
    ext = CFG.model_copy(update={"on_inconclusive": "extend", "max_window_s": 6 * 3600})
    w = window_for(T0, ext, now)
    assert (w.seconds, w.scope) == (6 * 3600, "extended")
    assert window_for(T0 + timedelta(hours=9), ext, now).scope == "stage"


def test_sql_is_absolute_and_binds_values():
    w = Window(T0, T0 + timedelta(seconds=90))
    query = interactions("t'x", "v1", w, 3600)
    assert "t'x" not in query.sql and query.params["task"] == "t'x"  # bound, not spliced
    sql = query.text()  # the literal SQL the evidence keeps
    assert "'t\\'x'" in sql
    assert "occurred_at >= toDateTime64('2024-05-01 12:00:00.000', 3, 'UTC')" in sql
    assert "occurred_at < toDateTime64('2024-05-01 12:01:30.000', 3, 'UTC')" in sql
    assert "accepted_at >= toDateTime64('2024-05-01 12:00:00.000', 3, 'UTC') - " \
           "toIntervalMillisecond(3600000)" in sql
    sliding = interactions("t", "v1", 60, 3600).text()  # a plain sliding window
    assert "occurred_at >= now64(3) - toIntervalMillisecond(60000)" in sliding
    assert set(measurement("t", "c", "s", w, 1)) == {"candidate", "agreement", "stable"}
    assert set(measurement("t", "c", None, w, 1)) == {"candidate", "agreement"}


def test_a_good_candidate_is_promoted_with_evidence():
    reg = registry(a="stable", b="shadow")
    v = run(reg, metrics("b", 200, 0), metrics("a", 200, 0))
    assert v.decision.outcome == "pass" and v.verdict == "promote" and v.moves
    e = v.event
    assert e.action == LifecycleAction.promote and e.to_state == S.canary
    assert e.traffic_percent == 5 and e.actor == "rotation" and e.position == reg.applied
    ev = json.loads(json.dumps(e.evidence))
    assert ev["window"]["start"] == T0.isoformat()  # the stage began at registration
    assert ev["window"]["scope"] == "stage" and ev["window"]["seconds"] == 1800
    assert ev["samples"]["candidate"]["n"] == 200 and ev["samples"]["stable"]["n"] == 200
    assert ev["config_hash"] == config_hash(CFG, "shadow_to_canary")
    assert ev["config"]["max_error_rate"] == 0.2 and ev["gate_set"] == "shadow_to_canary"
    assert ev["sql"]["candidate"] == ev["queries"][0] and "FROM interactions" in ev["queries"][0]
    assert ev["stable_version"] == "a" and ev["dwell_s"] == 1800
    err = next(g for g in ev["gates"] if g["name"] == "error_rate")
    assert err["threshold"] == 0.2 and err["candidate"]["interval"][1] < 0.2
    latency = next(g for g in ev["gates"] if g["name"] == "latency_p95")
    assert latency["candidate"]["estimate"] == 10 and latency["stable"]["estimate"] == 10
    # Deterministic id: a second tick on the same registry proposes the same event.
    again = run(reg, metrics("b", 200, 0), metrics("a", 200, 0))
    assert again.event.event_id == e.event_id


def test_too_little_data_is_a_hold():
    reg = registry(a="stable", b="shadow")
    v = run(reg, metrics("b", 5, 0), metrics("a", 5, 0))
    assert v.decision.outcome == "inconclusive" and v.verdict == "hold" and not v.moves
    e = v.event
    assert e.action == LifecycleAction.hold and e.to_state == S.shadow
    assert "inconclusive" in e.reason and "sample_size" in e.reason
    # the same decision in the same record bucket has the same id; a later bucket a new one
    same = run(reg, metrics("b", 5, 0), metrics("a", 5, 0),
               now=T0 + timedelta(minutes=31))
    later = run(reg, metrics("b", 5, 0), metrics("a", 5, 0), now=T0 + timedelta(hours=4))
    assert same.event.event_id == e.event_id != later.event.event_id


def test_a_failing_canary_is_rolled_back_to_shadow():
    reg = registry(a="stable", c="canary")
    v = run(reg, metrics("c", 200, 120), metrics("a", 200, 0))
    assert v.decision.outcome == "fail" and v.verdict == "rollback"
    assert v.event.action == LifecycleAction.rollback and v.event.to_state == S.shadow
    assert "error_rate" in v.event.reason


def test_fail_policy_quarantine():
    cfg = CFG.model_copy(update={"on_fail": "quarantine"})
    reg = registry(a="stable", b="shadow", c="canary")
    v = run(reg, metrics("b", 200, 150), metrics("a", 200, 0), cfg=cfg)
    assert v.verdict == "quarantine" and v.event.to_state == S.quarantined


def test_a_failing_shadow_stays_in_shadow():
    reg = registry(a="stable", b="shadow")
    v = run(reg, metrics("b", 200, 150), metrics("a", 200, 0))
    assert v.verdict == "hold" and v.event.action == LifecycleAction.hold
    assert v.decision.outcome == "fail"


def test_inconclusive_canary_is_rolled_back_after_the_timeout():
    cfg = CFG.model_copy(update={"on_inconclusive": "rollback_after_timeout",
                                 "inconclusive_timeout_s": 3 * 3600})
    reg = registry(a="stable", c="canary")
    early = run(reg, metrics("c", 5, 0), metrics("a", 5, 0), cfg=cfg)
    assert early.verdict == "hold"
    late = run(reg, metrics("c", 5, 0), metrics("a", 5, 0), cfg=cfg,
               now=T0 + timedelta(hours=4))
    assert late.verdict == "rollback" and late.event.to_state == S.shadow
    assert "timeout" in late.event.reason


def test_promotion_to_stable_waits_while_stable_is_paused():
    reg = registry(a="stable", c="canary")
    for step in (50.0,):
        reg, _ = apply_event(reg, LifecycleEvent(
            task="code-review", version_id="c", action=LifecycleAction.traffic,
            from_state=S.canary, to_state=S.canary, traffic_percent=step, actor="t",
            occurred_at=T0))
    reg, _ = apply_event(reg, LifecycleEvent(
        task="code-review", version_id="a", action=LifecycleAction.pause,
        to_state=S.stable, actor="user:x"))
    assert proposals(reg, CFG)[0].to_state == S.stable
    v = run(reg, metrics("c", 200, 0), metrics("a", 200, 0))
    assert v.decision.outcome == "pass" and v.verdict == "hold"
    assert "stable version a is paused" in v.why


def test_replace_stable_only_acts_on_pass():
    cfg = CFG.model_copy(update={"replace_stable": GATES.model_copy(
        update={"max_latency_ratio": 0.8})})
    reg = registry(a="stable", c="canary")
    slow = run(reg, metrics("c", 200, 0, latency=10.0), metrics("a", 200, 0), cfg=cfg)
    assert slow.verdict == "skip" and slow.event is None
    fast = run(reg, metrics("c", 200, 0, latency=5.0), metrics("a", 200, 0), cfg=cfg)
    assert fast.verdict == "promote" and fast.event.to_state == S.stable
    assert fast.event.evidence["gate_set"] == "replace_stable"


def test_the_emitted_event_applies_once_and_only_on_its_registry():
    reg = registry(a="stable", b="shadow")
    v = run(reg, metrics("b", 200, 0), metrics("a", 200, 0))
    new, skipped = apply_event(reg, v.event)
    assert skipped is None and new.versions["b"].state == S.canary
    _, again = apply_event(new, v.event)
    assert again is not None and again.code == SkipCode.duplicate


def test_reevaluate_reproduces_and_compares_with_todays_config():
    reg = registry(a="stable", b="shadow")
    v = run(reg, metrics("b", 200, 0), stable_metrics("a", 200))
    rows = {"candidate": [{"n": 200, "errors": 0, "latencies": [10.0] * 200, "labelled": 0,
                           "correct": 0, "cost_sum": 0, "cost_sumsq": 0}],
            "agreement": [{"compared": 200, "agree": 200}],
            "stable": [{"n": 200, "errors": 0, "latencies": [10.0] * 200, "labelled": 0,
                        "correct": 0}]}
    out = reevaluate(v.event.evidence, rows, CFG)
    assert out["same_numbers"] and out["same_outcome"]
    assert out["now"]["outcome"] == "pass"
    assert out["now_current_config"]["config_changed"] is False
    # more errors since (late rows), and a stricter config today
    rows["candidate"][0]["errors"] = 100
    stricter = CFG.model_copy(update={"shadow_to_canary": GATES.model_copy(
        update={"min_samples": 1000})})
    out = reevaluate(v.event.evidence, rows, stricter)
    assert not out["same_numbers"] and not out["same_outcome"]
    assert out["now"]["outcome"] == "fail"
    assert out["now_current_config"]["config_changed"] is True


def test_config_accepts_the_policy_spellings():
    assert RotationConfig(on_inconclusive="rollback-after-timeout").on_inconclusive == \
        "rollback_after_timeout"
    with pytest.raises(ValueError):
        RotationConfig(on_fail="explode")
    with pytest.raises(ValueError):
        RotationConfig(canary_steps=(50, 5))


def test_a_move_the_registry_would_refuse_becomes_a_hold_with_the_reason():
    # `c` may go from canary 5 to 50, but `d` holds 60 %: 110 % is more than there is.
    reg = registry(a="stable", c="canary", d="shadow")
    reg, _ = apply_event(reg, LifecycleEvent(
        task="code-review", version_id="d", action=LifecycleAction.promote,
        from_state=S.shadow, to_state=S.canary, traffic_percent=60.0, actor="t"))
    v = run(reg, metrics("c", 200, 0), metrics("a", 200, 0))
    assert v.decision.outcome == "pass" and v.verdict == "hold"
    assert "cannot apply: canary shares would add up to 110" in v.why
    assert v.event.action == LifecycleAction.hold and v.event.evidence["verdict"] == "hold"
