"""The false-positive filter (agents/feedback.py): when to add and remove a suppression, the
verdict SQL on a real chDB store, and the registry's `update_spec` event that carries it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agents.feedback import (
    FeedbackFilterConfig,
    FilterChange,
    apply_change,
    filter_changes,
    suppressed_rules,
)
from agents.registry import apply_event, fold
from infra import queries
from infra.store import Store
from schemas import (
    ChangeType,
    Feedback,
    Finding,
    InferenceResult,
    LifecycleAction,
    LifecycleEvent,
    Role,
    Status,
    VersionState,
)

CFG = FeedbackFilterConfig(min_feedback=5, margin=0.3)


def row(version: str, rule: str, fp: int, tp: int) -> dict:
    return {"version_id": version, "rule_id": rule, "fp": fp, "tp": tp}


def test_a_rule_far_above_stable_gets_suppressed():
    rows = [row("cand", "S101", 9, 1), row("cand", "F401", 1, 9), row("st", "F401", 1, 9)]
    changes = filter_changes(rows, "st", {"cand": [], "st": []}, {}, CFG)
    assert [(c.version_id, c.rule_id, c.action) for c in changes] == [("cand", "S101", "add")]
    e = changes[0].evidence
    assert (e["fp"], e["tp"], e["baseline"], e["baseline_basis"]) == (9, 1, 0.1, "all rules")
    assert e["fp_rate_low"] > 0.1 + 0.3
    assert "suppress S101: 9 of 10" in changes[0].reason()


def test_not_enough_feedback_or_not_far_enough_changes_nothing():
    assert filter_changes([row("cand", "S101", 4, 0)], "st", {"cand": []}, {}, CFG) == []
    # 6 of 10 false positive: the lower bound (~0.31) is not above 0.1 + 0.3
    rows = [row("cand", "S101", 6, 4), row("st", "X", 1, 9)]
    assert filter_changes(rows, "st", {"cand": []}, {}, CFG) == []
    assert filter_changes(rows, None, {"cand": []}, {}, CFG) == []  # no stable: no baseline


def test_the_same_rule_of_stable_is_the_baseline_when_judged_enough():
    rows = [row("cand", "S101", 9, 1), row("st", "S101", 8, 2)]  # stable as bad on this rule
    assert filter_changes(rows, "st", {"cand": []}, {}, CFG) == []


def test_the_stable_version_is_never_filtered():
    rows = [row("st", "S101", 50, 0)]
    assert filter_changes(rows, "st", {"st": []}, {}, CFG) == []


def test_a_filter_we_added_is_removed_when_the_evidence_clears_it_but_never_the_files():
    current = {"cand": [{"suppress_rule": "S101"}, {"suppress_rule": ["B101", "E501"]}]}
    original = {"cand": [{"suppress_rule": ["B101", "E501"]}]}
    rows = [row("cand", "S101", 2, 8), row("cand", "B101", 0, 10)]
    changes = filter_changes(rows, "st", current, original, CFG)
    assert [(c.rule_id, c.action) for c in changes] == [("S101", "remove")]
    # Still bad: it stays (hysteresis: removal needs the rate down to baseline + margin).
    assert filter_changes([row("cand", "S101", 6, 4)], "st", current, original, CFG) == []


def test_apply_change():
    filters = [{"suppress_rule": ["A", "B"]}, {"min_severity": "low"}]
    added = apply_change(filters, FilterChange("v", "C", "add"))
    assert added == [*filters, {"suppress_rule": "C"}]
    assert suppressed_rules(added) == {"A", "B", "C"}
    removed = apply_change(added, FilterChange("v", "A", "remove"))
    assert removed == [{"suppress_rule": ["B"]}, {"min_severity": "low"}, {"suppress_rule": "C"}]
    assert apply_change([{"suppress_rule": ["A"]}], FilterChange("v", "A", "remove")) == []


def result(version: str, request: str, rules: list[str], ago_s: float = 0) -> InferenceResult:
    findings = [Finding(fingerprint=f"fp-{request}-{rule}", dimension="security",
                        severity="low", confidence=0.5, path="a.py", line=1, rule_id=rule,
                        message="m", source="test") for rule in rules]
    return InferenceResult(request_id=request, task="code-review", version_id=version,
                           role=Role.shadow, status=Status.ok, latency_ms=1,
                           change_type=ChangeType(label="x", confidence=1), findings=findings,
                           occurred_at=datetime.now(UTC) - timedelta(seconds=ago_s))


def verdict(fp: str, v: str, minutes: int) -> Feedback:
    return Feedback(fingerprint=fp, verdict=v,
                    occurred_at=datetime.now(UTC) - timedelta(minutes=minutes))


def test_verdict_sql_on_chdb_counts_the_latest_verdict_per_fingerprint(tmp_path):
    store = Store.connect(f"chdb://{tmp_path / 'ch'}")
    store.migrate()
    try:
        store.insert_events([
            result("cand", "r1", ["S101", "F401"]), result("cand", "r2", ["S101"]),
            result("cand", "r3", ["S101"]), result("st", "r1", ["F401"]),
            result("cand", "old", ["S101"], ago_s=40 * 24 * 3600),  # outside the window
            verdict("fp-r1-S101", "false_positive", 10),
            verdict("fp-r2-S101", "false_positive", 10),
            verdict("fp-r3-S101", "false_positive", 10),
            verdict("fp-r3-S101", "true_positive", 1),  # changed their mind: latest wins
            verdict("fp-r1-F401", "true_positive", 5),
            verdict("fp-old-S101", "false_positive", 5),
        ])
        query = queries.verdicts("code-review", 30 * 24 * 3600, 365 * 24 * 3600, 24 * 3600)
        rows = store.query(query.sql, query.params).as_dicts()
        assert rows == [row("cand", "F401", 0, 1), row("cand", "S101", 2, 1),
                        row("st", "F401", 0, 1)]
        query = queries.fingerprint("fp-r1-F401")
        seen = store.query(query.sql, query.params).as_dicts()
        assert {(r["version_id"], r["rule_id"]) for r in seen} == {("cand", "F401"),
                                                                  ("st", "F401")}
        query = queries.fingerprint("nope' OR '1'='1")
        assert store.query(query.sql, query.params).as_dicts() == []
    finally:
        store.close()


# ---- the update_spec lifecycle event ---------------------------------------------------------


def register(version: str, state: str, filters=()) -> LifecycleEvent:
    return LifecycleEvent(task="code-review", version_id=version,
                          action=LifecycleAction.register, to_state=VersionState(state),
                          actor="config",
                          spec={"id": version, "backend": "fake", "params": {"k": 1},
                                "filters": list(filters)})


def update(version: str, state: str, **spec) -> LifecycleEvent:
    base = {"id": version, "backend": "fake", "params": {"k": 1}, "filters": []}
    return LifecycleEvent(task="code-review", version_id=version,
                          action=LifecycleAction.update_spec, from_state=VersionState(state),
                          to_state=VersionState(state), actor="feedback",
                          spec={**base, **spec})


def test_update_spec_changes_filters_only_and_keeps_the_state():
    registry = fold("code-review", [register("st", "stable"), register("cand", "shadow")])
    new, skipped = apply_event(registry, update("cand", "shadow",
                                                filters=[{"suppress_rule": "S101"}]))
    assert skipped is None
    entry = new.versions["cand"]
    assert entry.state == VersionState.shadow and entry.spec.filters == [{"suppress_rule": "S101"}]
    assert new.applied == registry.applied + 1
    for bad, why in [(update("cand", "shadow", params={"k": 2}), "params"),
                     (update("cand", "shadow", backend="analyzers"), "backend"),
                     (update("cand", "canary"), "from_state"),
                     (update("ghost", "shadow", id="ghost"), "unknown version")]:
        _, skipped = apply_event(new, bad)
        assert skipped and why in skipped.text
    event = update("cand", "shadow")
    event = event.model_copy(update={"spec": None})
    assert "without a spec" in apply_event(new, event)[1].text


def test_a_scoped_candidate_is_compared_with_the_stable_version_of_its_repositories():
    """`refit` (scoped to org/a, where `la` is stable) reports S101 as often false as the
    global stable does, but `la`, which serves org/a, almost never: the filter is added
    against `la`'s rate. Compared with the global stable (as before), nothing would change."""
    from agents.feedback import baselines_of
    from agents.lifecycle_commands import register_events
    from schemas import VersionSpec

    specs = [VersionSpec(id=v, backend="fake", initial_state=VersionState(state), repos=repos)
             for v, state, repos in [("base", "stable", []), ("la", "canary", ["org/a"]),
                                     ("refit", "shadow", ["org/a"]),
                                     ("lb", "shadow", ["org/b"]), ("cand", "shadow", [])]]
    registry = fold("code-review", register_events(specs, fold("code-review", [])))
    registry, skipped = apply_event(registry, LifecycleEvent(
        task="code-review", version_id="la", action=LifecycleAction.promote,
        from_state=VersionState.canary, to_state=VersionState.stable, actor="test"))
    assert skipped is None
    baselines = baselines_of(registry, ["refit", "lb", "cand"])
    assert baselines == {"refit": "la", "lb": "base", "cand": "base"}

    rows = [row("refit", "S101", 9, 1), row("base", "S101", 9, 1), row("la", "S101", 0, 10)]
    current = {"refit": [], "la": []}
    [change] = filter_changes(rows, "base", current, {}, CFG, baselines)
    assert (change.version_id, change.rule_id, change.action) == ("refit", "S101", "add")
    assert (change.evidence["stable_version"], change.evidence["baseline"]) == ("la", 0.0)
    assert filter_changes(rows, "base", current, {}, CFG) == []  # the global stable's rate
    # the stable version of a scope is never filtered, however bad its own rates
    # (base's F401 is rarely false, so la's would be filtered if it were a candidate)
    changes = filter_changes([*rows, row("la", "F401", 50, 0), row("base", "F401", 0, 10)],
                             "base", {**current, "la": []}, {}, CFG, {**baselines, "la": "base"})
    assert [(c.version_id, c.rule_id) for c in changes] == [("refit", "S101")]
