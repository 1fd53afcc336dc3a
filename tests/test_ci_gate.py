"""`submit --wait --fail-on high --format rdjsonl` against a real stack (broker, worker, chDB):
exit 1 when the served version returns a high finding, 0 when it returns none, 3 when
reviewbus cannot review (no broker, or no worker answers in --timeout)."""

from __future__ import annotations

import json
import subprocess

import pytest

from streams.cli import main as cli

from .conftest import isolate_env, make_stack

pytestmark = pytest.mark.integration

HIGH = {"rule_id": "bandit.B602", "path": "app/run.py", "line": 2, "severity": "high",
        "dimension": "security", "message": "subprocess call with shell=True",
        "fingerprint": "0123456789abcdef"}
LOW = {**HIGH, "rule_id": "ruff.F401", "line": 1, "severity": "low", "dimension":
       "maintainability", "message": "unused import", "fingerprint": "fedcba9876543210"}


def config(findings: list[dict]) -> dict:
    return {"task": "code-review",
            "versions": [{"id": "gate-v1", "backend": "fake", "initial_state": "stable",
                          "params": {"label": "feature", "finding_list": findings}}],
            "inference": {"batch_size": 4, "batch_wait_s": 0.02}}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    path = tmp_path_factory.mktemp("gate-repo")

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(path), *args], check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    git("config", "user.email", "ci@example.com")
    git("config", "user.name", "CI")
    (path / "app").mkdir()
    (path / "app" / "run.py").write_text("import os\nos.system(cmd, shell=True)\n")
    git("add", "app/run.py")
    git("commit", "-q", "-m", "feat: run a command")
    return path


@pytest.fixture(scope="module")
def high_stack(tmp_path_factory, broker):
    s = make_stack(tmp_path_factory, broker, config([HIGH, LOW]), "gate-high")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def clean_stack(tmp_path_factory, broker):
    s = make_stack(tmp_path_factory, broker, config([]), "gate-clean")
    yield s
    s.stop()


def _use(stack, monkeypatch) -> None:
    for key, value in stack.env.items():
        monkeypatch.setenv(key, value)


def test_high_finding_fails_the_gate(high_stack, repo, monkeypatch, capsys):
    _use(high_stack, monkeypatch)
    argv = ["submit", "--repo", str(repo), "--wait", "--timeout", "60", "--format", "rdjsonl"]
    assert cli([*argv, "--fail-on", "high"]) == 1
    diags = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(d["code"]["value"], d["severity"]) for d in diags] == [
        ("bandit.B602", "ERROR"), ("ruff.F401", "INFO")]
    assert diags[0]["location"] == {"path": "app/run.py",
                                    "range": {"start": {"line": 2, "column": 1}}}
    assert diags[0]["source"] == {"name": "reviewbus"}
    # The same review passes a gate above its worst finding, and without a gate.
    assert cli([*argv, "--fail-on", "critical"]) == 0
    assert cli(argv) == 0
    capsys.readouterr()


def test_no_finding_passes_the_gate(clean_stack, repo, monkeypatch, capsys, tmp_path):
    _use(clean_stack, monkeypatch)
    summary = tmp_path / "summary.md"
    assert cli(["submit", "--repo", str(repo), "--wait", "--timeout", "60", "--format",
                "rdjsonl", "--fail-on", "high", "--summary-md", str(summary)]) == 0
    assert capsys.readouterr().out == ""
    text = summary.read_text()
    assert "1 commits reviewed, 0 findings" in text and "**passed**" in text


def test_no_broker_is_not_reviewed(repo, tmp_path, monkeypatch, capsys):
    isolate_env(monkeypatch, tmp_path / "home", "g")
    assert cli(["submit", "--repo", str(repo), "--wait", "--fail-on", "high", "--format",
                "rdjsonl"]) == 3
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("reviewbus: no broker")
    # Without --wait nothing is reviewed: a plain error, as before.
    assert cli(["submit", "--repo", str(repo)]) == 1


def test_no_topic_and_timeout_are_not_reviewed(broker, repo, tmp_path_factory, tmp_path,
                                               monkeypatch, capsys):
    isolate_env(monkeypatch, tmp_path / "home", "g")
    monkeypatch.setenv("REVIEWBUS_KAFKA", broker)  # a broker, but no worker set up the topics
    argv = ["submit", "--repo", str(repo), "--fail-on", "high", "--format", "rdjsonl"]
    assert cli(argv) == 3
    assert "does not exist" in capsys.readouterr().err
    slow = config([HIGH])
    slow["versions"][0].update(timeout_s=60, params={"finding_list": [HIGH], "sleep_ms": 8000})
    s = make_stack(tmp_path_factory, broker, slow, "gate-slow")
    try:
        _use(s, monkeypatch)
        assert cli([*argv, "--timeout", "2"]) == 3  # the answer would fail the gate, too late
        assert "timed out after 2 s" in capsys.readouterr().err
    finally:
        s.stop()


def test_a_report_that_cannot_be_written_is_not_a_verdict(high_stack, repo, monkeypatch,
                                                          capsys, tmp_path):
    _use(high_stack, monkeypatch)
    missing = tmp_path / "no-such-dir" / "reviewbus.sarif"
    argv = ["submit", "--repo", str(repo), "--timeout", "60", "--fail-on", "critical",
            "--report", f"sarif:{missing}"]
    assert cli(argv) == 3
    assert "reviewbus: cannot write a report: " in capsys.readouterr().err
    # the same review with a writable report: the gate's own verdict, and the file
    ok = tmp_path / "reviewbus.sarif"
    assert cli([*argv[:-1], f"sarif:{ok}"]) == 0
    assert json.loads(ok.read_text())["version"] == "2.1.0"
