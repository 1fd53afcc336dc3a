"""streams.cli.ci: the CI formats (rdjsonl, GitLab Code Quality, GitHub workflow commands and
step summary, SARIF against the official 2.1.0 schema) on fixed findings, the fingerprints
they share, and the severity gate."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from agents.fingerprint import fingerprint
from schemas import Dimension, Finding, ReviewFindings, Role, Severity, Status
from streams.cli.ci import (
    EXIT_FINDINGS,
    EXIT_NOT_REVIEWED,
    EXIT_OK,
    escape_data,
    escape_property,
    gate,
    summary_md,
    to_github,
    to_gitlab,
    to_rdjsonl,
)
from streams.cli.render import FINGERPRINT_KEY, to_sarif

# The official OASIS schema, vendored from github.com/oasis-tcs/sarif-spec
# (sarif-2.1/schema/sarif-schema-2.1.0.json at e0583813964ec43cea53b6b531b402866095ed1f).
SARIF_SCHEMA = Path(__file__).parent / "data" / "sarif-schema-2.1.0.json"


def finding(rule: str, path: str, line: int, severity: Severity, *, content: str = "x = 1",
            message: str | None = None, suggestion: str | None = None,
            end_line: int | None = None,
            dimension: Dimension = Dimension.maintainability) -> Finding:
    return Finding(
        fingerprint=fingerprint(rule, path, content), dimension=dimension, severity=severity,
        confidence=0.8, path=path, line=line, end_line=end_line, rule_id=rule,
        message=message or f"{rule} here", source="analyzers", suggestion=suggestion)


def review(findings: list[Finding], *, sha: str = "a" * 40, version: str = "v1",
           status: Status = Status.ok, error: str | None = None) -> ReviewFindings:
    return ReviewFindings(
        request_id=f"req-{sha[:6]}", task="code-review", repo="acme/widgets", sha=sha,
        version_id=version, role=Role.primary, status=status, findings=findings, error=error)


SHELL = finding("bandit.B602", "app/run.py", 8, Severity.high, content="call(cmd, shell=True)",
                dimension=Dimension.security, suggestion="Pass a list and shell=False.",
                end_line=9)
TRICKY = finding("llm.style", "./dir,a/b:c%.py", 3, Severity.medium,
                 message="100% bad:\r\nline two, really")
LOW = finding("ruff.F401", "app/util.py", 0, Severity.low, content="import os")
DUP = finding("ruff.F401", "app/util.py", 7, Severity.low, content="import os")  # same line text
INFO = finding("llm.naming", "app/util.py", 5, Severity.info, content="def f(): pass")
CRIT = finding("llm.sqli", "db.py", 12, Severity.critical, content="q = f'{x}'")
COMMIT = finding("llm.message", "", 0, Severity.info, content="")


@pytest.fixture
def results() -> list[ReviewFindings]:
    return [review([SHELL, TRICKY, LOW, DUP, COMMIT]),
            review([INFO, CRIT, SHELL], sha="b" * 40)]


# ---- rdjsonl ------------------------------------------------------------------------------------


def test_rdjsonl(results) -> None:
    lines = to_rdjsonl(results).splitlines()
    assert len(lines) == 8
    diags = [json.loads(line) for line in lines]
    shell = diags[0]
    assert shell == {
        "message": "bandit.B602 here\n\nSuggestion: Pass a list and shell=False.",
        "location": {"path": "app/run.py",
                     "range": {"start": {"line": 8, "column": 1}, "end": {"line": 9}}},
        "severity": "ERROR",
        "source": {"name": "reviewbus"},
        "code": {"value": "bandit.B602"},
        "original_output": f"fingerprint={SHELL.fingerprint} version=v1 sha={'a' * 40}",
    }
    assert [d["severity"] for d in diags] == ["ERROR", "WARNING", "INFO", "INFO", "INFO",
                                              "INFO", "ERROR", "ERROR"]
    assert diags[1]["location"]["path"] == "dir,a/b:c%.py"  # normalized, not escaped
    assert diags[1]["message"] == "100% bad:\r\nline two, really"
    assert diags[2]["location"]["range"]["start"] == {"line": 1, "column": 1}  # line 0 -> 1
    assert "location" not in diags[4]  # a commit-level finding
    assert to_rdjsonl([]) == ""


# ---- GitLab Code Quality ------------------------------------------------------------------------


def test_gitlab(results) -> None:
    issues = to_gitlab(results)
    fps = [i["fingerprint"] for i in issues]
    assert len(fps) == len(set(fps)) == 6  # SHELL twice is one issue; no commit-level one
    for issue in issues:
        assert set(issue) >= {"description", "check_name", "fingerprint", "severity",
                              "location"}
        assert issue["severity"] in {"info", "minor", "major", "critical", "blocker"}
        assert issue["location"]["path"] and issue["location"]["lines"]["begin"] >= 1
    by_rule = {i["check_name"]: i for i in issues}
    assert by_rule["llm.sqli"]["severity"] == "blocker"
    assert by_rule["bandit.B602"]["severity"] == "critical"
    assert by_rule["bandit.B602"]["location"] == {"path": "app/run.py",
                                                  "lines": {"begin": 8, "end": 9}}
    assert by_rule["llm.style"]["severity"] == "major"
    assert by_rule["llm.naming"]["severity"] == "info"
    f401 = [i for i in issues if i["check_name"] == "ruff.F401"]
    assert [i["fingerprint"] for i in f401] == [LOW.fingerprint, LOW.fingerprint + ".2"]
    assert [i["severity"] for i in f401] == ["minor", "minor"]
    assert json.loads(json.dumps(issues)) == issues


# ---- GitHub -------------------------------------------------------------------------------------


def test_github_escaping() -> None:
    assert escape_data("a%b\r\nc") == "a%25b%0D%0Ac"
    assert escape_property("a%b,c:d\ne") == "a%25b%2Cc%3Ad%0Ae"


def test_github_commands(results) -> None:
    lines = to_github(results).split("\n")
    assert len(lines) == 8
    assert lines[0] == ("::error file=app/run.py,line=8,endLine=9,"
                        "title=bandit.B602 (high)::bandit.B602 here%0A%0A"
                        "Suggestion: Pass a list and shell=False.")
    assert lines[1] == ("::warning file=dir%2Ca/b%3Ac%25.py,line=3,title=llm.style (medium)"
                        "::100%25 bad:%0D%0Aline two, really")
    assert lines[2].startswith("::notice file=app/util.py,line=1,title=ruff.F401 (low)::")
    assert lines[4] == "::notice title=llm.message (info)::llm.message here"
    for line in lines:
        assert "\n" not in line and "\r" not in line


def test_summary_md(results) -> None:
    failed = review([], sha="c" * 40, status=Status.timeout, error="deadline | passed")
    md = summary_md([*results, failed], Severity.high)
    assert md.startswith("## reviewbus\n")
    assert "3 commits reviewed, 8 findings, 1 not reviewed." in md
    assert "| 1 | 2 | 1 | 2 | 2 |" in md  # critical high medium low info
    assert "Gate `--fail-on high`: **failed**." in md
    assert "deadline \\| passed" in md
    row = next(line for line in md.splitlines() if "llm.style" in line)
    assert "100% bad: line two, really" in row and row.count(" | ") == 5
    assert f"`{LOW.fingerprint}.2`" in md
    assert "**passed**" in summary_md(results[:1], Severity.critical)


# ---- SARIF against the official schema ----------------------------------------------------------


@pytest.fixture(scope="module")
def sarif_validator() -> jsonschema.Draft4Validator:
    schema = json.loads(SARIF_SCHEMA.read_text())
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def test_sarif_is_valid_against_the_official_schema(results, sarif_validator) -> None:
    for log in (to_sarif(results), to_sarif([]),
                to_sarif([review([], status=Status.error, error="boom")]),
                to_sarif([*results, review([CRIT], sha="d" * 40, version="v2")])):
        errors = sorted(sarif_validator.iter_errors(log), key=lambda e: list(e.path))
        assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]


def test_the_schema_catches_a_broken_log(results, sarif_validator) -> None:
    log = to_sarif(results)
    log["runs"][0]["results"][0]["level"] = "fatal"
    del log["runs"][0]["tool"]["driver"]["name"]
    assert len(list(sarif_validator.iter_errors(log))) >= 2


def test_sarif_has_what_code_scanning_needs(results) -> None:
    (run,) = to_sarif(results)["runs"]
    rules = {r["id"]: r for r in run["tool"]["driver"]["rules"]}
    assert rules["bandit.B602"]["help"]["text"]
    assert float(rules["bandit.B602"]["properties"]["security-severity"]) >= 7.0
    for result in run["results"]:
        uri = result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        assert not uri.startswith(("/", "./")) and "://" not in uri
        assert result["partialFingerprints"][FINGERPRINT_KEY]
        assert rules[result["ruleId"]]["defaultConfiguration"]["level"]


# ---- the same fingerprints everywhere, and across reruns ----------------------------------------


def _fingerprints(results) -> dict[str, list[str]]:
    sarif = [r["partialFingerprints"][FINGERPRINT_KEY]
             for run in to_sarif(results)["runs"] for r in run["results"]]
    rd = [json.loads(line)["original_output"].split()[0].removeprefix("fingerprint=")
          for line in to_rdjsonl(results).splitlines()]
    gitlab = [i["fingerprint"] for i in to_gitlab(results)]
    return {"sarif": sarif, "rdjsonl": rd, "gitlab": gitlab}


def test_fingerprints_agree_across_formats_and_reruns(results) -> None:
    fps = _fingerprints(results)
    with_path = [fp for fp in fps["rdjsonl"] if fp != COMMIT.fingerprint]
    assert fps["sarif"] == with_path
    assert fps["gitlab"] == list(dict.fromkeys(with_path))
    md = summary_md(results)
    assert all(f"`{fp}`" in md for fp in fps["rdjsonl"])
    # A rerun: the same commits reviewed again, the findings now on other lines (an edit
    # above them) and arriving as new objects: the fingerprints do not move.
    moved = [review([finding(f.rule_id, f.path, f.line + 10, f.severity,
                             content={SHELL.rule_id: "call(cmd,   shell=True)"}.get(
                                 f.rule_id, _content_of(f)),
                             message=f.message, suggestion=f.suggestion)
                     for f in r.findings], sha=r.sha) for r in results]
    assert _fingerprints(moved) == fps


def _content_of(f: Finding) -> str:
    for g, content in ((SHELL, "call(cmd, shell=True)"), (TRICKY, "x = 1"), (LOW, "import os"),
                       (DUP, "import os"), (INFO, "def f(): pass"), (CRIT, "q = f'{x}'"),
                       (COMMIT, "")):
        if g.rule_id == f.rule_id and g.path == f.path:
            return content
    raise KeyError(f.rule_id)


# ---- the gate -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("level", "code"), [
    (None, EXIT_OK), (Severity.critical, EXIT_FINDINGS), (Severity.high, EXIT_FINDINGS),
    (Severity.info, EXIT_FINDINGS)])
def test_gate_levels(results, level, code) -> None:
    assert gate(results, level) == code


def test_gate_at_or_above_exactly() -> None:
    medium = [review([TRICKY])]
    assert gate(medium, Severity.high) == EXIT_OK
    assert gate(medium, Severity.medium) == EXIT_FINDINGS
    assert gate(medium, Severity.low) == EXIT_FINDINGS
    assert gate([], Severity.info) == EXIT_OK


def test_gate_not_reviewed() -> None:
    failed = review([], sha="c" * 40, status=Status.error, error="backend down")
    assert gate([review([]), failed], Severity.high) == EXIT_NOT_REVIEWED
    assert gate([review([CRIT]), failed], Severity.high) == EXIT_FINDINGS  # a real failure wins
    assert gate([failed], None) == EXIT_NOT_REVIEWED
