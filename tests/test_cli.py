"""The CLI contract: up/status/down of the embedded stack, one-line errors, and reading the
store when no worker holds it."""

from __future__ import annotations

import json
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest

from agents.settings import Settings
from infra.procs import pid_alive, read_json
from infra.store import open_store
from schemas import (
    ChangeType,
    InferenceResult,
    LifecycleAction,
    LifecycleEvent,
    Role,
    ShadowComparison,
    Status,
    VersionState,
)
from streams import names
from streams.cli import main as cli

from .conftest import isolate_env


@pytest.fixture
def env(tmp_path, monkeypatch):
    return isolate_env(monkeypatch, tmp_path / "home", "c")


@pytest.mark.integration
def test_up_status_down_with_health_and_metrics(env, capsys):
    assert cli(["up", "--detach"]) == 0
    try:
        assert "reviewbus is up" in capsys.readouterr().out
        worker = read_json(env / "worker.json")
        broker = read_json(env / "broker.json")
        assert pid_alive(worker["pid"]) and pid_alive(broker["pid"])

        assert cli(["status", "--format", "json"]) == 0
        status = json.loads(capsys.readouterr().out)
        assert status["broker"]["up"] and status["worker"]["status"] == "ok"
        assert status["versions"] == {"analyzers-v1": "stable", "analyzers-v2": "shadow",
                                      "minilm-lora-v1": "shadow"}
        assert status["lag"] and all(v >= 0 for v in status["lag"].values())
        assert set(status["sink_lag"]) == set(names.sink_topics(Settings()))

        with urllib.request.urlopen(worker["web_url"] + "/health", timeout=5) as resp:
            health = json.loads(resp.read())
        assert health["status"] == "ok" and health["registry_ready"] is True
        with urllib.request.urlopen(worker["web_url"] + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
        assert "reviewbus_version_traffic_percent" in text
        assert 'reviewbus_version_traffic_percent{version="analyzers-v1"} 100.0' in text

        assert cli(["versions", "--format", "json"]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert {(r["version_id"], r["state"], r["traffic_percent"]) for r in rows} == {
            ("analyzers-v1", "stable", 100.0), ("analyzers-v2", "shadow", 0.0),
            ("minilm-lora-v1", "shadow", 0.0)}
    finally:
        assert cli(["down"]) == 0
    assert not pid_alive(worker["pid"]) and not pid_alive(broker["pid"])
    assert not (env / "worker.json").exists()


def test_expected_errors_are_one_line_without_traceback(env, capsys):
    assert cli(["submit", "--repo", "."]) == 1
    err = capsys.readouterr().err
    assert err.startswith("reviewbus: no broker") and "Traceback" not in err
    assert err.count("\n") == 1

    assert cli(["replay", "--to", "no-such-version"]) == 1
    assert "unknown version 'no-such-version'" in capsys.readouterr().err

    assert cli(["sql", "SELEC nonsense"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("reviewbus: ") and "Syntax error" in err and "Traceback" not in err

    assert cli(["compare", "--window", "soon"]) == 1
    assert "bad window" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exit_:  # refused by argparse, before any git or broker
        cli(["submit", "--repo", ".", "--pr", "-1"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "not a pull request number: '-1'" in err
    assert "Traceback" not in err


def result(request_id, version, role, status="ok", latency=10.0, label=None, predicted=None,
           when=None):
    return InferenceResult(
        request_id=request_id, task="code-review", version_id=version, role=role,
        status=status, latency_ms=latency, label=label,
        change_type=ChangeType(label=predicted, confidence=0.9) if predicted else None,
        occurred_at=when or datetime.now(timezone.utc), repo="r", sha="abcd")


def test_compare_and_sql_open_the_store_when_no_worker_holds_it(env, capsys):
    settings = Settings()
    now = datetime.now(timezone.utc)
    events = [
        LifecycleEvent(task="code-review", version_id="a", action=LifecycleAction.register,
                       to_state=VersionState.stable, actor="config",
                       spec={"id": "a", "backend": "fake"}, occurred_at=now - timedelta(hours=1)),
        LifecycleEvent(task="code-review", version_id="b", action=LifecycleAction.register,
                       to_state=VersionState.shadow, actor="config",
                       spec={"id": "b", "backend": "fake"}, occurred_at=now - timedelta(hours=1)),
    ]
    for i in range(10):
        events.append(result(f"r{i}", "a", Role.primary, latency=100 + i, label="feature",
                             predicted="feature" if i < 8 else "docs"))
        events.append(result(f"r{i}", "b", Role.shadow, latency=50,
                             status="ok" if i < 9 else "error", label="feature",
                             predicted="feature" if i < 5 else None))
        events.append(ShadowComparison(
            request_id=f"r{i}", task="code-review", stable_version="a", candidate_version="b",
            stable_status=Status.ok, candidate_status=Status.ok, change_type_agree=i < 4))
    events.append(result("old", "a", Role.primary, when=now - timedelta(days=3)))
    with open_store(settings) as store:
        store.insert_events(events)
        store.insert_events(events[:5])  # a redelivery changes nothing

    assert cli(["compare", "--format", "json", "--window", "24h"]) == 0
    rows = {r["version_id"]: r for r in json.loads(capsys.readouterr().out)}
    a, b = rows["a"], rows["b"]
    assert (a["state"], a["n"], a["error_rate"], a["accuracy"], a["agreement"]) == (
        "stable", 10, 0, 0.8, None)
    assert (a["p50_ms"], a["p99_ms"]) == (104.5, 108.9)  # linear interpolation, like numpy
    assert (b["state"], b["n"], b["error_rate"], b["agreement"]) == ("shadow", 10, 0.1, 0.4)
    assert b["accuracy"] == round(5 / 9, 4)

    assert cli(["compare", "b", "--format", "json", "--window", "7d"]) == 0
    assert [r["version_id"] for r in json.loads(capsys.readouterr().out)] == ["b"]

    assert cli(["sql", "SELECT count() AS n FROM interactions FINAL", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 21}]
    assert cli(["sql", "SELECT count() AS n FROM interactions FINAL"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].strip() == "21"


def test_a_replay_of_a_scoped_version_agrees_with_its_repositories_stable(env, capsys):
    """`compare --run`: a replayed request is compared with the live answer of the stable
    version that served its repository: `la` (stable, scoped to org/a) for org/a's requests,
    the global stable `base` for the others; never with a version that did not serve it."""
    from streams.services.reports import compare, scoped_stables

    settings = Settings()
    then = datetime.now(timezone.utc) - timedelta(hours=1)
    events = [LifecycleEvent(task="code-review", version_id=v, action=LifecycleAction.register,
                             to_state=state, actor="config", occurred_at=then,
                             spec={"id": v, "backend": "fake", "repos": repos})
              for v, state, repos in [("base", VersionState.stable, []),
                                      ("la", VersionState.stable, ["org/a"]),
                                      ("refit", VersionState.shadow, ["org/a"])]]

    def answer(rid, version, repo, predicted, run_id=None):
        return result(rid, version, Role.replay if run_id else Role.primary,
                      predicted=predicted).model_copy(update={"repo": repo, "run_id": run_id})

    for i in range(10):  # org/a: `la` served; `base` never saw these requests
        events += [answer(f"a{i}", "la", "org/a", "fix" if i < 6 else "docs"),
                   answer(f"a{i}", "refit", "org/a", "fix", run_id="run-1")]
    for i in range(4):  # org/b: `base` served; refit's replay disagrees on every one
        events += [answer(f"b{i}", "base", "org/b", "feature"),
                   answer(f"b{i}", "refit", "org/b", "fix", run_id="run-1")]
    with open_store(settings) as store:
        store.insert_events(events)
        rows = {r["version_id"]: r for r in compare(store, "code-review", 86400, "run-1")}
        from infra.readback import registry_from_store
        assert scoped_stables(registry_from_store(store, "code-review")) == {"org/a": "la"}
    # 6 of 10 org/a answers agree with la's, none of 4 org/b answers with base's
    assert rows["refit"]["agreement"] == round(6 / 14, 4)
    assert rows["refit"]["n"] == 14


def test_a_replay_agrees_with_the_global_stable_when_no_stable_is_scoped(env):
    """The common case: no repository has a stable version of its own (ClickHouse's
    transform() refuses the empty arrays that case would give it)."""
    from streams.services.reports import compare

    then = datetime.now(timezone.utc) - timedelta(hours=1)
    events: list = [LifecycleEvent(task="code-review", version_id=v, action=LifecycleAction.register,
                                   to_state=state, actor="config", occurred_at=then,
                                   spec={"id": v, "backend": "fake"})
                    for v, state in [("base", VersionState.stable), ("cand", VersionState.shadow)]]
    for i in range(4):
        events += [result(f"q{i}", "base", Role.primary, predicted="feature"),
                   result(f"q{i}", "cand", Role.replay, predicted="feature" if i else "fix"
                          ).model_copy(update={"run_id": "run-2"})]
    with open_store(Settings()) as store:
        store.insert_events(events)
        rows = {r["version_id"]: r for r in compare(store, "code-review", 86400, "run-2")}
    assert (rows["cand"]["n"], rows["cand"]["agreement"]) == (4, 0.75)
