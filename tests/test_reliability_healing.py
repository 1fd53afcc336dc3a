"""Healing on the real broker and store: the quarantine triggers, each with its QuarantineEvent
(trigger, evidence, one-line root cause); rollback of a failing canary; the half-open re-test
that restores a fixed version to shadow; the false-positive filter driven by feedback; SLOs
and error budgets (`reviewbus slo`). Every request gets findings throughout."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest

from schemas import ChangedFile, CommitEvent, Role, Status
from streams.cli import main as cli
from streams.services.bus import submit

from .conftest import make_stack

pytestmark = pytest.mark.integration

FLAKY_RATE = 0.2


def fails(sha: str, rate: float = FLAKY_RATE) -> bool:
    """The fake backend's error_rate choice (agents/backends/fake.py)."""
    h = int.from_bytes(hashlib.sha256(sha.encode()).digest()[:4], "big")
    return h / 2**32 < rate


def pick_shas(n: int, failing_every: int, start: int) -> list[str]:
    """n shas; exactly those at positions 0, k, 2k ... fail for the flaky version."""
    ok = (f"{i:012x}" for i in range(start, 10**6) if not fails(f"{i:012x}"))
    bad = (f"{i:012x}" for i in range(start, 10**6) if fails(f"{i:012x}"))
    return [next(bad) if i % failing_every == 0 else next(ok) for i in range(n)]


def commits(shas: list[str], tag: str) -> list[CommitEvent]:
    return [CommitEvent(repo="acme/heal", sha=sha, message=f"fix: repair {tag} {i}",
                        event_id=f"{tag}-{i}-{sha}",
                        files=[ChangedFile(path=f"src/m{i}.py", status="added",
                                           content="x = 1\n")])
            for i, sha in enumerate(shas)]


def fingerprint(sha: str, i: int) -> str:
    """The fake backend's fingerprint of its i-th finding on a change."""
    return hashlib.sha256(f"{sha}:{i}".encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, broker):
    home = tmp_path_factory.mktemp("healing-faults")
    broken_flag = home / "fixable-is-broken"
    broken_flag.write_text("until the test fixes it")
    config = {
        "task": "code-review",
        "versions": [
            {"id": "st", "backend": "fake", "initial_state": "stable",
             "params": {"label": "bug_fix", "findings": 2}},
            {"id": "slow", "backend": "fake", "params": {"label": "bug_fix", "sleep_ms": 150}},
            {"id": "liar", "backend": "fake", "params": {"label": "docs"}},
            {"id": "garbled", "backend": "fake", "params": {"mode": "invalid"}},
            {"id": "flaky", "backend": "fake",
             "params": {"label": "bug_fix", "error_rate": FLAKY_RATE}},
            {"id": "fixable", "backend": "fake",
             "params": {"label": "bug_fix", "fail_while_file": str(broken_flag)}},
            {"id": "noisy", "backend": "fake", "params": {"label": "bug_fix", "findings": 3}},
            {"id": "shaky", "backend": "fake", "initial_state": "canary",
             "initial_traffic_percent": 50, "params": {"mode": "raise"}},
        ],
        "quarantine": {"consecutive_failures": 5, "window": 30, "max_error_rate": 0.9,
                       "min_samples": 30, "invalid_outputs": 3, "latency_min_samples": 5,
                       "accuracy_min_samples": 8, "retest_after_s": 2, "retest_sample": 10,
                       "retest_min_success_rate": 1.0, "retest_timeout_s": 30,
                       "check_interval_s": 1},
        "slo": {"latency_ms": 80, "min_samples": 10, "max_error_rate": 0.05,
                "check_interval_s": 1, "per_version": {"slow": {"latency_ms": 60}}},
        "feedback": {"interval_s": 1, "min_feedback": 3},
        "breaker": {"failure_threshold": 1000},
        "rotation": {"interval_s": 3600},
        "inference": {"batch_size": 1, "batch_wait_s": 0.01},
    }
    s = make_stack(tmp_path_factory, broker, config, "healing-stack")
    s.broken_flag = broken_flag
    yield s
    s.stop()


@pytest.fixture(scope="module")
def first_wave(stack):
    events = commits(pick_shas(20, 5, 0), "w1")
    results = asyncio.run(submit(stack.settings, events, wait=True, timeout=180))
    return events, results


def quarantines(stack) -> dict[str, dict]:
    rows = stack.query("SELECT version_id, trigger, root_cause, evidence FROM quarantines FINAL")
    return {r["version_id"]: {**r, "evidence": json.loads(r["evidence"])} for r in rows}


def test_every_request_gets_findings_while_versions_fail(first_wave):
    events, results = first_wave
    assert sorted(r.request_id for r in results) == sorted(e.event_id for e in events)
    assert all(r.status == Status.ok for r in results)
    # The failing canary's share is served by fallback, from the stable version.
    assert {r.version_id for r in results} == {"st"}
    fallbacks = [r for r in results if r.role == Role.fallback]
    assert fallbacks and all(r.fallback_from == "shaky" for r in fallbacks)


def test_each_trigger_quarantines_its_version_with_evidence(stack, first_wave):
    wanted = {"slow": "latency_slo", "liar": "accuracy_regression", "garbled": "invalid_output",
              "flaky": "error_budget", "shaky": "consecutive_failures",
              "fixable": "consecutive_failures"}
    stack.wait_for("SELECT version_id FROM quarantines FINAL",
                   lambda rows: {r["version_id"] for r in rows} >= set(wanted), timeout=90)
    got = quarantines(stack)
    assert {v: got[v]["trigger"] for v in wanted} == wanted
    assert "st" not in got and "noisy" not in got
    for version, q in got.items():
        assert q["root_cause"].startswith(q["trigger"] + ":") and "\n" not in q["root_cause"]
        assert q["evidence"]["version_id"] == version

    slow = got["slow"]["evidence"]
    assert slow["latency_objective_ms"] == 60 and slow["latency_ms"] > 60
    liar = got["liar"]["evidence"]
    assert liar["accuracy"] == 0 and liar["stable_accuracy"] == 1 and liar["stable_version"] == "st"
    assert liar["accuracy_interval"][1] < 1 - 0.2
    assert got["garbled"]["evidence"]["invalid_outputs"] >= 3
    assert "invalid output" in got["garbled"]["root_cause"]
    flaky = got["flaky"]["evidence"]
    assert "error_rate" in flaky["exhausted"] and flaky["error_budget_left"] <= 0
    assert flaky["n"] >= 10 and 0 < flaky["error_rate"] < 0.9
    assert "fake backend configured to raise" in got["shaky"]["root_cause"]

    lifecycle = stack.query("SELECT version_id, from_state, to_state, actor FROM lifecycle FINAL "
                            "WHERE action = 'quarantine'")
    moved = {r["version_id"]: (r["from_state"], r["to_state"], r["actor"]) for r in lifecycle}
    assert moved["shaky"] == ("canary", "quarantined", "quarantine")
    assert moved["slow"] == ("shadow", "quarantined", "quarantine")


def test_a_failing_canary_is_rolled_back_to_stable(stack, first_wave):
    rows = stack.wait_for(
        "SELECT action, version_id, target_version, reason FROM healing_actions FINAL "
        "WHERE action = 'rollback'", lambda rows: len(rows) >= 1)
    assert [(r["version_id"], r["target_version"]) for r in rows] == [("shaky", "st")]
    fallbacks = stack.query("SELECT count() AS n FROM healing_actions FINAL "
                            "WHERE action = 'fallback' AND version_id = 'shaky' "
                            "AND target_version = 'st'")
    assert fallbacks[0]["n"] >= 5


def test_quarantined_versions_get_no_more_traffic(stack, first_wave):
    stack.wait_for("SELECT count() AS n FROM quarantines FINAL", lambda r: r[0]["n"] >= 6,
                   timeout=90)
    # Settled: a slow version's last answers to the first wave may still be on their way.
    before = {r["version_id"]: r["n"] for r in stack.settled(
        "SELECT version_id, count() AS n FROM interactions FINAL WHERE run_id = '' "
        "GROUP BY version_id ORDER BY version_id")}
    events = commits(pick_shas(4, 100, 5000), "w2")
    results = asyncio.run(submit(stack.settings, events, wait=True, timeout=120))
    assert [r.version_id for r in results] == ["st"] * 4
    assert all(r.role == Role.primary for r in results)  # the canary's share is back on st
    stack.wait_for("SELECT count() AS n FROM interactions FINAL WHERE version_id = 'st' "
                   "AND run_id = ''", lambda r: r[0]["n"] >= before["st"] + 4)
    after = {r["version_id"]: r["n"] for r in stack.query(
        "SELECT version_id, count() AS n FROM interactions FINAL WHERE run_id = '' "
        "GROUP BY version_id")}
    for version in ("slow", "liar", "garbled", "flaky", "shaky"):
        assert after[version] == before[version], version
    ids = ", ".join(f"'{r.request_id}'" for r in results)
    assert stack.query(f"SELECT version_id, request_id FROM interactions FINAL WHERE "
                       f"request_id IN ({ids}) AND run_id = '' AND version_id IN "
                       "('slow', 'liar', 'garbled', 'flaky', 'shaky')") == []


def test_half_open_retest_restores_a_fixed_version_to_shadow(stack, first_wave):
    stack.wait_for("SELECT count() AS n FROM quarantines FINAL WHERE version_id = 'fixable'",
                   lambda r: r[0]["n"] == 1)
    stack.broken_flag.unlink()  # the version is "fixed"
    rows = stack.wait_for(
        "SELECT from_state, to_state, actor, reason, evidence FROM lifecycle FINAL "
        "WHERE version_id = 'fixable' AND action = 'restore'", lambda r: len(r) == 1, timeout=90)
    restore = rows[0]
    assert (restore["from_state"], restore["to_state"], restore["actor"]) == (
        "quarantined", "shadow", "quarantine")
    evidence = json.loads(restore["evidence"])
    assert evidence["passed"] and evidence["sent"] == 10 and evidence["ok"] == 10
    assert evidence["accuracy"] == evidence["stable_accuracy"] == 1
    run = evidence["run_id"]
    assert run.startswith("retest-fixable-")
    replayed = stack.query(f"SELECT role, status, count() AS n FROM interactions FINAL "
                           f"WHERE run_id = '{run}' GROUP BY role, status")
    assert replayed == [{"role": "replay", "status": "ok", "n": 10}]
    actions = stack.wait_for("SELECT action FROM healing_actions FINAL WHERE version_id = "
                             "'fixable' AND action IN ('restore', 'retest_failed')",
                             lambda r: any(x["action"] == "restore" for x in r))
    assert {a["action"] for a in actions} <= {"restore", "retest_failed"}
    # Back in shadow, it sees traffic again; versions that stay broken are never restored.
    events = commits(pick_shas(2, 100, 7000), "w3")
    asyncio.run(submit(stack.settings, events, wait=True, timeout=120))
    stack.wait_for("SELECT count() AS n FROM interactions FINAL WHERE version_id = 'fixable' "
                   "AND role = 'shadow' AND status = 'ok'", lambda r: r[0]["n"] >= 2)
    restored = stack.query("SELECT DISTINCT version_id FROM lifecycle FINAL "
                           "WHERE action = 'restore'")
    assert [r["version_id"] for r in restored] == ["fixable"]


def test_feedback_adds_and_removes_a_false_positive_filter(stack, first_wave, capsys,
                                                           monkeypatch):
    for key, value in stack.env.items():
        monkeypatch.setenv(key, value)
    events, _ = first_wave
    stack.wait_for("SELECT count() AS n FROM findings FINAL WHERE version_id = 'noisy' "
                   "AND rule_id = 'FAKE2'", lambda r: r[0]["n"] >= 3)
    marked = [fingerprint(e.sha, 2) for e in events[:3]]  # only noisy reports FAKE2
    for fp in marked:
        assert cli(["feedback", fp, "--false-positive", "--note", "not a bug"]) == 0
    assert "marked false positive" in capsys.readouterr().out
    assert cli(["feedback", "0123456789abcdef", "--confirmed"]) == 1  # unknown fingerprint
    assert "no finding with fingerprint" in capsys.readouterr().err

    added = stack.wait_for(
        "SELECT reason, spec, evidence FROM lifecycle FINAL WHERE version_id = 'noisy' "
        "AND action = 'update_spec'", lambda r: len(r) == 1, timeout=60)[0]
    assert {"suppress_rule": "FAKE2"} in json.loads(added["spec"])["filters"]
    change = json.loads(added["evidence"])["changes"][0]
    assert (change["rule_id"], change["action"], change["fp"], change["tp"]) == (
        "FAKE2", "add", 3, 0)
    assert change["fp_rate_low"] > change["baseline"] + 0.3
    actions = stack.query("SELECT action, version_id, reason FROM healing_actions FINAL "
                          "WHERE action = 'filter'")
    assert len(actions) == 1 and actions[0]["version_id"] == "noisy"

    def noisy_findings(tag: str, start: int) -> list[int]:
        batch = commits(pick_shas(3, 100, start), tag)
        asyncio.run(submit(stack.settings, batch, wait=True, timeout=120))
        ids = ", ".join(f"'{e.event_id}'" for e in batch)
        rows = stack.wait_for(
            f"SELECT findings_total FROM interactions FINAL WHERE version_id = 'noisy' "
            f"AND request_id IN ({ids})", lambda r: len(r) == 3)
        return [r["findings_total"] for r in rows]

    assert noisy_findings("w4", 9000) == [2, 2, 2]  # FAKE2 suppressed

    # Later evidence clears the rule: the same findings confirmed after all.
    for fp in marked:
        assert cli(["feedback", fp, "--confirmed"]) == 0
    stack.wait_for("SELECT count() AS n FROM lifecycle FINAL WHERE version_id = 'noisy' "
                   "AND action = 'update_spec'", lambda r: r[0]["n"] == 2, timeout=60)
    removed = stack.query("SELECT spec FROM lifecycle FINAL WHERE version_id = 'noisy' AND "
                          "action = 'update_spec' ORDER BY occurred_at DESC LIMIT 1")[0]
    assert {"suppress_rule": "FAKE2"} not in json.loads(removed["spec"])["filters"]
    assert noisy_findings("w5", 11000) == [3, 3, 3]


def test_slo_command_shows_budgets(stack, first_wave, capsys, monkeypatch):
    for key, value in stack.env.items():
        monkeypatch.setenv(key, value)
    stack.wait_for("SELECT count() AS n FROM quarantines FINAL WHERE version_id = 'flaky'",
                   lambda r: r[0]["n"] == 1, timeout=90)
    assert cli(["slo", "--format", "json"]) == 0
    rows = {r["version_id"]: r for r in json.loads(capsys.readouterr().out)}
    st = rows["st"]
    assert st["state"] == "stable" and st["status"] == "ok" and st["n"] >= 20
    assert st["availability"] == 1 and st["error_rate"] == 0 and st["error_budget_left"] == 1
    flaky = rows["flaky"]
    assert flaky["state"] == "quarantined" and flaky["status"] == "exhausted"
    assert flaky["error_budget_left"] <= 0 and flaky["availability"] == 1
    assert rows["slow"]["latency_budget_left"] < 1 and rows["slow"]["p95_ms"] >= 150
    assert cli(["slo", "st"]) == 0
    out = capsys.readouterr().out
    assert "availability_budget_left" in out and "st" in out
    assert cli(["slo", "nope"]) == 1
