"""Text renderings of findings for people (JSON and SARIF are for machines)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from schemas import ReviewFindings


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
