"""Where a candidate takes part (agents/routing.py `participants`, `outside_of`): only where the
stable version it is measured against serves. A global canary takes no buckets of a repository
that has a stable refit of its own; a version scoped to several repositories, one of which has a
narrower stable version, takes part in the others only; and rotation measures both sides on the
repositories the candidate's baseline serves (checked on chDB)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from agents.config import RotationConfig
from agents.gates import GateConfig
from agents.rotation import Window, decide, metrics_from_results, proposals
from agents.routing import answering_versions, baseline_of, cohort_key, outside_of, traffic_table
from infra.queries import measurement
from infra.store import Store
from schemas import ChangeType, InferenceResult, LifecycleAction, Role, Status, VersionState
from streams.flows import rotation as rotation_flow

from .test_scoped_versions import TASK, A, B, boot, move, promote_to_stable, served

S = VersionState
C = "org/c"


def with_own_stable_for_a(**extra: tuple[str, list[str]]):
    """base: global stable; la: org/a's stable refit; plus `extra` candidates."""
    return promote_to_stable(boot(base=("stable", []), la=("shadow", [A]), **extra), "la")


def test_a_global_canary_takes_no_buckets_of_a_repository_with_its_own_stable():
    reg = move(with_own_stable_for_a(g=("shadow", [])), "g", LifecycleAction.promote,
               S.canary, 50.0)
    assert served(reg, A) == {"la:primary": 200}
    on_b = served(reg, B)
    assert set(on_b) == {"g:canary", "base:primary"} and 70 <= on_b["g:canary"] <= 130
    # org/a's stable keeps all of its repository's traffic; the canary's share is of the rest
    table = traffic_table(reg)
    assert (table["la"], table["g"], table["base"]) == (100.0, 50.0, 50.0)
    assert (baseline_of(reg, "g"), outside_of(reg, "g")) == ("base", frozenset({A}))
    # before org/a had a stable of its own the canary took its share of org/a too
    before = move(boot(base=("stable", []), g=("shadow", [])), "g", LifecycleAction.promote,
                  S.canary, 50.0)
    assert 70 <= served(before, A).get("g:canary", 0) <= 130
    assert outside_of(before, "g") == frozenset()


def test_a_global_shadow_is_not_mirrored_where_a_narrower_stable_serves():
    reg = with_own_stable_for_a(x=("shadow", []), la2=("shadow", [A]))
    for i in range(20):
        assert answering_versions(reg, cohort_key(A, None, f"{i:040x}"), repo=A) == ["la", "la2"]
        assert answering_versions(reg, cohort_key(B, None, f"{i:040x}"), repo=B) == ["base", "x"]
    # org/a's next refit is measured against org/a's stable, on all of org/a
    assert (baseline_of(reg, "la2"), outside_of(reg, "la2")) == ("la", frozenset())
    assert (baseline_of(reg, "x"), outside_of(reg, "x")) == ("base", frozenset({A}))


def test_a_version_scoped_to_several_repositories_takes_part_where_its_baseline_serves():
    """m covers org/a and org/b; org/a has a stable refit of its own (narrower): m is measured
    against the global stable on org/b, takes org/b's buckets as a canary and, promoted,
    serves org/b while org/a keeps its refit and org/c the global stable."""
    reg = with_own_stable_for_a(m=("shadow", [A, B]), g=("shadow", []))
    assert (baseline_of(reg, "m"), outside_of(reg, "m")) == ("base", frozenset({A}))
    assert answering_versions(reg, cohort_key(A, None, "1" * 40), repo=A) == ["la"]
    assert "m" in answering_versions(reg, cohort_key(B, None, "1" * 40), repo=B)
    canary = move(reg, "m", LifecycleAction.promote, S.canary, 50.0)
    assert served(canary, A) == {"la:primary": 200}
    assert 70 <= served(canary, B)["m:canary"] <= 130
    assert served(canary, C) == {"base:primary": 200}
    # its share is read where it takes part (org/b), not from its first repository
    assert traffic_table(canary) == {"base": 100.0, "g": 0.0, "la": 100.0, "m": 50.0}
    stable = move(canary, "m", LifecycleAction.promote, S.stable)
    assert stable.versions["base"].state == S.stable  # another scope: it stays
    assert (served(stable, A), served(stable, B), served(stable, C)) == (
        {"la:primary": 200}, {"m:primary": 200}, {"base:primary": 200})
    assert traffic_table(stable) == {"base": 100.0, "g": 0.0, "la": 100.0, "m": 100.0}
    # a global candidate now takes part in org/c only
    assert outside_of(stable, "g") == frozenset({A, B})
    assert answering_versions(stable, cohort_key(B, None, "1" * 40), repo=B) == ["m"]
    assert answering_versions(stable, cohort_key(C, None, "1" * 40), repo=C) == ["base", "g"]


def test_the_measurement_sql_leaves_out_what_a_narrower_stable_serves():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    sql = measurement(TASK, "g", "base", Window(t0, t0 + timedelta(hours=1)), 60,
                      exclude=[A])
    for side in ("candidate", "stable"):
        assert "repo NOT IN {excluded:Array(String)}" in sql[side].sql
        assert sql[side].params["excluded"] == [A] and "'org/a'" in sql[side].text()
    assert sql["agreement"].params["against"] == "base"
    plain = measurement(TASK, "g", "base", Window(t0, t0 + timedelta(hours=1)), 60)
    assert all("NOT IN" not in q.sql and "against" not in q.params for q in plain.values())


def _result(version: str, repo: str, i: int, correct: bool) -> InferenceResult:
    now = datetime.now(UTC)
    return InferenceResult(
        request_id=f"{repo}-{i}", task=TASK, version_id=version, role=Role.shadow,
        status=Status.ok, latency_ms=10.0, label="bug_fix", repo=repo, sha=f"{i:040x}",
        change_type=ChangeType(label="bug_fix" if correct else "docs", confidence=1.0),
        occurred_at=now + timedelta(seconds=5), accepted_at=now + timedelta(seconds=4))


def test_rotation_measures_a_global_candidate_only_where_the_global_stable_serves(store):
    """The same traffic, measured with and without the rule: the global candidate g is right on
    org/b (where base serves) and wrong on org/a (where la serves, better than base there, so
    a comparison over everything would blame g for org/a)."""
    reg = move(with_own_stable_for_a(g=("shadow", [])), "g", LifecycleAction.promote,
               S.canary, 50.0)
    rows = ([_result("g", A, i, correct=False) for i in range(40)]
            + [_result("g", B, i, correct=True) for i in range(60)]
            + [_result("base", B, i, correct=i % 2 == 0) for i in range(60)]
            + [_result("base", A, 100 + i, correct=True) for i in range(10)])  # fallbacks
    store.insert_events(rows)
    now = datetime.now(UTC)
    window = Window(now - timedelta(minutes=10), now + timedelta(minutes=1))

    def measure(exclude):
        sql = measurement(TASK, "g", baseline_of(reg, "g"), window, 60, exclude=exclude)
        return metrics_from_results("g", "base", {
            name: store.query(q.sql, q.params).as_dicts() for name, q in sql.items()})

    gates = GateConfig(min_samples=20, max_error_rate=0.2, max_latency_ratio=None,
                       min_agreement=None, min_accuracy_delta=0.0)
    cfg = RotationConfig(canary_steps=(50,), settle_s=0, shadow_to_canary=gates,
                         canary_step=gates, canary_to_stable=gates)
    (proposal,) = [p for p in proposals(reg, cfg) if p.version_id == "g"]

    def verdict(cand, stab):
        return decide(reg, proposal, cand, stab, cfg, {}, window, now).verdict

    # the rotation agent's own tick, on this store: it leaves org/a out and promotes
    later = now + timedelta(seconds=60)  # the stage began when the test made g a canary
    tick = asyncio.run(rotation_flow.evaluate(_ctx(reg, store, cfg), now=later))
    (moved,) = [v for v in tick if v.proposal.version_id == "g"]
    assert moved.verdict == "promote" and "NOT IN ['org/a']" in moved.evidence["sql"]["stable"]

    cand, stab = measure(sorted(outside_of(reg, "g")))
    assert (cand.n, cand.labelled, cand.correct) == (60, 60, 60)
    assert (stab.n, stab.correct) == (60, 30)
    assert verdict(cand, stab) == "promote"  # 1.00 against 0.50 on the same repositories
    # over everything, org/a's answers (where la serves, not base) drown g's advantage:
    # 0.60 against 0.57, which the accuracy gate cannot call
    cand_all, stab_all = measure([])
    assert (cand_all.n, cand_all.correct) == (100, 60)
    assert (stab_all.n, stab_all.correct) == (70, 40)
    assert verdict(cand_all, stab_all) == "hold"


def _ctx(reg, store: Store, cfg):
    """What streams/flows/rotation.evaluate reads of a worker's context, on a real store."""
    async def query(sql, params=None):
        return store.query(sql, params)

    return SimpleNamespace(registry=SimpleNamespace(registry=reg),
                           config=SimpleNamespace(task=TASK, rotation=cfg),
                           settings=SimpleNamespace(timer_max_lag_s=60.0),
                           store=SimpleNamespace(query=query))


def test_a_retest_samples_only_where_the_version_takes_part():
    from infra.queries import archive_sample

    q = archive_sample(TASK, 50, 3600, [A, B], exclude=[A])
    assert "repo IN ['org/a', 'org/b'] AND repo NOT IN ['org/a']" in q.text()
