import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from agents.routing import (
    RoutePlan,
    bucket,
    canary_ranges,
    choose_fallback,
    cohort_key,
    plan_route,
)
from schemas import Registry, Role, VersionEntry, VersionSpec, VersionState

S = VersionState


def reg(**states) -> Registry:
    """reg(v1=("stable",), v2=("canary", 25), ...)"""
    versions = {}
    for vid, st in states.items():
        state, traffic = (st[0], st[1]) if len(st) > 1 else (st[0], 0.0)
        versions[vid] = VersionEntry(spec=VersionSpec(id=vid, backend="fake"),
                                     state=S(state), traffic_percent=traffic)
    return Registry(task="code-review", versions=versions)


def cohorts(n=10_000):
    return [cohort_key(f"org/repo{i % 37}", i, "ab" * 20) for i in range(n)]


def test_cohort_key():
    assert cohort_key("org/r", 12, "abc1") == "org/r#12"
    assert cohort_key("org/r", None, "abc1") == "org/r@abc1"
    assert cohort_key("org/r", 0, "abc1") == "org/r#0"


def test_bucket_range_and_determinism():
    values = [bucket(k) for k in cohorts(2000)]
    assert all(0.0 <= v < 100.0 for v in values)
    assert bucket("org/r#1") == bucket("org/r#1")
    assert len(set(values)) > 1990


def test_bucket_is_stable_across_processes():
    # Python's hash() is salted per process; ours must not be.
    out = subprocess.run(
        [sys.executable, "-c", "from agents.routing import bucket; print(repr(bucket('org/r#7')))"],
        capture_output=True, text=True, check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""}, cwd=str(Path(__file__).resolve().parents[1]),
    )
    assert float(out.stdout) == bucket("org/r#7")


def test_bucket_pinned_value():
    # A change of the hash would re-shuffle every cohort between versions: pin it.
    d = hashlib.sha256(b"org/r#7").digest()
    assert bucket("org/r#7") == (int.from_bytes(d[:8], "big") % 10**9) / 10**7


def test_canary_25_percent_gets_25_plus_minus_2():
    r = reg(v1=("stable",), v2=("canary", 25.0))
    plans = [plan_route(r, c) for c in cohorts()]
    share = sum(p.primary == "v2" for p in plans) / len(plans)
    assert 0.23 <= share <= 0.27, share
    assert all(p.role == Role.canary for p in plans if p.primary == "v2")
    assert all(p.role == Role.primary for p in plans if p.primary == "v1")


def test_two_canaries_take_consecutive_ranges():
    r = reg(v1=("stable",), b=("canary", 10.0), a=("canary", 20.0))
    assert canary_ranges(r) == [("a", 0.0, 20.0), ("b", 20.0, 30.0)]
    plans = [plan_route(r, c) for c in cohorts()]
    a = sum(p.primary == "a" for p in plans) / len(plans)
    b = sum(p.primary == "b" for p in plans) / len(plans)
    assert 0.18 <= a <= 0.22 and 0.08 <= b <= 0.12


def test_canary_shares_are_clamped_to_100():
    r = reg(v1=("stable",), a=("canary", 80.0), b=("canary", 50.0))
    assert canary_ranges(r) == [("a", 0.0, 80.0), ("b", 80.0, 100.0)]


def test_sticky_same_cohort_same_version():
    r = reg(v1=("stable",), v2=("canary", 50.0))
    for c in cohorts(500):
        assert plan_route(r, c) == plan_route(r, c)
    # every commit of one pull request goes together, whatever the sha
    k1, k2 = cohort_key("org/r", 9, "aaaa"), cohort_key("org/r", 9, "bbbb")
    assert plan_route(r, k1).primary == plan_route(r, k2).primary


def test_raising_canary_traffic_only_moves_cohorts_onto_the_canary():
    r25 = reg(v1=("stable",), v2=("canary", 25.0))
    r50 = reg(v1=("stable",), v2=("canary", 50.0))
    for c in cohorts(2000):
        if plan_route(r25, c).primary == "v2":
            assert plan_route(r50, c).primary == "v2"


def test_shadows_get_mirrors():
    r = reg(v1=("stable",), s2=("shadow",), s1=("shadow",), q=("quarantined",),
            d=("deprecated",))
    p = plan_route(r, "org/r#1")
    assert p == RoutePlan(primary="v1", role=Role.primary, shadows=["s1", "s2"],
                          fallback_from=None)
    p = plan_route(r, "org/r#1", unavailable=frozenset({"s2"}))
    assert p.shadows == ["s1"]


def test_unavailable_stable_falls_back():
    r = reg(v1=("stable",), d=("deprecated",), s=("shadow",))
    p = plan_route(r, "org/r#1", unavailable=frozenset({"v1"}))
    assert (p.primary, p.role, p.fallback_from) == ("d", Role.fallback, "v1")


def test_unavailable_canary_falls_back_to_stable():
    r = reg(v1=("stable",), v2=("canary", 100.0))
    p = plan_route(r, "org/r#1")
    assert (p.primary, p.role) == ("v2", Role.canary)
    p = plan_route(r, "org/r#1", unavailable=frozenset({"v2"}))
    assert (p.primary, p.role, p.fallback_from) == ("v1", Role.fallback, "v2")


def test_fallback_may_be_a_shadow_and_it_is_then_not_mirrored():
    r = reg(v1=("stable",), s=("shadow",))
    p = plan_route(r, "org/r#1", unavailable=frozenset({"v1"}))
    assert (p.primary, p.role, p.fallback_from, p.shadows) == ("s", Role.fallback, "v1", [])


def test_nothing_servable():
    r = reg(v1=("stable",), q=("quarantined",), a=("archived",), n=("registered",))
    p = plan_route(r, "org/r#1", unavailable=frozenset({"v1"}))
    assert p.primary is None
    assert p.fallback_from == "v1"
    assert plan_route(Registry(task="t"), "org/r#1").primary is None


def test_no_stable_serves_the_best_fallback():
    r = reg(d=("deprecated",), s=("shadow",))
    p = plan_route(r, "org/r#1")
    assert (p.primary, p.role, p.fallback_from) == ("d", Role.fallback, None)


@pytest.mark.parametrize("states,exclude,expected", [
    ({"v1": ("stable",), "c": ("canary", 5.0), "d": ("deprecated",)}, set(), "v1"),
    ({"v1": ("stable",), "c": ("canary", 5.0), "d": ("deprecated",)}, {"v1"}, "c"),
    ({"c1": ("canary", 5.0), "c2": ("canary", 50.0)}, set(), "c2"),
    ({"c1": ("canary", 25.0), "c0": ("canary", 25.0)}, set(), "c0"),
    ({"d": ("deprecated",), "s": ("shadow",)}, set(), "d"),
    ({"d": ("deprecated",), "s": ("shadow",)}, {"d"}, "s"),
    ({"q": ("quarantined",), "a": ("archived",), "r": ("registered",)}, set(), None),
    ({"v1": ("stable",)}, frozenset({"v1"}), None),
])
def test_choose_fallback_preference(states, exclude, expected):
    assert choose_fallback(reg(**states), exclude) == expected


@pytest.mark.parametrize("target", [5.0, 25.0, 50.0, 75.0])
def test_every_canary_step_gets_its_share_within_2_points(target):
    r = reg(v1=("stable",), v2=("canary", target))
    plans = [plan_route(r, c) for c in cohorts()]
    share = 100 * sum(p.primary == "v2" for p in plans) / len(plans)
    assert abs(share - target) <= 2.0, share


def test_a_pull_request_stays_on_its_version_for_the_whole_stage():
    """Every commit of a pull request goes to the same version while the stage lasts; commits
    without a pull request are their own cohort."""
    r = reg(v1=("stable",), v2=("canary", 25.0))
    for pr in range(300):
        versions = {plan_route(r, cohort_key("org/r", pr, f"{sha:040x}")).primary
                    for sha in range(12)}
        assert len(versions) == 1
    lone = {plan_route(r, cohort_key("org/r", None, f"{sha:040x}")).primary
            for sha in range(200)}
    assert lone == {"v1", "v2"}
