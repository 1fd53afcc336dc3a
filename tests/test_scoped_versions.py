"""Versions scoped to repositories (`spec.repos`: a learner refit, a training job's version)
through the whole lifecycle (pure): a scoped version promoted to stable serves its own
repositories and leaves the global stable version serving every other; a scoped candidate is
measured against the stable version of its repositories, on their requests only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agents.config import RotationConfig
from agents.errors import IllegalTransition
from agents.gates import GateConfig, VersionMetrics
from agents.lifecycle_commands import manual_event, register_events
from agents.registry import apply_event, fold, previous_stable
from agents.rotation import Window, decide, proposals
from agents.routing import (
    answering_versions,
    cohort_key,
    plan_route,
    stable_version,
    traffic_table,
)
from infra.queries import measurement
from schemas import LifecycleAction, LifecycleEvent, Role, VersionSpec, VersionState

S = VersionState
TASK = "code-review"
A, B = "org/a", "org/b"


def boot(**versions: tuple[str, list[str]]):
    """boot(base=("stable", []), la=("shadow", [A]))"""
    specs = [VersionSpec(id=v, backend="fake", initial_state=S(state), repos=repos)
             for v, (state, repos) in versions.items()]
    return fold(TASK, register_events(specs, fold(TASK, [])))


def move(reg, vid, action, to, traffic=0.0):
    event = LifecycleEvent(task=TASK, version_id=vid, action=action,
                           from_state=reg.versions[vid].state, to_state=to,
                           traffic_percent=traffic, actor="test")
    new, why = apply_event(reg, event)
    assert why is None, why
    return new


def promote_to_stable(reg, vid):
    reg = move(reg, vid, LifecycleAction.promote, S.canary, 50.0)
    return move(reg, vid, LifecycleAction.promote, S.stable)


def served(reg, repo: str, n: int = 200) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in range(n):
        plan = plan_route(reg, cohort_key(repo, None, f"{i:040x}"), repo=repo)
        key = f"{plan.primary}:{plan.role.value}"
        out[key] = out.get(key, 0) + 1
    return out


def test_a_scoped_stable_serves_its_repository_and_the_global_stable_the_others():
    reg = promote_to_stable(boot(base=("stable", []), la=("shadow", [A])), "la")
    assert {v: e.state for v, e in reg.versions.items()} == {"base": S.stable, "la": S.stable}
    assert stable_version(reg) == "base"
    assert stable_version(reg, A) == "la" and stable_version(reg, B) == "base"
    assert stable_version(reg, scope={A}) == "la" and stable_version(reg, scope={A, B}) == "base"
    assert served(reg, A) == {"la:primary": 200}
    assert served(reg, B) == {"base:primary": 200}
    assert traffic_table(reg) == {"base": 100.0, "la": 100.0}


def test_a_scoped_canary_takes_its_share_of_its_repository_only():
    reg = move(boot(base=("stable", []), la=("shadow", [A])), "la", LifecycleAction.promote,
               S.canary, 50.0)
    a = served(reg, A, 400)
    assert set(a) == {"la:canary", "base:primary"} and 150 < a["la:canary"] < 250
    assert served(reg, B) == {"base:primary": 200}
    # the stable version of its repository gets a copy of each canary request, to compare
    cohort = next(cohort_key(A, None, f"{i:040x}") for i in range(100)
                  if plan_route(reg, cohort_key(A, None, f"{i:040x}"), repo=A).role == Role.canary)
    assert answering_versions(reg, cohort, repo=A) == ["la", "base"]
    assert traffic_table(reg) == {"base": 100.0, "la": 50.0}
    # canaries of different repositories do not share one 100 %; a global one shares both
    two = boot(base=("stable", []), la=("shadow", [A]), lb=("shadow", [B]), g=("shadow", []))
    two = move(two, "la", LifecycleAction.promote, S.canary, 75.0)
    two = move(two, "lb", LifecycleAction.promote, S.canary, 75.0)
    refused = LifecycleEvent(task=TASK, version_id="g", action=LifecycleAction.promote,
                             from_state=S.shadow, to_state=S.canary, traffic_percent=50.0,
                             actor="test")
    _, why = apply_event(two, refused)
    assert why is not None and "canary shares would add up to" in why.text


def test_the_next_scoped_stable_replaces_the_previous_of_its_scope_only():
    reg = boot(base=("stable", []), la1=("shadow", [A]), la2=("shadow", [A]), lb=("shadow", [B]))
    reg = promote_to_stable(reg, "la1")
    reg = promote_to_stable(reg, "lb")
    reg = promote_to_stable(reg, "la2")
    states = {v: e.state for v, e in reg.versions.items()}
    assert states == {"base": S.stable, "la1": S.deprecated, "la2": S.stable, "lb": S.stable}
    # a rollback restores the previous one of the same scope
    assert previous_stable(reg, exclude="la2") == "la1"
    assert previous_stable(reg, exclude="base") is None
    back = move(reg, "la2", LifecycleAction.rollback, S.deprecated)
    assert back.versions["la1"].state == S.stable and back.versions["base"].state == S.stable
    # a global promotion replaces the global stable only
    (event,) = register_events([VersionSpec(id="g2", backend="fake")], reg)
    reg = promote_to_stable(apply_event(reg, event)[0], "g2")
    assert reg.versions["base"].state == S.deprecated and reg.versions["g2"].state == S.stable
    assert reg.versions["la2"].state == S.stable and reg.versions["lb"].state == S.stable


def test_a_scoped_stable_without_a_predecessor_rolls_back_to_the_global_one():
    reg = promote_to_stable(boot(base=("stable", []), la=("shadow", [A])), "la")
    event = manual_event(reg, "rollback", "la", actor="user:x", reason="worse than it looked")
    assert event.to_state == S.deprecated
    reg, why = apply_event(reg, event)
    assert why is None and reg.versions["la"].state == S.deprecated
    assert reg.versions["base"].state == S.stable
    assert served(reg, A) == {"base:primary": 200}
    # the global stable version still needs one to restore
    with pytest.raises(IllegalTransition, match="no deprecated version to restore"):
        manual_event(reg, "rollback", "base", actor="user:x", reason="no")


def test_registering_a_stable_version_is_refused_per_scope():
    reg = boot(base=("stable", []))
    specs = [VersionSpec(id="la", backend="fake", initial_state=S.stable, repos=[A]),
             VersionSpec(id="g", backend="fake", initial_state=S.stable)]
    events = register_events(specs, reg)
    reg, why = apply_event(reg, events[0])
    assert why is None and reg.versions["la"].state == S.stable
    _, why = apply_event(reg, events[1])
    assert why is not None and "already has stable version base" in why.text


def test_a_scoped_candidate_is_measured_on_its_repositories_against_their_stable():
    reg = promote_to_stable(boot(base=("stable", []), la1=("shadow", [A]), la2=("shadow", [A]),
                                 g=("shadow", [])), "la1")
    gates = GateConfig(min_samples=5)
    cfg = RotationConfig(canary_steps=(50,), shadow_to_canary=gates, canary_step=gates,
                         canary_to_stable=gates)
    assert {p.version_id for p in proposals(reg, cfg)} == {"la2", "g"}
    assert stable_version(reg, scope=set(reg.versions["la2"].spec.repos)) == "la1"
    assert stable_version(reg, scope=set(reg.versions["g"].spec.repos)) == "base"
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    window = Window(t0, t0 + timedelta(hours=1))
    scoped = measurement(TASK, "la2", "la1", window, 60, repos=[A])
    assert "repo IN" in scoped["stable"].sql and scoped["stable"].params["repos"] == [A]
    assert "'org/a'" in scoped["stable"].text()
    assert "repo IN" not in scoped["candidate"].sql  # it sees its repositories only anyway
    assert "repo IN" not in measurement(TASK, "g", "base", window, 60)["stable"].sql


def test_a_paused_global_stable_does_not_hold_a_scoped_promotion_to_stable():
    reg = move(boot(base=("stable", []), la=("shadow", [A]), lb=("shadow", [A])), "la",
               LifecycleAction.promote, S.canary, 50.0)
    reg = move(reg, "base", LifecycleAction.pause, S.stable)
    gates = GateConfig(min_samples=20, max_error_rate=0.2, max_latency_ratio=2.0, min_agreement=None)
    cfg = RotationConfig(canary_steps=(50,), settle_s=0, shadow_to_canary=gates,
                         canary_step=gates, canary_to_stable=gates)
    (proposal,) = [p for p in proposals(reg, cfg) if p.version_id == "la"]
    now = datetime.now(UTC)
    ok = [VersionMetrics(version_id=v, n=200, errors=0, latencies_ms=[10.0] * 200)
          for v in ("la", "base")]
    verdict = decide(reg, proposal, ok[0], ok[1], cfg, {}, Window(now - timedelta(hours=1), now),
                     now)
    assert verdict.verdict == "promote" and verdict.event.to_state == S.stable
    reg, why = apply_event(reg, verdict.event)
    assert why is None and reg.versions["base"].state == S.stable
    # once la is stable for org/a, pausing it holds lb's promotion to stable there
    reg = move(reg, "la", LifecycleAction.pause, S.stable)
    reg = move(reg, "lb", LifecycleAction.promote, S.canary, 50.0)
    (proposal,) = [p for p in proposals(reg, cfg) if p.version_id == "lb"]
    held = decide(reg, proposal, ok[0], ok[1], cfg, {}, Window(now - timedelta(hours=1), now),
                  now)
    assert held.verdict == "hold" and "stable version la is paused" in held.why


def test_update_spec_cannot_rescope_a_stable_version_or_a_canary():
    """Rescoping org/a's stable refit to every repository would have made it a second global
    stable version beside base (and a canary's share was checked on the scope it had)."""
    reg = promote_to_stable(boot(base=("stable", []), la=("shadow", [A]), lb=("shadow", [B]),
                                 lc=("shadow", [A])), "la")
    reg = move(reg, "lb", LifecycleAction.promote, S.canary, 60.0)
    for vid, state in (("la", S.stable), ("lb", S.canary)):
        spec = reg.versions[vid].spec.model_copy(update={"repos": []})
        event = LifecycleEvent(task=TASK, version_id=vid, action=LifecycleAction.update_spec,
                               from_state=state, to_state=state, actor="test",
                               spec=spec.model_dump(mode="json"))
        _, why = apply_event(reg, event)
        assert why is not None and "may not change the repositories" in why.text
    # the rest of a stable version's spec may change, and a shadow's scope too
    for vid, update in (("la", {"description": "refit"}), ("lc", {"repos": [B]})):
        spec = reg.versions[vid].spec.model_copy(update=update)
        state = reg.versions[vid].state
        event = LifecycleEvent(task=TASK, version_id=vid, action=LifecycleAction.update_spec,
                               from_state=state, to_state=state, actor="test",
                               spec=spec.model_dump(mode="json"))
        reg, why = apply_event(reg, event)
        assert why is None, why
    assert reg.versions["lc"].spec.repos == [B]


def test_events_written_before_the_per_scope_rule_fold_as_they_were_decided():
    """A topic written before the per-scope rule (schema_version 1) folds to the registry its
    workers had: promoting org/a's refit to stable deprecated base, a second refit canary was
    refused beyond 100 % in all, and the person's `rollback base` that followed applied. Folded
    by the new rule, base would have stayed stable, that rollback would have been skipped, and
    every later decision (they carry their position) would have turned stale."""
    def legacy(reg, vid, action, to, traffic=0.0):
        event = LifecycleEvent(task=TASK, version_id=vid, action=action, schema_version=1,
                               from_state=reg.versions[vid].state, to_state=to,
                               traffic_percent=traffic, actor="test", position=reg.applied)
        return event, apply_event(reg, event)

    reg = boot(base=("stable", []), la=("shadow", [A]), lb=("shadow", [B]), g=("shadow", []))
    topic = []
    for vid, action, to, traffic in (
            ("la", LifecycleAction.promote, S.canary, 60.0),
            ("lb", LifecycleAction.promote, S.canary, 60.0),  # refused then: 120 % in all
            ("la", LifecycleAction.promote, S.stable, 0.0),  # base deprecated then
            ("base", LifecycleAction.rollback, S.stable, 0.0),  # base back, la deprecated
            ("g", LifecycleAction.promote, S.canary, 10.0)):
        event, (reg, why) = legacy(reg, vid, action, to, traffic)
        topic.append((event, why))
    assert [why.code.value if why else None for _, why in topic] == [
        None, "canary_share", None, None, None]
    states = {v: (e.state, e.traffic_percent) for v, e in reg.versions.items()}
    assert states == {"base": (S.stable, 0.0), "la": (S.deprecated, 0.0), "lb": (S.shadow, 0.0),
                      "g": (S.canary, 10.0)}
    # the same decisions under the new rule fold differently (hence the version)
    new = boot(base=("stable", []), la=("shadow", [A]), lb=("shadow", [B]), g=("shadow", []))
    skipped = []
    for event, _ in topic:
        new, why = apply_event(new, event.model_copy(update={"schema_version": 2}))
        skipped.append(why.code.value if why else None)
    assert skipped == [None, None, "stale", "state_mismatch", "stale"]
    # new events on a registry a version 1 event left without a global stable version: the
    # scoped stable version that leaves hands its repository back to the one base replaced
    old = boot(base=("stable", []), la=("shadow", [A]))
    for vid, action, to, traffic in (("la", LifecycleAction.promote, S.canary, 50.0),
                                     ("la", LifecycleAction.promote, S.stable, 0.0)):
        _, (old, why) = legacy(old, vid, action, to, traffic)
        assert why is None
    assert old.versions["base"].state == S.deprecated and stable_version(old, B) is None
    back = move(old, "la", LifecycleAction.rollback, S.deprecated)
    assert back.versions["base"].state == S.stable and served(back, A) == {"base:primary": 200}


def _failure_ctx(reg):
    from types import SimpleNamespace

    from agents.config import InferenceConfig
    topics = SimpleNamespace(inference={}, pool="topic:pool", findings="topic:findings",
                             healing="topic:healing")
    return SimpleNamespace(topics=topics, registry=SimpleNamespace(registry=reg),
                           unavailable=frozenset,
                           config=SimpleNamespace(inference=InferenceConfig(max_fallback_attempts=2)))


def _failed(repo: str, version: str, role: Role = Role.primary):
    from schemas import FailureEvent, InferenceRequest, NormalizedChange
    request = InferenceRequest(request_id="r0", task=TASK, version_id=version, role=role,
                               change=NormalizedChange(repo=repo, sha="s0", message="m", diff=""))
    return FailureEvent(request_id="r0", task=TASK, version_id=version, role=role.value,
                        status="error", error="boom", request=request)


def test_a_refit_stable_for_one_repository_is_no_fallback_for_another():
    """A failed request of org/b falls back among the versions org/b may see: a refit stable
    for org/a (ranked first as a stable version, before this fix) never answers it; org/a's
    own failed canary request falls back to org/a's stable refit, not to the global one."""
    from agents.routing import choose_fallback
    from streams.flows.healing import plan

    reg = promote_to_stable(boot(base=("stable", []), la=("shadow", [A]), g=("shadow", []),
                                 x=("shadow", [])), "la")
    reg = move(reg, "g", LifecycleAction.promote, S.canary, 10.0)
    # base fails for org/b: the global canary serves, never org/a's refit
    out = plan(_failure_ctx(reg), _failed(B, "base"))
    assert out[0][2].version_id == "g" and out[0][2].change.repo == B
    assert choose_fallback(reg, {"base"}, B) == "g"
    # with nothing else that org/b may see, the request ends as an error finding
    out = plan(_failure_ctx(reg), _failed(B, "base").model_copy(update={"request": _failed(
        B, "base").request.model_copy(update={"tried": ["g", "x"]})}))
    assert [type(v).__name__ for _, _, v in out] == ["ReviewFindings"]
    # a request of org/a that the global canary failed (routed before org/a's refit became
    # stable): org/a's stable refit answers it ("base" < "la" by id)
    assert choose_fallback(reg, {"g"}, A) == "la"
    assert plan(_failure_ctx(reg), _failed(A, "g", Role.canary))[0][2].version_id == "la"
    # org/a's refit unavailable: the global stable answers org/a, not the global canary
    unavailable = plan_route(reg, cohort_key(A, None, "0" * 40), frozenset({"la"}), repo=A)
    assert unavailable.primary == "base" and unavailable.fallback_from == "la"


def _judge(reg, results: list[tuple[str, str, bool]]) -> list[tuple[str, str, dict]]:
    """Feed (version, repo, correct) results to streams/flows/quarantine.judge; the
    quarantines it asked for."""
    import asyncio
    from types import SimpleNamespace

    from agents.health import HealthTracker
    from streams.flows import quarantine as flow

    asked: list[tuple[str, str, dict]] = []

    async def quarantine(ctx, version_id, trigger, evidence):
        asked.append((version_id, trigger, evidence))
        return True

    health = HealthTracker(consecutive_failures=1000, window=50, max_error_rate=1.0,
                           min_samples=50, invalid_outputs=1000, latency_ms=None,
                           accuracy_window=400, accuracy_min_samples=20, accuracy_max_drop=0.2)
    ctx = SimpleNamespace(registry=SimpleNamespace(registry=reg), health=health)
    real, flow.quarantine = flow.quarantine, quarantine
    try:
        for i, (vid, repo, correct) in enumerate(results):
            head = {"version_id": vid, "repo": repo, "status": "ok", "latency_ms": 1.0,
                    "request_id": f"r{i}", "label": "fix",
                    "change_type": {"label": "fix" if correct else "docs"}}
            asyncio.run(flow.judge(ctx, head))
    finally:
        flow.quarantine = real
    return asked


def test_quarantine_judges_a_scoped_version_against_its_repositories_stable():
    """org/a is hard (base: 50 % there), org/b easy (base: 100 %). Judged against base's
    accuracy over every repository (before this fix), org/a's stable refit at 60 % was
    quarantined for an accuracy regression, and a refit candidate at 40 % on org/a while
    base gets 95 % there escaped it."""
    reg = promote_to_stable(boot(base=("stable", []), la=("shadow", [A]), lb=("shadow", [B])),
                            "la")
    base = [("base", B, True)] * 200 + [("base", A, i % 2 == 0) for i in range(40)]
    # the stable refit of org/a answers org/a only, at 60 %: it is org/a's stable version
    assert _judge(reg, base + [("la", A, i % 5 < 3) for i in range(100)]) == []
    # a scoped candidate is compared with the stable of its repository: la (60 % on org/a)
    reg = boot(base=("stable", []), la=("stable", [A]), la2=("shadow", [A]))
    fine = [("la", A, i % 5 < 3) for i in range(100)] + [("la2", A, i % 2 == 0) for i in range(100)]
    assert _judge(reg, base + fine) == []
    # ... or with the global stable version measured on its repositories' requests alone
    reg = boot(base=("stable", []), lb=("shadow", [B]))
    base_b = [("base", B, i % 20 != 0) for i in range(100)] + [("base", A, False)] * 300
    asked = _judge(reg, base_b + [("lb", B, i % 5 < 2) for i in range(100)])
    assert [(v, t) for v, t, _ in asked] == [("lb", "accuracy_regression")]
    assert asked[0][2]["stable_version"] == "base" and asked[0][2]["stable_repos"] == [B]
    assert asked[0][2]["stable_accuracy"] == 0.95



def test_a_scoped_version_is_retested_on_its_repositories_against_their_stable():
    """A quarantined refit of org/a was re-tested on every repository's archived requests and
    judged against base's accuracy on them: a refit fit for org/a alone failed on others'."""
    import asyncio
    from types import SimpleNamespace

    from agents.config import QuarantineConfig
    from streams.flows import quarantine as flow

    asked: list[tuple[str, dict]] = []

    class Store:  # no archived rows: the re-test is postponed once the sample was asked for
        async def query(self, sql, params):
            asked.append((sql, params))
            return SimpleNamespace(as_dicts=lambda: [])

    reg = promote_to_stable(boot(base=("stable", []), la1=("shadow", [A]), la2=("shadow", [A])),
                            "la1")
    reg = move(reg, "la2", LifecycleAction.quarantine, S.quarantined)
    ctx = SimpleNamespace(config=SimpleNamespace(task=TASK, quarantine=QuarantineConfig()),
                          settings=SimpleNamespace(retest_sample_window_s=3600.0), store=Store(),
                          registry=SimpleNamespace(registry=reg))
    asyncio.run(flow.start_retest(ctx, "la2", flow.Quarantined(since=0.0)))
    asyncio.run(flow.stable_accuracy_on(ctx, reg, ["r1"], datetime.now(UTC),
                                        frozenset(reg.versions["la2"].spec.repos)))
    (sample_sql, sample), (_, accuracy) = asked
    assert "repo IN" in sample_sql and sample["repos"] == [A]
    assert accuracy["version"] == "la1"  # org/a's stable version, not base
