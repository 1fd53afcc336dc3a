"""A failing stable version: every request still gets findings (fallback), then the version is
quarantined by a LifecycleEvent and gets no more traffic."""

from __future__ import annotations

import asyncio
import json

import pytest

from infra.gitsource import commit_events
from streams.services.bus import submit

from .conftest import make_stack
from .gitrepo import make_repo

pytestmark = pytest.mark.integration

CONFIG = {
    "task": "code-review",
    "versions": [
        {"id": "broken", "backend": "fake", "initial_state": "stable",
         "params": {"mode": "raise"}},
        {"id": "healthy", "backend": "fake", "initial_state": "shadow",
         "params": {"label": "feature", "findings": 1}},
    ],
    "quarantine": {"consecutive_failures": 3, "window": 20, "max_error_rate": 0.9,
                   "min_samples": 50},
    "breaker": {"failure_threshold": 100, "cooldown_s": 60},
    "rotation": {"interval_s": 3600},
    "inference": {"batch_size": 1, "batch_wait_s": 0.01},
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, broker):
    s = make_stack(tmp_path_factory, broker, CONFIG, "healing")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return make_repo(tmp_path_factory.mktemp("repo") / "demo")


def test_failures_fall_back_then_quarantine(stack, repo):
    first = commit_events(repo, None, last=5)
    results = asyncio.run(submit(stack.settings, first, wait=True, timeout=120))
    assert len(results) == 5
    assert all(r.status.value == "ok" for r in results)
    assert all(r.version_id == "healthy" for r in results)
    assert all(r.role.value == "fallback" for r in results)
    assert all(r.fallback_from == "broken" for r in results[:3])  # healed from the failure

    quarantined = stack.wait_for(
        "SELECT version_id, action, from_state, to_state, actor, reason, evidence "
        "FROM lifecycle FINAL WHERE action = 'quarantine'", lambda rows: len(rows) >= 1)
    q = quarantined[0]
    assert (q["version_id"], q["from_state"], q["to_state"], q["actor"]) == (
        "broken", "stable", "quarantined", "quarantine")
    assert "consecutive_failures" in q["reason"]
    assert json.loads(q["evidence"])["consecutive_failures"] >= 3
    record = stack.wait_for("SELECT trigger, root_cause, evidence FROM quarantines FINAL",
                            lambda rows: len(rows) == 1)[0]
    assert record["trigger"] == "consecutive_failures"
    assert record["root_cause"] == q["reason"] and "\n" not in record["root_cause"]
    assert "fake backend configured to raise" in record["root_cause"]  # the most common error
    assert json.loads(record["evidence"])["state"] == "stable"

    # After quarantine, the broken version gets no traffic at all.
    # The sink stores the first requests' rows in its own time: count broken's rows once they
    # have all arrived (the healthy fallbacks are in, and the count holds still).
    stack.wait_for("SELECT count() AS n FROM interactions FINAL WHERE version_id = 'healthy'",
                   lambda rows: rows[0]["n"] >= 5)
    before = stack.settled("SELECT count() AS n FROM interactions FINAL WHERE version_id = 'broken'")
    later = commit_events(repo, "HEAD~2..HEAD")
    results = asyncio.run(submit(stack.settings, later, wait=True, timeout=120))
    assert [r.version_id for r in results] == ["healthy"] * len(later)
    assert all(r.fallback_from is None for r in results)
    after = stack.wait_for(
        "SELECT count() AS n FROM interactions FINAL WHERE version_id = 'healthy' "
        "AND role = 'fallback'", lambda rows: rows[0]["n"] >= 5 + len(later))
    assert after[0]["n"] == 5 + len(later)
    assert stack.query("SELECT count() AS n FROM interactions FINAL "
                       "WHERE version_id = 'broken'") == before
    ids = ", ".join(f"'{r.request_id}'" for r in results)
    assert stack.query("SELECT count() AS n FROM interactions FINAL WHERE version_id = 'broken' "
                       f"AND request_id IN ({ids})") == [{"n": 0}]

    failures = stack.query("SELECT count() AS n FROM failures FINAL WHERE version_id = 'broken'")
    assert failures[0]["n"] == before[0]["n"] >= 3
    healing = stack.query("SELECT count() AS n FROM healing_actions FINAL "
                          "WHERE action = 'fallback' AND target_version = 'healthy'")
    assert healing[0]["n"] >= 3
