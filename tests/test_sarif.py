"""streams.cli.render (SARIF): structure that SARIF 2.1.0 and GitHub code scanning require."""

from __future__ import annotations

import json

import pytest

from schemas import Dimension, Finding, ReviewFindings, Role, Severity, Status
from streams.cli.render import FINGERPRINT_KEY, sarif_uri, to_sarif


def finding(rule: str = "ruff.F401", *, path: str = "app/runner.py", line: int = 3,
            severity: Severity = Severity.low,
            dimension: Dimension = Dimension.maintainability, fp: str | None = None,
            end_line: int | None = None, suggestion: str | None = None) -> Finding:
    return Finding(
        fingerprint=fp or f"{rule}:{path}:{line}", dimension=dimension, severity=severity,
        confidence=0.9, path=path, line=line, end_line=end_line, rule_id=rule,
        message=f"{rule} at {path}:{line}", source="analyzers", suggestion=suggestion,
    )


def review(version: str, findings: list[Finding], *, sha: str = "a" * 40,
           status: Status = Status.ok, error: str | None = None) -> ReviewFindings:
    return ReviewFindings(
        request_id=f"req-{version}-{sha[:4]}", task="code-review", repo="acme/widgets", sha=sha,
        version_id=version, role=Role.primary, status=status, findings=findings, error=error,
    )


SHELL = finding("bandit.B602", line=8, severity=Severity.high, dimension=Dimension.security,
                suggestion="Pass a list of arguments and shell=False.")
UNUSED = finding("ruff.F401", line=3, severity=Severity.low)
EVAL = finding("bandit.B307", path="./app/retry.py", line=0, severity=Severity.medium,
               dimension=Dimension.security)
CRIT = finding("llm.sql-injection", path="/src\\db.py", line=12, end_line=14,
               severity=Severity.critical, dimension=Dimension.security)
INFO = finding("llm.naming", path="app/utils.py", line=5, severity=Severity.info,
               dimension=Dimension.maintainability)


@pytest.fixture
def log() -> dict:
    return to_sarif([
        review("v1", [SHELL, UNUSED, EVAL]),
        review("v2", [CRIT, INFO, SHELL]),
        review("v1", [UNUSED, INFO], sha="b" * 40),
    ])


def test_top_level(log: dict) -> None:
    assert log["version"] == "2.1.0"
    assert log["$schema"] == "https://json.schemastore.org/sarif-2.1.0.json"
    assert json.loads(json.dumps(log)) == log


def test_one_run_per_version(log: dict) -> None:
    runs = log["runs"]
    assert [r["automationDetails"]["id"] for r in runs] == ["reviewbus/v1/", "reviewbus/v2/"]
    assert [len(r["results"]) for r in runs] == [5, 3]
    for run in runs:
        driver = run["tool"]["driver"]
        assert driver["name"] == "reviewbus"
        assert driver["informationUri"].startswith("https://")
        assert driver["semanticVersion"]
        assert run["invocations"][0]["executionSuccessful"] is True
    assert {r["properties"]["version_id"] for r in runs[0]["results"]} == {"v1"}
    assert {r["properties"]["sha"] for r in runs[0]["results"]} == {"a" * 40, "b" * 40}


def test_rules_unique_and_indexed(log: dict) -> None:
    for run in log["runs"]:
        rules = run["tool"]["driver"]["rules"]
        ids = [r["id"] for r in rules]
        assert len(ids) == len(set(ids))
        for rule in rules:
            assert rule["shortDescription"]["text"]
            assert rule["defaultConfiguration"]["level"] in {"error", "warning", "note"}
            assert rule["properties"]["tags"]
        for result in run["results"]:
            assert result["ruleId"] in ids
            assert rules[result["ruleIndex"]]["id"] == result["ruleId"]


def test_levels_and_security_severity(log: dict) -> None:
    v1, v2 = log["runs"]
    by_rule = {r["ruleId"]: r for r in v1["results"] + v2["results"]}
    assert by_rule["bandit.B602"]["level"] == "error"  # high
    assert by_rule["llm.sql-injection"]["level"] == "error"  # critical
    assert by_rule["bandit.B307"]["level"] == "warning"  # medium
    assert by_rule["ruff.F401"]["level"] == "note"  # low
    assert by_rule["llm.naming"]["level"] == "note"  # info
    rules = {r["id"]: r for r in v1["tool"]["driver"]["rules"] + v2["tool"]["driver"]["rules"]}
    assert rules["bandit.B602"]["properties"]["tags"] == ["security"]
    assert float(rules["llm.sql-injection"]["properties"]["security-severity"]) >= 9.0
    assert 7.0 <= float(rules["bandit.B602"]["properties"]["security-severity"]) < 9.0
    assert 4.0 <= float(rules["bandit.B307"]["properties"]["security-severity"]) < 7.0
    assert "security-severity" not in rules["ruff.F401"]["properties"]
    assert rules["ruff.F401"]["properties"]["tags"] == ["maintainability"]
    assert rules["bandit.B602"]["help"]["text"].startswith("Pass a list")


def test_rule_level_is_the_worst_seen() -> None:
    low = finding("x.rule", severity=Severity.low)
    high = finding("x.rule", line=9, severity=Severity.high)
    (run,) = to_sarif([review("v1", [low, high])])["runs"]
    (rule,) = run["tool"]["driver"]["rules"]
    assert rule["defaultConfiguration"]["level"] == "error"
    assert [r["level"] for r in run["results"]] == ["note", "error"]


def test_locations_and_fingerprints(log: dict) -> None:
    for run in log["runs"]:
        for result in run["results"]:
            (loc,) = result["locations"]
            uri = loc["physicalLocation"]["artifactLocation"]["uri"]
            assert uri and not uri.startswith(("/", "./")) and "\\" not in uri
            region = loc["physicalLocation"]["region"]
            assert region["startLine"] >= 1
            assert region.get("endLine", region["startLine"]) >= region["startLine"]
            assert result["partialFingerprints"][FINGERPRINT_KEY]
            assert result["message"]["text"]
            props = result["properties"]
            assert set(props) >= {"severity", "dimension", "confidence", "version_id", "sha"}
    by_rule = {r["ruleId"]: r for run in log["runs"] for r in run["results"]}
    eval_loc = by_rule["bandit.B307"]["locations"][0]["physicalLocation"]
    assert eval_loc["artifactLocation"]["uri"] == "app/retry.py"
    assert eval_loc["region"] == {"startLine": 1}  # line 0 -> 1
    crit_loc = by_rule["llm.sql-injection"]["locations"][0]["physicalLocation"]
    assert crit_loc["artifactLocation"]["uri"] == "src/db.py"
    assert crit_loc["region"] == {"startLine": 12, "endLine": 14}
    assert by_rule["bandit.B602"]["partialFingerprints"] == {
        FINGERPRINT_KEY: SHELL.fingerprint}


@pytest.mark.parametrize(("path", "uri"), [
    ("app/x.py", "app/x.py"),
    ("./app/x.py", "app/x.py"),
    ("/app//x.py", "app/x.py"),
    ("app\\sub\\x.py", "app/sub/x.py"),
    ("C:\\work\\app\\x.py", "work/app/x.py"),
    ("docs/guide ü.md", "docs/guide%20%C3%BC.md"),
    ("", ""),
])
def test_sarif_uri(path: str, uri: str) -> None:
    assert sarif_uri(path) == uri


def test_findings_without_path_are_counted_not_emitted() -> None:
    commit_level = finding("llm.message", path="", line=0)
    (run,) = to_sarif([review("v1", [commit_level, UNUSED])])["runs"]
    assert [r["ruleId"] for r in run["results"]] == ["ruff.F401"]
    assert run["properties"]["findings_without_location"] == 1
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == ["ruff.F401"]


def test_failed_request_marks_invocation() -> None:
    (run,) = to_sarif([review("v3", [], status=Status.timeout, error="deadline passed")])["runs"]
    assert run["results"] == []
    (inv,) = run["invocations"]
    assert inv["executionSuccessful"] is False
    assert "deadline passed" in inv["toolExecutionNotifications"][0]["message"]["text"]


def test_empty_input_is_a_valid_log() -> None:
    log = to_sarif([])
    assert log["version"] == "2.1.0" and log["$schema"]
    assert len(log["runs"]) <= 1
    for run in log["runs"]:
        assert run["tool"]["driver"]["name"] == "reviewbus"
        assert run["results"] == []
    json.dumps(log)


def test_tool_name_and_version_and_generator_input() -> None:
    log = to_sarif((r for r in [review("v1", [UNUSED])]), tool_name="rb", tool_version="1.2.3")
    (run,) = log["runs"]
    assert run["tool"]["driver"]["name"] == "rb"
    assert run["tool"]["driver"]["semanticVersion"] == "1.2.3"
    assert run["automationDetails"]["id"] == "rb/v1/"
