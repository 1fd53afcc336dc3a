"""Lifecycle CLI without a broker: decisions, explain and the plot read a real chDB store that
holds a synthetic rollout; register files; one-line refusals."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from agents.config import RotationConfig
from agents.gates import GateConfig
from agents.lifecycle_commands import register_events
from agents.registry import fold
from agents.rotation import decide, metrics_from_results, proposals, window_for
from agents.settings import Settings
from infra.queries import measurement
from infra.readback import registry_from_store
from infra.store import open_store
from schemas import (
    ChangeType,
    InferenceResult,
    LifecycleAction,
    LifecycleEvent,
    Role,
    ShadowComparison,
    Status,
    VersionSpec,
    VersionState,
)
from streams.cli import main as cli
from streams.services.lifecycle import load_specs

from .conftest import isolate_env

GATES = GateConfig(min_samples=10, max_error_rate=0.3, max_latency_ratio=None,
                   min_accuracy_delta=0.0, min_agreement=None)
ROT = RotationConfig(canary_steps=(50,), settle_s=0, shadow_to_canary=GATES, canary_step=GATES,
                     canary_to_stable=GATES)


@pytest.fixture
def env(tmp_path, monkeypatch):
    isolate_env(monkeypatch, tmp_path / "home", "l")
    # No broker anywhere: manual commands must say so in one line.
    monkeypatch.setenv("REVIEWBUS_KAFKA", "127.0.0.1:1")
    return tmp_path


def result(i, version, role, label, predicted, when, latency=20.0):
    return InferenceResult(
        request_id=f"r{i}", task="code-review", version_id=version, role=role,
        status=Status.ok, latency_ms=latency + i % 7, label=label,
        change_type=ChangeType(label=predicted, confidence=0.9), occurred_at=when,
        repo="org/r", sha="abcd", pull_request=i)


@pytest.fixture
def history(env):
    """A stable `a` (accuracy 0.7) and a shadow `b` (1.0) over 30 minutes, and the rotation's
    promotion of b with its evidence, decided on exactly these rows."""
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(minutes=30)
    specs = [VersionSpec(id="a", backend="fake", initial_state="stable"),
             VersionSpec(id="b", backend="fake", initial_state="shadow")]
    registered = [e.model_copy(update={"occurred_at": start - timedelta(minutes=1)})
                  for e in register_events(specs, fold("code-review", []))]
    rows = []
    for i in range(40):
        when = start + timedelta(seconds=40 * i)
        label = "docs" if i % 10 in (0, 3, 6) else "feature"
        rows.append(result(i, "a", Role.primary, label, "feature", when, latency=40.0))
        rows.append(result(i, "b", Role.shadow, label, label, when))
        rows.append(ShadowComparison(request_id=f"r{i}", task="code-review",
                                     stable_version="a", candidate_version="b",
                                     stable_status=Status.ok, candidate_status=Status.ok,
                                     change_type_agree=label == "feature", occurred_at=when))
    settings = Settings()
    with open_store(settings) as store:
        store.insert_events(registered + rows)
        reg = fold("code-review", registered)
        proposal = proposals(reg, ROT)[0]
        window = window_for(reg.versions["b"].since, ROT, now)
        sql = measurement("code-review", "b", "a", window, settings.timer_max_lag_s)
        got = {k: store.query(q.sql, q.params).as_dicts() for k, q in sql.items()}
        cand, stab = metrics_from_results("b", "a", got)
        text = {k: q.text() for k, q in sql.items()}
        verdict = decide(reg, proposal, cand, stab, ROT, text, window, now)
        store.insert_events([verdict.event])
    return {"now": now, "event": verdict.event, "verdict": verdict, "settings": settings}


def test_the_decision_is_stored_with_its_evidence_and_position(history):
    event = history["event"]
    assert event.action == LifecycleAction.promote and event.to_state == VersionState.canary
    with open_store(history["settings"]) as store:
        registry = registry_from_store(store, "code-review")
        row = store.query(f"SELECT position, evidence FROM lifecycle FINAL "
                          f"WHERE event_id = '{event.event_id}'").as_dicts()[0]
    assert row["position"] == 2 == event.position
    assert registry.versions["b"].state == VersionState.canary
    assert registry.versions["b"].traffic_percent == 50.0
    evidence = json.loads(row["evidence"])
    assert evidence["samples"]["candidate"]["labelled"] == 40
    acc = next(g for g in evidence["gates"] if g["name"] == "accuracy_delta")
    assert acc["candidate"]["estimate"] == 1.0 and acc["stable"]["estimate"] == 0.7
    assert acc["interval"][0] > 0 and acc["outcome"] == "pass"


def test_decisions_lists_every_event_with_whether_it_applied(history, capsys):
    assert cli(["decisions", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    got = [(r["version_id"], r["action"], r["applied"]) for r in rows]
    assert sorted(got[:2]) == [("a", "register", "yes"), ("b", "register", "yes")]
    assert got[2:] == [("b", "promote", "yes")]
    promo = rows[-1]
    assert promo["change"] == "shadow -> canary 50%" and promo["outcome"] == "pass"
    assert promo["evidence"]["window"]["scope"] == "stage" and promo["position"] == 2
    assert cli(["decisions", "a"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["occurred_at", "event_id", "version_id", "action", "change",
                                "actor", "outcome", "applied", "reason"]
    assert len(table) == 3 and "register" in table[2]


def test_explain_reruns_the_queries(history, capsys):
    event = history["event"]
    assert cli(["explain", event.event_id]) == 0
    text = capsys.readouterr().out
    assert "now:  pass with the stored gate config, on the same numbers: the same decision" \
        in text
    assert "accuracy_delta" in text and "shadow_to_canary" in text

    # Rows that arrive late inside the window (say, a sink that lagged) change the numbers;
    # enough wrong answers change the decision.
    when = history["now"] - timedelta(minutes=10)
    late = [result(100 + i, "b", Role.shadow, "feature", "docs", when) for i in range(40)]
    with open_store(history["settings"]) as store:
        store.insert_events(late)
    assert cli(["explain", event.event_id[:8], "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rerun"]["same_numbers"] is False
    assert info["rerun"]["then"]["outcome"] == "pass"
    assert info["rerun"]["now"]["outcome"] == "fail"
    assert info["rerun"]["now"]["samples"]["candidate"]["labelled"] == 80
    assert cli(["explain", event.event_id]) == 0
    assert "a DIFFERENT decision" in capsys.readouterr().out

    register_id = next(r["event_id"] for r in json.loads(_decisions(capsys))
                       if r["action"] == "register")
    assert cli(["explain", register_id]) == 0
    assert "not a gate decision" in capsys.readouterr().out
    assert cli(["explain", "zzzzzzzz"]) == 1
    assert "no lifecycle event" in capsys.readouterr().err


def _decisions(capsys) -> str:
    assert cli(["decisions", "--format", "json"]) == 0
    return capsys.readouterr().out


def test_compare_plot(history, capsys, tmp_path):
    png = tmp_path / "out" / "rollout.png"
    assert cli(["compare", "--plot", str(png), "--window", "2h"]) == 0
    assert "plot written to" in capsys.readouterr().err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from streams.services.reports import collect

    with open_store(history["settings"]) as store:
        data = collect(store, "code-review", 7200)
    assert set(data["series"]) == {"a", "b"}
    assert len(data["series"]["a"]["p95_ms"]) >= 20  # buckets follow the data's span
    assert data["series"]["b"]["accuracy"][0][1] == 1.0
    assert data["series"]["b"]["agreement"] and not data["series"]["a"]["agreement"]
    assert [(c["version_id"], c["state"]) for c in data["changes"]] == [("b", "canary 50%")]


def test_plot_lines_break_where_no_traffic_was_measured():
    import math

    from streams.cli.reports import with_gaps

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    at = [t0, t0 + timedelta(seconds=30), t0 + timedelta(seconds=300), t0 + timedelta(seconds=330)]
    xs, ys = with_gaps(list(zip(at, [1.0, 2.0, 3.0, 4.0])), bucket_s=30)
    assert xs == [at[0], at[1], at[1], at[2], at[3]]  # adjacent buckets join, a gap breaks
    assert ys[:2] == [1.0, 2.0] and math.isnan(ys[2]) and ys[3:] == [3.0, 4.0]


def test_plot_without_data_is_a_one_line_error(env, capsys, tmp_path):
    with open_store(Settings()) as store:
        store.query("SELECT 1")
    assert cli(["compare", "--plot", str(tmp_path / "x.png")]) == 1
    assert capsys.readouterr().err.startswith("reviewbus: nothing to plot")


def test_manual_commands_need_the_broker(env, capsys):
    assert cli(["versions", "pause", "b", "--reason", "x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("reviewbus: ") and err.count("\n") == 1 and "Traceback" not in err


def test_every_manual_command_wants_a_reason(env, capsys):
    with pytest.raises(SystemExit):
        cli(["versions", "promote", "b"])
    assert "--reason" in capsys.readouterr().err


def test_load_specs_accepts_a_spec_a_list_or_a_versions_file(tmp_path):
    one = tmp_path / "one.yaml"
    one.write_text("id: v9\nbackend: fake\nparams: {label: docs}\n")
    assert [(s.id, s.task, s.params) for s in load_specs(one, "code-review")] == [
        ("v9", "code-review", {"label": "docs"})]
    many = tmp_path / "many.yaml"
    many.write_text("task: other\nversions:\n  - {id: a1, backend: fake}\n"
                    "  - {id: a2, backend: fake, initial_state: registered}\n")
    assert [(s.id, s.task, s.initial_state.value) for s in load_specs(many, "code-review")] == [
        ("a1", "other", "shadow"), ("a2", "other", "registered")]
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: 'no spaces allowed'\nbackend: fake\n")
    from agents.errors import ConfigError

    with pytest.raises(ConfigError, match="bad.yaml: id"):
        load_specs(bad, "code-review")
    with pytest.raises(ConfigError, match="cannot read"):
        load_specs(tmp_path / "missing.yaml", "code-review")


def test_bare_versions_still_lists_from_the_store(history, capsys):
    assert cli(["versions", "--format", "json"]) == 0
    rows = {r["version_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert (rows["a"]["state"], rows["a"]["traffic_percent"]) == ("stable", 50.0)
    assert (rows["b"]["state"], rows["b"]["traffic_percent"]) == ("canary", 50.0)


def test_hold_events_roundtrip_through_the_store(env):
    register = register_events([VersionSpec(id="a", backend="fake", initial_state="stable")],
                               fold("code-review", []))
    reg = fold("code-review", register)
    hold = LifecycleEvent(task="code-review", version_id="a", action=LifecycleAction.hold,
                          to_state=VersionState.stable, actor="rotation", position=reg.applied,
                          evidence={"outcome": "inconclusive"},
                          occurred_at=register[0].occurred_at + timedelta(seconds=1))
    with open_store(Settings()) as store:
        store.insert_events([*register, hold])
        got = registry_from_store(store, "code-review")
    assert got.applied == 1 and hold.event_id in got.seen_event_ids
