"""Simulated traffic through the whole pipeline drives the rotation agent (real broker, real
chDB, one worker): a clearly better candidate goes shadow -> canary 25 -> canary 50 -> stable
and the old stable becomes deprecated; a clearly worse canary is rolled back; an equal version
with few samples stays inconclusive; `versions rollback` restores the previous stable. Then
the decisions, `explain` and `compare --plot` read what happened.

Known distributions: 70 % of the commits are `feat:` changes under src/, 30 % `docs:` changes
under docs/ (deterministic by index). `base` (stable) and `twin` always answer "feature"
(accuracy 0.7), `better` answers "docs" for docs/ files (accuracy 1.0), `worse` always answers
"docs" (accuracy 0.3).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

import pytest

from agents.registry import fold, fold_annotated
from infra.kafka import read_to_end
from infra.procs import read_json
from schemas import ChangedFile, CommitEvent, LifecycleEvent
from streams import names
from streams.cli import main as cli
from streams.services.bus import submit
from streams.services.stack import worker_health

from .conftest import make_stack

pytestmark = pytest.mark.integration

GATES = {"min_samples": 12, "max_error_rate": 0.25, "max_latency_ratio": None,
         "min_accuracy_delta": 0.0, "min_agreement": None}
CONFIG = {
    "task": "code-review",
    "versions": [
        {"id": "base", "backend": "fake", "initial_state": "stable",
         "params": {"label": "feature", "sleep_ms": 2}},
        {"id": "better", "backend": "fake", "initial_state": "shadow",
         "params": {"label": "feature", "label_by_path": {"docs/": "docs"}, "sleep_ms": 2}},
        {"id": "twin", "backend": "fake", "initial_state": "shadow",
         "params": {"label": "feature", "sleep_ms": 2}},
        {"id": "worse", "backend": "fake", "initial_state": "canary",
         "initial_traffic_percent": 30, "params": {"label": "docs", "sleep_ms": 2}},
    ],
    "rotation": {"interval_s": 1.0, "window_s": 3600, "settle_s": 1.0, "canary_steps": [25, 50],
                 "record_holds": True, "record_every_s": 3600,
                 "shadow_to_canary": GATES, "canary_step": GATES, "canary_to_stable": GATES},
    # The rotation alone judges these versions here (healing has its own tests).
    "quarantine": {"triggers": []},
    "breaker": {"failure_threshold": 1000, "cooldown_s": 60},
    "inference": {"batch_size": 4, "batch_wait_s": 0.02},
}


def commits(start: int, count: int) -> list[CommitEvent]:
    out = []
    for i in range(start, start + count):
        docs = i % 10 in (0, 3, 6)
        path = f"docs/page{i}.md" if docs else f"src/mod{i}.py"
        out.append(CommitEvent(
            repo="org/sim", sha=hashlib.sha1(f"sim{i}".encode()).hexdigest(),
            pull_request=10_000 + i, message=f"{'docs' if docs else 'feat'}: change {i}",
            diff=f"+x = {i}\n", files=[ChangedFile(path=path, added=1, deleted=0,
                                                   content=f"x = {i}\n")]))
    return out


def lifecycle(stack) -> list[LifecycleEvent]:
    raw = asyncio.run(read_to_end(stack.settings, stack.settings.kafka,
                                  names.topic(stack.settings, "lifecycle")))
    return [LifecycleEvent.model_validate_json(v) for v in raw]


def states(stack) -> dict[str, str]:
    reg = fold("code-review", lifecycle(stack))
    return {v: e.state.value + (f" {e.traffic_percent:g}" if e.state.value == "canary" else "")
            for v, e in reg.versions.items()}


def poll(read, predicate, timeout: float, interval: float):
    """read() until predicate holds on it or the time is up; the last reading either way."""
    deadline = time.monotonic() + timeout
    while True:
        now = read()
        if predicate(now) or time.monotonic() > deadline:
            return now
        time.sleep(interval)


def wait_states(stack, predicate, timeout: float = 8.0) -> dict[str, str]:
    return poll(lambda: states(stack), predicate, timeout, 0.5)


def worker_states(stack, predicate, timeout: float = 30.0) -> dict[str, str]:
    """The version states the worker's router holds (its /health), once predicate holds."""
    worker = read_json(stack.home / "worker.json")  # where the worker listens: read it once

    def read() -> dict[str, str]:
        return (worker_health(worker) or {}).get("versions", {})

    return poll(read, predicate, timeout, 0.2)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, broker):
    s = make_stack(tmp_path_factory, broker, CONFIG, "lifecycle")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def rollout(stack):
    """Drive traffic until `better` is stable and `worse` is back in shadow."""
    seen: list[dict[str, str]] = []
    sent = 0
    # A few requests first: nothing can be decided on them.
    asyncio.run(submit(stack.settings, commits(sent, 8), wait=True, timeout=120))
    sent += 8
    early = wait_states(stack, lambda s: False, timeout=3.0)
    seen.append(early)

    def done(s: dict[str, str]) -> bool:
        return s.get("better") == "stable" and s.get("worse") == "shadow"

    while sent < 600:
        asyncio.run(submit(stack.settings, commits(sent, 20), wait=True, timeout=120))
        sent += 20
        now = wait_states(stack, done, timeout=2.5)
        seen.append(now)
        if done(now):
            break
    return {"early": early, "seen": seen, "sent": sent, "final": seen[-1]}


def applied_events(stack) -> list[LifecycleEvent]:
    _, notes = fold_annotated("code-review", lifecycle(stack))
    return [e for e, skipped in notes if skipped is None]


def gate(evidence: dict, name: str) -> dict:
    return next(g for g in evidence["gates"] if g["name"] == name)


def test_a_clearly_better_candidate_walks_to_stable(stack, rollout):
    assert rollout["final"]["better"] == "stable", (rollout["sent"], rollout["seen"])
    assert rollout["final"]["base"] == "deprecated"
    moves = [(e.from_state.value, e.to_state.value, e.traffic_percent)
             for e in applied_events(stack) if e.version_id == "better"
             and e.action.value == "promote"]
    assert moves == [("shadow", "canary", 25.0), ("canary", "canary", 50.0),
                     ("canary", "stable", 0.0)]
    for e in applied_events(stack):
        if e.version_id != "better" or e.action.value != "promote":
            continue
        ev = e.evidence
        assert e.actor == "rotation" and ev["outcome"] == "pass" and ev["stable_version"] == "base"
        assert ev["samples"]["candidate"]["labelled"] >= 12
        acc = gate(ev, "accuracy_delta")
        assert acc["outcome"] == "pass" and acc["interval"][0] >= 0.0 and acc["threshold"] == 0.0
        assert acc["candidate"]["estimate"] == 1.0
        assert 0.4 < acc["stable"]["estimate"] < 0.95
        assert acc["stable"]["interval"][0] < acc["stable"]["estimate"] < acc["stable"]["interval"][1]
        assert set(ev["sql"]) == {"candidate", "agreement", "stable"}
        assert len(ev["config_hash"]) == 16 and ev["window"]["scope"] == "stage"
        assert e.position is not None
    print(f"rollout took {rollout['sent']} requests: {rollout['seen']}")


def test_a_clearly_worse_canary_is_rolled_back(stack, rollout):
    rolled = [e for e in applied_events(stack) if e.version_id == "worse"
              and e.action.value == "rollback"]
    assert len(rolled) == 1
    e = rolled[0]
    assert (e.from_state.value, e.to_state.value, e.actor) == ("canary", "shadow", "rotation")
    assert e.evidence["outcome"] == "fail" and e.evidence["verdict"] == "rollback"
    acc = gate(e.evidence, "accuracy_delta")
    assert acc["outcome"] == "fail" and acc["interval"][1] < 0.0
    assert acc["candidate"]["estimate"] < 0.5


def test_equal_versions_with_few_samples_stay_inconclusive(stack, rollout):
    assert rollout["early"]["twin"] == "shadow" and rollout["early"]["better"] == "shadow"
    twin = [e for e in lifecycle(stack) if e.version_id == "twin"]
    assert all(e.action.value in ("register", "hold") for e in twin)  # never moved
    against_base = [e for e in twin if e.action.value == "hold"
                    and e.evidence.get("stable_version") == "base"]
    assert against_base, "no recorded decision for twin"
    assert all(e.evidence["outcome"] == "inconclusive" for e in against_base)
    first = against_base[0].evidence
    assert first["samples"]["candidate"]["n"] < 12
    assert gate(first, "sample_size")["outcome"] == "inconclusive"
    # with more samples the equal accuracies still straddle the margin
    last = against_base[-1].evidence
    if last["samples"]["candidate"]["labelled"] >= 12:
        acc = gate(last, "accuracy_delta")
        assert acc["outcome"] == "inconclusive" and acc["interval"][0] < 0 < acc["interval"][1]


def test_decisions_explain_and_plot(stack, rollout, capsys, monkeypatch, tmp_path):
    for key, value in stack.env.items():
        monkeypatch.setenv(key, value)
    promo = next(e for e in applied_events(stack) if e.version_id == "better"
                 and e.to_state.value == "stable")
    stack.wait_for(f"SELECT count() AS n FROM lifecycle FINAL WHERE event_id = '{promo.event_id}'",
                   lambda rows: rows[0]["n"] >= 1)
    assert cli(["decisions", "better", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    stable_row = next(r for r in rows if r["event_id"] == promo.event_id)
    assert stable_row["applied"] == "yes" and stable_row["change"] == "canary 50% -> stable"
    assert stable_row["evidence"]["gate_set"] == "canary_to_stable"
    assert {r["version_id"] for r in rows} == {"better"}
    assert cli(["decisions"]) == 0
    table = capsys.readouterr().out
    assert "rollback" in table and "promote" in table and promo.event_id[:12] in table

    assert cli(["explain", promo.event_id[:10], "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["event_id"] == promo.event_id
    assert info["rerun"]["same_numbers"] and info["rerun"]["same_outcome"], info["rerun"]
    assert info["rerun"]["now"]["outcome"] == "pass"
    assert info["rerun"]["now_current_config"]["config_changed"] is False
    assert cli(["explain", promo.event_id]) == 0
    text = capsys.readouterr().out
    assert "the same decision" in text and "accuracy_delta" in text

    png = tmp_path / "rollout.png"
    assert cli(["compare", "--plot", str(png), "--window", "1h", "--format", "json"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    from infra.store import open_store
    from streams.services.reports import collect

    with open_store(stack.settings) as store:
        drawn = collect(store, "code-review", 3600)
    assert set(drawn["series"]) == {"base", "better", "twin", "worse"}
    assert [c["state"] for c in drawn["changes"] if c["version_id"] == "better"] == [
        "canary 25%", "canary 50%", "stable"]


def test_manual_commands(stack, rollout, capsys, monkeypatch, tmp_path):
    for key, value in stack.env.items():
        monkeypatch.setenv(key, value)
    before = {e.event_id for e in lifecycle(stack)}
    assert cli(["versions", "promote", "better", "--reason", "more"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("reviewbus: promote better: nothing above stable")
    assert err.count("\n") == 1
    # nothing published by the command (the rotation's own holds may land meanwhile)
    assert [e for e in lifecycle(stack) if e.event_id not in before and e.actor != "rotation"] == []

    assert cli(["versions", "pause", "twin", "--reason", "investigating",
                "--actor", "user:ann"]) == 0
    assert "pause twin: shadow -> shadow (paused)" in capsys.readouterr().out
    paused = [e for e in lifecycle(stack) if e.action.value == "pause"]
    assert [(e.version_id, e.actor, e.reason) for e in paused] == [
        ("twin", "user:ann", "investigating")]
    # Argo's abort: a canary straight back to shadow. twin is paused, so the rotation agent
    # cannot move it between the two commands; the abort is then its demote alone.
    assert cli(["versions", "canary", "twin", "10", "--reason", "try it"]) == 0
    capsys.readouterr()
    assert cli(["versions", "abort", "twin", "--reason", "p99 doubled"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("abort twin: canary 10% (paused) -> shadow (paused)"), out
    assert states(stack)["twin"] == "shadow"
    assert cli(["versions", "abort", "twin", "--reason", "again"]) == 1
    assert "only a canary can be aborted; it is shadow" in capsys.readouterr().err
    assert cli(["versions", "resume", "twin", "--reason", "done"]) == 0
    capsys.readouterr()

    # A quarantine puts the technique on the blocklist: the same spec under another name is
    # refused with the recorded reason; another spec registers.
    assert cli(["versions", "quarantine", "worse", "--reason", "labels docs as everything"]) == 0
    capsys.readouterr()
    same = tmp_path / "same.yaml"
    same.write_text("id: worse-again\nbackend: fake\nparams: {label: docs, sleep_ms: 2}\n")
    assert cli(["versions", "register", str(same)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("reviewbus: register worse-again: blocklisted: fake with ") and \
        "(from version worse): quarantined: labels docs as everything" in err
    fresh = tmp_path / "fresh.yaml"
    fresh.write_text("id: fresh\nbackend: fake\nparams: {label: feature, sleep_ms: 3}\n")
    assert cli(["versions", "register", str(fresh), "--reason", "next idea"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("registered fresh as shadow") and "not in the workers' versions" in out
    # the rotation may already have recorded a hold for the new shadow version
    registered = [e for e in lifecycle(stack) if e.version_id == "fresh" and e.actor != "rotation"]
    assert [(e.action.value, e.reason) for e in registered] == [("register", "next idea")]
    assert registered[0].actor.startswith("user:") and registered[0].position is not None
    # the running workers serve it at once, through their pool topic: a replay to it runs
    assert cli(["replay", "--to", "fresh", "--limit", "2", "--wait", "--timeout", "60"]) == 0
    capsys.readouterr()


def test_rollback_restores_the_previous_stable(stack, rollout, capsys, monkeypatch):
    for key, value in stack.env.items():
        monkeypatch.setenv(key, value)
    assert cli(["versions", "rollback", "--reason", "on-call: findings look wrong"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("rollback better: stable -> deprecated") and "stable version: base" in out
    assert states(stack)["base"] == "stable" and states(stack)["better"] == "deprecated"
    # the command returns once the event is published; the worker's router applies it a
    # moment later (longer under load), so route only once the worker says so
    assert worker_states(stack, lambda v: v.get("base") == "stable")["better"] == "deprecated"
    results = asyncio.run(submit(stack.settings, commits(5000, 6), wait=True, timeout=120))
    assert [(r.version_id, r.role.value) for r in results] == [("base", "primary")] * 6
    assert cli(["versions", "--format", "json"]) == 0
    shares = {r["version_id"]: r["traffic_percent"] for r in json.loads(capsys.readouterr().out)}
    assert shares == {"base": 100.0, "better": 0.0, "twin": 0.0, "worse": 0.0, "fresh": 0.0}


def test_promote_full_walks_every_step_in_one_command(stack, rollout, capsys, monkeypatch):
    """Runs last: it changes the stable version. twin is paused first, so the rotation agent
    leaves it alone; each step is its own event, on consecutive registry positions."""
    for key, value in stack.env.items():
        monkeypatch.setenv(key, value)
    assert cli(["versions", "pause", "twin", "--reason", "hands off"]) == 0
    capsys.readouterr()
    before = {e.event_id for e in lifecycle(stack)}
    assert cli(["versions", "promote", "twin", "--full", "--reason", "hotfix"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("promote --full twin: shadow (paused) -> stable (paused)"), out
    assert "steps, one event each: canary 25% -> canary 50% -> stable" in out
    mine = [e for e in lifecycle(stack) if e.event_id not in before and e.actor != "rotation"]
    assert [(e.action.value, e.to_state.value, e.traffic_percent) for e in mine] == [
        ("promote", "canary", 25.0), ("promote", "canary", 50.0), ("promote", "stable", 0.0)]
    assert [e.position - mine[0].position for e in mine] == [0, 1, 2]
    assert states(stack)["twin"] == "stable" and states(stack)["base"] == "deprecated"
    assert worker_states(stack, lambda v: v.get("twin") == "stable")["base"] == "deprecated"
