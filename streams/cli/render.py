"""Every output of the CLI: tables, findings as text, JSON or SARIF, a progress bar, and the
`--format` option that picks one.

SARIF: `to_sarif(results)` is a pure function: ReviewFindings in, a JSON-ready dict out (SARIF
2.1.0 as GitHub code scanning accepts it). One run per serving version (its own
`automationDetails.id`, so GitHub keeps each version's alerts in a separate category), rules
deduplicated per run, each result carrying the finding's stable fingerprint in
`partialFingerprints`, so alerts survive line moves and reruns.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from importlib import metadata
from typing import Any
from urllib.parse import quote

from schemas import Dimension, Finding, ReviewFindings, Severity, Status

TABLE = ("table", "json")
FINDINGS = ("text", "json", "sarif", "rdjsonl", "gitlab", "github")


def add_format(parser: argparse.ArgumentParser, choices: Sequence[str] = TABLE) -> None:
    """The one `--format` option; the first choice is the default."""
    parser.add_argument("--format", choices=tuple(choices), default=choices[0],
                        help="output format (default: %(default)s)")


def to_json(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)


def emit(rows: Any, fmt: str, columns: Sequence[str] | None = None) -> None:
    """Print rows as JSON or as a table (`columns`: which, in order; default: all)."""
    print(to_json(rows) if fmt == "json" else render_table(rows, columns))


# ---- tables ------------------------------------------------------------------------------------


def render_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join([line, rule, *body])


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def clip(text: str | None, width: int) -> str:
    """At most `width` characters; a cut one ends in ~."""
    text = text or ""
    return text if len(text) <= width else text[:width - 1] + "~"


# ---- findings ----------------------------------------------------------------------------------


def findings_json(r: ReviewFindings) -> str:
    return r.model_dump_json()


def findings_text(r: ReviewFindings) -> str:
    ct = f"{r.change_type.label} ({r.change_type.confidence:.2f})" if r.change_type else "-"
    served = f"{r.version_id} [{r.role.value}]"
    if r.fallback_from:
        served += f" (fallback from {r.fallback_from})"
    head = f"{r.sha[:10]}  {r.repo}  {served}  type={ct}  status={r.status.value}"
    if r.error:
        head += f"  error={r.error}"
    lines = [head + f"  findings={len(r.findings)}"]
    for f in r.findings:
        lines.append(f"    {f.severity.value:8} {f.rule_id:14} {f.path}:{f.line}  {f.message}")
    return "\n".join(lines)


def summary(results: Iterable[ReviewFindings]) -> str:
    results = list(results)
    severities: Counter[str] = Counter()
    rules: Counter[str] = Counter()
    types: Counter[str] = Counter()
    served: Counter[str] = Counter()
    for r in results:
        served[f"{r.version_id} [{r.role.value}]"] += 1
        types[r.change_type.label if r.change_type else "-"] += 1
        for f in r.findings:
            severities[f.severity.value] += 1
            rules[f.rule_id] += 1
    total = sum(severities.values())
    lines = [f"{len(results)} commits reviewed, {total} findings",
             "  by severity: " + ", ".join(f"{k}={v}" for k, v in sorted(severities.items())),
             "  top rules:   " + ", ".join(f"{k}={v}" for k, v in rules.most_common(8)),
             "  change type: " + ", ".join(f"{k}={v}" for k, v in types.most_common()),
             "  served by:   " + ", ".join(f"{k}={v}" for k, v in served.most_common())]
    return "\n".join(lines)


# ---- a progress bar on stderr for long work (replay, waiting for results, training) -------------


class Progress:
    def __init__(self, total: int, label: str, stream=None, width: int = 30) -> None:
        self.total, self.label, self.width = max(total, 0), label, width
        self.done = 0
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self._last = 0.0

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= 0.1 or self.done >= self.total:
            self._last = now
            self._draw(now)

    def set(self, done: int) -> None:
        self.update(done - self.done)

    def _draw(self, now: float) -> None:
        frac = min(1.0, self.done / self.total) if self.total else 1.0
        filled = int(frac * self.width)
        rate = self.done / max(now - self.started, 1e-6)
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] "
                          f"{self.done}/{self.total} {rate:6.1f}/s")
        self.stream.flush()

    def close(self) -> None:
        self._draw(time.monotonic())
        self.stream.write("\n")
        self.stream.flush()


# ---- SARIF 2.1.0 -------------------------------------------------------------------------------

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_VERSION = "2.1.0"
FINGERPRINT_KEY = "reviewbus/v1"
INFORMATION_URI = "https://github.com/reviewbus/reviewbus"

LEVELS: dict[Severity, str] = {
    Severity.critical: "error",
    Severity.high: "error",
    Severity.medium: "warning",
    Severity.low: "note",
    Severity.info: "note",
}
# GitHub buckets: >= 9.0 critical, 7.0-8.9 high, 4.0-6.9 medium, 0.1-3.9 low.
SECURITY_SEVERITY: dict[Severity, str] = {
    Severity.critical: "9.5",
    Severity.high: "8.0",
    Severity.medium: "5.5",
    Severity.low: "3.0",
    Severity.info: "1.0",
}
_RANK = {s: i for i, s in enumerate(Severity)}  # critical=0 ... info=4
_MAX_DESCRIPTION = 1000  # GitHub shows at most 1024 characters of a description


def _package_version() -> str:
    try:
        return metadata.version("reviewbus")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


TOOL_VERSION = _package_version()


def sarif_uri(path: str) -> str:
    """A repository-relative URI reference: forward slashes, no leading `./` or `/`."""
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    uri = "/".join(parts)
    if re.match(r"^[A-Za-z]:$", parts[0] if parts else ""):  # a Windows drive letter
        uri = "/".join(parts[1:])
    return quote(uri, safe="/-._~!$&'()*+,;=:@")  # spaces, %, #, ? and non-ASCII escaped


def _text(value: str, fallback: str, limit: int | None = None) -> str:
    text = " ".join(value.split()) if limit else value.strip()
    text = text or fallback
    if limit and len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


class _Run:
    """Collects one version's results and the rules they use."""

    def __init__(self, version_id: str) -> None:
        self.version_id = version_id
        self.rules: list[dict[str, Any]] = []
        self.rule_index: dict[str, int] = {}
        self.rule_severity: dict[str, Severity] = {}
        self.rule_security: dict[str, Severity] = {}
        self.results: list[dict[str, Any]] = []
        self.requests: list[ReviewFindings] = []
        self.without_location = 0

    def rule(self, f: Finding) -> int:
        index = self.rule_index.get(f.rule_id)
        dimension = f.dimension.value
        if index is None:
            index = len(self.rules)
            self.rule_index[f.rule_id] = index
            rule: dict[str, Any] = {
                "id": f.rule_id,
                "name": f.rule_id,
                "shortDescription": {"text": _text(f"{f.rule_id} ({dimension})", f.rule_id,
                                                   _MAX_DESCRIPTION)},
                "fullDescription": {"text": _text(f.message, f.rule_id, _MAX_DESCRIPTION)},
                "defaultConfiguration": {"level": LEVELS[f.severity]},
                "properties": {"tags": [dimension]},
            }
            if f.suggestion:
                rule["help"] = {"text": _text(f.suggestion, f.rule_id)}
            self.rules.append(rule)
            self.rule_severity[f.rule_id] = f.severity
        rule = self.rules[index]
        tags: list[str] = rule["properties"]["tags"]
        if dimension not in tags:
            tags.append(dimension)
        if _RANK[f.severity] < _RANK[self.rule_severity[f.rule_id]]:
            self.rule_severity[f.rule_id] = f.severity
            rule["defaultConfiguration"]["level"] = LEVELS[f.severity]
        if f.dimension == Dimension.security:
            worst = self.rule_security.get(f.rule_id)
            if worst is None or _RANK[f.severity] < _RANK[worst]:
                self.rule_security[f.rule_id] = f.severity
                rule["properties"]["security-severity"] = SECURITY_SEVERITY[f.severity]
        return index

    def add(self, review: ReviewFindings) -> None:
        self.requests.append(review)
        from .ci import unique_fingerprints  # the fingerprints of every CI format

        for f, fp in zip(review.findings, unique_fingerprints(review.findings)):
            uri = sarif_uri(f.path)
            if not uri:  # commit-level findings have no file to point at
                self.without_location += 1
                continue
            start = max(1, f.line)
            region: dict[str, int] = {"startLine": start}
            if f.end_line is not None and f.end_line >= start:
                region["endLine"] = f.end_line
            result: dict[str, Any] = {
                "ruleId": f.rule_id,
                "ruleIndex": self.rule(f),
                "level": LEVELS[f.severity],
                "message": {"text": _text(f.message, f.rule_id)},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": {"uri": uri, "uriBaseId": "%SRCROOT%"},
                        "region": region,
                    },
                }],
                "partialFingerprints": {FINGERPRINT_KEY: fp},
                "properties": {
                    "severity": f.severity.value,
                    "dimension": f.dimension.value,
                    "confidence": f.confidence,
                    "version_id": review.version_id,
                    "sha": review.sha,
                    "repo": review.repo,
                    "request_id": review.request_id,
                    "source": f.source,
                },
            }
            if f.suggestion:
                result["properties"]["suggestion"] = f.suggestion
            self.results.append(result)

    def to_dict(self, tool_name: str, tool_version: str) -> dict[str, Any]:
        failed = [r for r in self.requests if r.status != Status.ok]
        invocation: dict[str, Any] = {"executionSuccessful": not failed}
        if failed:
            invocation["toolExecutionNotifications"] = [
                {"level": "error",
                 "message": {"text": f"{r.request_id} ({r.sha}): {r.status.value}"
                                     + (f": {r.error}" if r.error else "")}}
                for r in failed
            ]
        properties: dict[str, Any] = {
            "version_id": self.version_id,
            "tasks": sorted({r.task for r in self.requests}),
            "repos": sorted({r.repo for r in self.requests}),
            "shas": list(dict.fromkeys(r.sha for r in self.requests)),
        }
        if self.without_location:
            properties["findings_without_location"] = self.without_location
        return {
            "tool": {"driver": _driver(tool_name, tool_version, self.rules)},
            "automationDetails": {"id": f"{tool_name}/{self.version_id}/"},
            "invocations": [invocation],
            "results": self.results,
            "properties": properties,
        }


def _driver(tool_name: str, tool_version: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": tool_name,
        "informationUri": INFORMATION_URI,
        "version": tool_version,
        "semanticVersion": tool_version,
        "rules": rules,
    }


def to_sarif(results: Iterable[ReviewFindings], tool_name: str = "reviewbus",
             tool_version: str = TOOL_VERSION) -> dict[str, Any]:
    """A SARIF 2.1.0 log with one run per serving version, in order of first appearance.

    Findings without a file path cannot be code-scanning alerts; they are counted in the run's
    `properties.findings_without_location`. Requests that failed (status other than ok) mark
    the run's invocation unsuccessful. With no input, the log has one empty run.
    """
    runs: dict[str, _Run] = {}
    for review in results:
        run = runs.get(review.version_id)
        if run is None:
            run = runs[review.version_id] = _Run(review.version_id)
        run.add(review)
    out_runs = [run.to_dict(tool_name, tool_version) for run in runs.values()]
    if not out_runs:
        out_runs = [{"tool": {"driver": _driver(tool_name, tool_version, [])}, "results": []}]
    return {"$schema": SARIF_SCHEMA, "version": SARIF_VERSION, "runs": out_runs}
