"""End to end on the real broker and chDB: submit -> findings, shadow, store, DLQ, rotation,
replay, and the CLI reading the store through the running worker."""

from __future__ import annotations

import asyncio
import json

import pytest

from agents.errors import ReviewbusError
from infra.gitsource import commit_events
from infra.kafka import read_to_end, start_producer
from schemas import DeadLetter, LifecycleEvent, Role, Status
from streams import names
from streams.cli import main as cli
from streams.cli.render import Progress
from streams.services.bus import submit
from streams.services.replay import replay

from .conftest import make_stack
from .gitrepo import MAIN_KEYS, SUBJECTS, make_repo

pytestmark = pytest.mark.integration

CONFIG = {
    "task": "code-review",
    "versions": [
        {"id": "an-stable", "backend": "analyzers", "initial_state": "stable",
         "params": {"ruff_select": ["E9", "F", "B", "S"], "bandit": True,
                    "change_type": "paths"}},
        {"id": "an-cand", "backend": "analyzers", "initial_state": "shadow",
         "params": {"ruff_select": ["E9", "F", "B", "S", "SIM"], "bandit": False,
                    "change_type": "message"}},
    ],
    # Short windows so a promotion happens within the test; stop at the first canary step.
    "rotation": {
        "interval_s": 1.0, "window_s": 3600, "canary_steps": [5, 25],
        "shadow_to_canary": {"min_samples": 8, "max_error_rate": 0.4,
                             "max_latency_ratio": None, "min_agreement": 0.0},
        "canary_step": {"min_samples": 100000},
        "canary_to_stable": {"min_samples": 100000},
    },
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, broker):
    s = make_stack(tmp_path_factory, broker, CONFIG, "pipeline")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return make_repo(tmp_path_factory.mktemp("repo") / "demo")


@pytest.fixture(scope="module")
def served(stack, repo):
    events = commit_events(repo, None, last=len(MAIN_KEYS))
    results = asyncio.run(submit(stack.settings, events, wait=True, timeout=180))
    return events, results


def test_every_commit_gets_findings_from_the_stable_version(served):
    events, results = served
    assert len(events) == len(MAIN_KEYS) == 10
    assert sorted(r.request_id for r in results) == sorted(e.event_id for e in events)
    assert all(r.version_id == "an-stable" and r.role == Role.primary for r in results)
    assert all(r.status == Status.ok for r in results)
    by_sha = {r.sha: r for r in results}
    runner = next(e for e in events if e.message.startswith(SUBJECTS["runner"]))
    rules = {f.rule_id for f in by_sha[runner.sha].findings}
    # The runner commit adds an unused import and subprocess with shell=True.
    assert "ruff:F401" in rules
    assert any(rule.startswith("bandit:B60") for rule in rules)


def test_interactions_hold_primary_and_shadow_rows_once(stack, served):
    events, _ = served
    rows = stack.wait_for(
        "SELECT version_id, role, count() AS n, uniqExact(request_id) AS u "
        "FROM interactions FINAL WHERE run_id = '' GROUP BY version_id, role ORDER BY version_id",
        lambda rows: sum(r["n"] for r in rows) >= 2 * len(events))
    got = {(r["version_id"], r["role"]): (r["n"], r["u"]) for r in rows}
    assert got[("an-stable", "primary")] == (10, 10)
    assert got[("an-cand", "shadow")] == (10, 10)
    labelled = stack.query("SELECT count() AS n FROM interactions FINAL "
                           "WHERE label IS NOT NULL AND version_id = 'an-stable'")
    assert labelled[0]["n"] == 10  # every fixture commit has a Conventional Commits type


def test_labels_are_read_and_stripped_before_inference(stack, served):
    rows = stack.wait_for(
        "SELECT label, accepted FROM events_archive FINAL ORDER BY occurred_at",
        lambda rows: len(rows) >= 10)
    labels = sorted(r["label"] for r in rows)
    assert labels.count("bug_fix") == 2 and labels.count("feature") == 1
    for r in rows:
        message = json.loads(r["accepted"])["change"]["message"]
        assert not message.lower().startswith(("fix", "feat", "chore", "docs", "test:", "refactor"))


def test_shadow_comparisons_are_emitted(stack, served):
    rows = stack.wait_for(
        "SELECT stable_version, candidate_version, change_type_agree, precision, recall "
        "FROM shadow_comparisons FINAL", lambda rows: len(rows) >= 10)
    assert len(rows) == 10
    assert {(r["stable_version"], r["candidate_version"]) for r in rows} == {
        ("an-stable", "an-cand")}
    assert all(r["change_type_agree"] in (0, 1, True, False) for r in rows)


def test_rotation_promotes_the_candidate_to_canary_with_evidence(stack, served):
    rows = stack.wait_for(
        "SELECT version_id, action, from_state, to_state, traffic_percent, actor, evidence "
        "FROM lifecycle FINAL WHERE actor = 'rotation'", lambda rows: len(rows) >= 1,
        timeout=60)
    promo = rows[0]
    assert (promo["version_id"], promo["action"], promo["from_state"], promo["to_state"]) == (
        "an-cand", "promote", "shadow", "canary")
    assert promo["traffic_percent"] == 5
    evidence = json.loads(promo["evidence"])
    assert evidence["outcome"] == "pass"
    assert evidence["queries"] and "FROM interactions" in evidence["queries"][0]
    # Stopped at canary(5): its own gates need far more samples.
    assert len(rows) == 1


def test_malformed_messages_go_to_the_dlq_and_the_stream_goes_on(stack, repo):
    settings = stack.settings

    async def scenario():
        producer = await start_producer(settings, settings.kafka)
        try:
            commits = names.topic(settings, "commits")
            await (await producer.send(commits, b"{not json", key=b"x"))
            await (await producer.send(commits, b'{"repo": "r", "sha": 12}', key=b"x"))
            await (await producer.send(commits, b"\xff\xfe\x00binary", key=b"x"))
        finally:
            await producer.stop()
        later = commit_events(repo, "HEAD")
        return await submit(settings, later, wait=True, timeout=120)

    results = asyncio.run(scenario())
    assert len(results) == 1 and results[0].status == Status.ok
    raw = asyncio.run(read_to_end(settings, settings.kafka, names.topic(settings, "dlq")))
    letters = [DeadLetter.model_validate_json(v) for v in raw]
    reasons = [d.error for d in letters]
    assert any("not valid JSON" in r for r in reasons)
    assert any("sha" in r for r in reasons)
    binary = next(d for d in letters if d.payload_encoding == "base64")
    assert binary.payload_size == 9 and binary.source_topic.endswith("commits")
    assert all(d.offset >= 0 for d in letters)


def test_replay_archived_events_into_a_run(stack, served, capsys, monkeypatch):
    stack.wait_for("SELECT count() AS n FROM events_archive FINAL",
                   lambda rows: rows[0]["n"] >= 10)
    with pytest.raises(ReviewbusError, match="--limit must be at least 1"):
        replay(stack.settings, "an-cand", limit=0)  # not "no limit"
    run_id = replay(stack.settings, "an-cand", limit=10, wait=True, timeout=120,
                    progress=Progress)
    rows = stack.query(f"SELECT role, count() AS n FROM interactions FINAL "
                       f"WHERE run_id = '{run_id}' GROUP BY role")
    assert rows == [{"role": "replay", "n": 10}]
    assert "replay" in capsys.readouterr().err  # the progress bar

    for key, value in stack.env.items():
        monkeypatch.setenv(key, value)
    assert cli(["compare", "--run", run_id, "--format", "json"]) == 0
    rows = {r["version_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["an-cand"]["n"] == 10 and rows["an-cand"]["error_rate"] == 0
    # Agreement of the replayed version with the stable version's live answers.
    assert 0 <= rows["an-cand"]["agreement"] <= 1
    assert rows["an-stable"]["n"] == 0


def test_cli_submit_json_and_findings_sarif(stack, repo, served, capsys, monkeypatch):
    for key, value in stack.env.items():
        monkeypatch.setenv(key, value)
    # HEAD~1 is a merge (skipped), so this range holds two commits.
    assert cli(["submit", "--repo", str(repo), "HEAD~3..HEAD", "--wait", "--format", "json",
                "--timeout", "120"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        obj = json.loads(line)
        for key in ("request_id", "repo", "sha", "version_id", "role", "change_type",
                    "findings"):
            assert key in obj
        assert set(obj["change_type"]) >= {"label", "confidence"}
        for f in obj["findings"]:
            assert set(f) >= {"fingerprint", "rule_id", "severity", "dimension", "path", "line",
                              "message", "confidence"}

    assert cli(["findings", "--format", "sarif"]) == 0
    sarif = json.loads(capsys.readouterr().out)
    assert sarif["version"] == "2.1.0"
    results = [r for run in sarif["runs"] for r in run["results"]]
    assert any(r["ruleId"] == "ruff:F401" for r in results)
    assert all(r["locations"][0]["physicalLocation"]["region"]["startLine"] >= 1
               for r in results)


def test_cli_reads_the_store_through_the_worker(stack, served, capsys, monkeypatch):
    for key, value in stack.env.items():
        monkeypatch.setenv(key, value)
    stack.wait_for("SELECT count() AS n FROM interactions FINAL WHERE run_id = ''",
                   lambda rows: rows[0]["n"] >= 20)
    assert cli(["compare", "--format", "json"]) == 0
    rows = {r["version_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["an-stable"]["n"] >= 10 and rows["an-stable"]["agreement"] is None
    assert rows["an-stable"]["error_rate"] == 0
    assert 0 <= rows["an-cand"]["agreement"] <= 1
    assert rows["an-stable"]["accuracy"] is not None
    assert rows["an-stable"]["p50_ms"] <= rows["an-stable"]["p95_ms"] <= rows["an-stable"]["p99_ms"]

    assert cli(["sql", "SELECT count() AS n FROM findings", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["n"] > 0
    assert cli(["sql", "DROP TABLE interactions"]) == 1
    assert "reviewbus:" in capsys.readouterr().err

    assert cli(["versions", "--format", "json"]) == 0
    states = {r["version_id"]: r["state"] for r in json.loads(capsys.readouterr().out)}
    assert states["an-stable"] == "stable" and states["an-cand"] in ("shadow", "canary")


def test_lifecycle_topic_holds_the_registration_events(stack, served):
    raw = asyncio.run(read_to_end(stack.settings, stack.settings.kafka,
                                  names.topic(stack.settings, "lifecycle")))
    events = [LifecycleEvent.model_validate_json(v) for v in raw]
    registered = {e.version_id: e.to_state.value for e in events if e.action.value == "register"}
    assert registered == {"an-stable": "stable", "an-cand": "shadow"}


def test_change_type_feedback_relabels_the_commit_in_the_export(stack, served, capsys,
                                                               monkeypatch, tmp_path):
    for key, value in stack.env.items():
        monkeypatch.setenv(key, value)
    events, _ = served
    target = next(e for e in events if e.message.startswith("docs"))
    stack.wait_for(f"SELECT count() AS n FROM events_archive FINAL "
                   f"WHERE request_id = '{target.event_id}'", lambda r: r[0]["n"] == 1)
    refused = {
        ("change_type:nonsense", "--request", target.event_id): "unknown change type 'nonsense'",
        ("change_type:docs",): "needs --request REQUEST_ID",
        ("change_type:docs", "--request", "no-such-request"): "no archived request",
    }
    for args, reason in refused.items():
        assert cli(["feedback", *args, "--confirmed"]) == 1
        assert reason in capsys.readouterr().err
    assert cli(["feedback", "change_type:performance", "--confirmed", "--request",
                target.event_id]) == 0
    assert f"commit demo@{target.sha[:12]}" in capsys.readouterr().out
    stack.wait_for("SELECT count() AS n FROM feedback FINAL "
                   "WHERE fingerprint = 'change_type:performance'", lambda r: r[0]["n"] == 1)

    out = tmp_path / "labelled.jsonl"
    assert cli(["export", "--task", "change_type", "--out", str(out)]) == 0
    rows = {r["sha"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert rows[target.sha]["label"] == "performance"  # was docs
    assert len(rows) == len(out.read_text().splitlines())  # one row per commit
    # dated by the commit (the fixture's author dates are in January 2024), not by arrival
    assert all(r["author_date"].startswith("2024-01-") for r in rows.values())
