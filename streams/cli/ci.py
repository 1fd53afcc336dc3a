"""CI output formats and the severity gate, from one model of a finding (`CIFinding`).

- `rdjsonl`: reviewdog Diagnostic JSON Lines (`reviewdog -f=rdjsonl`);
- `gitlab`: a GitLab Code Quality report (a JSON array);
- `github`: GitHub Actions workflow commands (annotations), and `summary_md` for
  `$GITHUB_STEP_SUMMARY` or a merge-request comment;
- SARIF is `render.to_sarif`, which uses the same fingerprints (`unique_fingerprints`).

Every format carries the finding's stable fingerprint (agents/fingerprint.py: rule, path and
line content, no line number), so it is the same across formats and reruns. Two findings of
one review with the same fingerprint (the same rule on two identical lines of one file) get
`fp`, `fp.2`, ... in the order the review lists them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agents.fingerprint import normalize_path
from schemas import SEVERITY_ORDER, Finding, ReviewFindings, Severity, Status

SOURCE = "reviewbus"

RDJSON_SEVERITY: dict[Severity, str] = {
    Severity.critical: "ERROR", Severity.high: "ERROR", Severity.medium: "WARNING",
    Severity.low: "INFO", Severity.info: "INFO",
}
GITLAB_SEVERITY: dict[Severity, str] = {
    Severity.critical: "blocker", Severity.high: "critical", Severity.medium: "major",
    Severity.low: "minor", Severity.info: "info",
}
GITHUB_COMMAND: dict[Severity, str] = {
    Severity.critical: "error", Severity.high: "error", Severity.medium: "warning",
    Severity.low: "notice", Severity.info: "notice",
}

# Exit codes of `submit --wait` (documented in its --help and docs/guides/ci.md).
EXIT_OK = 0
EXIT_FINDINGS = 1     # a served finding at or above --fail-on
EXIT_USAGE = 2        # argparse
EXIT_NOT_REVIEWED = 3  # no broker, timeout, a commit answered with an error status


def unique_fingerprints(findings: Iterable[Finding]) -> list[str]:
    """The fingerprint of each finding of one review, made unique within it."""
    seen: dict[str, int] = {}
    out = []
    for f in findings:
        n = seen[f.fingerprint] = seen.get(f.fingerprint, 0) + 1
        out.append(f.fingerprint if n == 1 else f"{f.fingerprint}.{n}")
    return out


@dataclass(frozen=True)
class CIFinding:
    """One finding as every CI format sees it."""

    fingerprint: str
    rule_id: str
    severity: Severity
    dimension: str
    path: str  # repository-relative posix path; "" for a commit-level finding
    line: int  # >= 1
    end_line: int | None
    message: str
    suggestion: str | None
    source: str
    confidence: float
    version_id: str
    repo: str
    sha: str

    @property
    def title(self) -> str:
        return f"{self.rule_id} ({self.severity.value})"


def ci_findings(results: Iterable[ReviewFindings]) -> list[CIFinding]:
    out = []
    for r in results:
        for f, fp in zip(r.findings, unique_fingerprints(r.findings)):
            path = normalize_path(f.path) if f.path not in ("", "-") else ""
            line = max(1, f.line)
            end = f.end_line if f.end_line is not None and f.end_line >= line else None
            out.append(CIFinding(
                fingerprint=fp, rule_id=f.rule_id, severity=f.severity,
                dimension=f.dimension.value, path=path, line=line, end_line=end,
                message=f.message.strip() or f.rule_id, suggestion=f.suggestion,
                source=f.source, confidence=f.confidence, version_id=r.version_id,
                repo=r.repo, sha=r.sha))
    return out


# ---- gate ---------------------------------------------------------------------------------------


def at_or_above(severity: Severity, level: Severity) -> bool:
    return SEVERITY_ORDER[severity] <= SEVERITY_ORDER[level]


def gate(results: list[ReviewFindings], fail_on: Severity | None) -> int:
    """EXIT_FINDINGS when a served finding is at or above `fail_on`; else EXIT_NOT_REVIEWED
    when a commit was answered with a failed status; else EXIT_OK."""
    if fail_on is not None and any(at_or_above(f.severity, fail_on)
                                   for r in results for f in r.findings):
        return EXIT_FINDINGS
    if any(r.status != Status.ok for r in results):
        return EXIT_NOT_REVIEWED
    return EXIT_OK


# ---- reviewdog ----------------------------------------------------------------------------------


def _message(f: CIFinding) -> str:
    # A finding's suggestion is advice in prose, not replacement code, so it goes into the
    # message rather than reviewdog `suggestions` (which would replace the lines with it).
    return f"{f.message}\n\nSuggestion: {f.suggestion}" if f.suggestion else f.message


def rdjson_diagnostic(f: CIFinding) -> dict[str, Any]:
    d: dict[str, Any] = {"message": _message(f)}
    if f.path:
        rng: dict[str, Any] = {"start": {"line": f.line, "column": 1}}
        if f.end_line is not None and f.end_line > f.line:
            rng["end"] = {"line": f.end_line}
        d["location"] = {"path": f.path, "range": rng}
    d["severity"] = RDJSON_SEVERITY[f.severity]
    d["source"] = {"name": SOURCE}
    d["code"] = {"value": f.rule_id}
    d["original_output"] = f"fingerprint={f.fingerprint} version={f.version_id} sha={f.sha}"
    return d


def to_rdjsonl(results: Iterable[ReviewFindings]) -> str:
    """One Diagnostic per line (no trailing newline; "" when there is none)."""
    return "\n".join(json.dumps(rdjson_diagnostic(f), ensure_ascii=False)
                     for f in ci_findings(results))


# ---- GitLab Code Quality ------------------------------------------------------------------------


def to_gitlab(results: Iterable[ReviewFindings]) -> list[dict[str, Any]]:
    """Code Quality issues. A finding seen in several commits (the same fingerprint) is one
    issue, with the worst severity; a commit-level finding (no path) has no place in it."""
    issues: dict[str, dict[str, Any]] = {}
    for f in ci_findings(results):
        if not f.path:
            continue
        issue = issues.get(f.fingerprint)
        if issue is not None:
            if SEVERITY_ORDER[f.severity] < SEVERITY_ORDER[Severity(issue["_sev"])]:
                issue["severity"], issue["_sev"] = GITLAB_SEVERITY[f.severity], f.severity.value
            continue
        lines: dict[str, int] = {"begin": f.line}
        if f.end_line is not None:
            lines["end"] = f.end_line
        issues[f.fingerprint] = {
            "description": _message(f),
            "check_name": f.rule_id,
            "fingerprint": f.fingerprint,
            "severity": GITLAB_SEVERITY[f.severity],
            "categories": [f.dimension.capitalize()],
            "location": {"path": f.path, "lines": lines},
            "_sev": f.severity.value,
        }
    return [{k: v for k, v in i.items() if k != "_sev"} for i in issues.values()]


# ---- GitHub Actions -----------------------------------------------------------------------------


def escape_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(s: str) -> str:
    return escape_data(s).replace(":", "%3A").replace(",", "%2C")


def github_command(f: CIFinding) -> str:
    props = []
    if f.path:
        props.append(f"file={escape_property(f.path)}")
        props.append(f"line={f.line}")
        if f.end_line is not None:
            props.append(f"endLine={f.end_line}")
    props.append(f"title={escape_property(f.title)}")
    return f"::{GITHUB_COMMAND[f.severity]} {','.join(props)}::{escape_data(_message(f))}"


def to_github(results: Iterable[ReviewFindings]) -> str:
    return "\n".join(github_command(f) for f in ci_findings(results))


def _md(s: str) -> str:
    return " ".join(s.replace("\\", "\\\\").replace("|", "\\|").split())


def summary_md(results: list[ReviewFindings], fail_on: Severity | None = None) -> str:
    """A Markdown summary: counts by severity, the commits, then one table row per finding."""
    findings = ci_findings(results)
    counts = {s: sum(1 for f in findings if f.severity == s) for s in Severity}
    failed = [r for r in results if r.status != Status.ok]
    lines = ["## reviewbus", "",
             f"{len(results)} commits reviewed, {len(findings)} findings"
             + (f", {len(failed)} not reviewed" if failed else "") + ".", "",
             "| " + " | ".join(s.value for s in Severity) + " |",
             "|" + "---|" * len(Severity),
             "| " + " | ".join(str(counts[s]) for s in Severity) + " |", ""]
    if fail_on is not None:
        verdict = gate(results, fail_on)
        word = {EXIT_OK: "passed", EXIT_FINDINGS: "failed",
                EXIT_NOT_REVIEWED: "not reviewed"}[verdict]
        lines += [f"Gate `--fail-on {fail_on.value}`: **{word}**.", ""]
    for r in failed:
        lines.append(f"- `{r.sha[:10]}` {r.status.value}" + (f": {_md(r.error)}" if r.error else ""))
    if failed:
        lines.append("")
    if findings:
        lines += ["| severity | rule | location | message | commit | fingerprint |",
                  "|---|---|---|---|---|---|"]
        for f in sorted(findings, key=lambda f: (SEVERITY_ORDER[f.severity], f.path, f.line)):
            where = f"`{_md(f.path)}:{f.line}`" if f.path else "(commit)"
            lines.append(f"| {f.severity.value} | `{_md(f.rule_id)}` | {where} | "
                         f"{_md(_message(f))} | `{f.sha[:10]}` | `{f.fingerprint}` |")
        lines.append("")
    return "\n".join(lines)
