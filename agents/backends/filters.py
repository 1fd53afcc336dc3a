"""The post-processing filters of a version spec (`filters:`), shared by every backend that
reports findings: validated once when the backend is built, applied in the order written."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any

from schemas import SEVERITY_ORDER, Finding, Severity

from ..errors import ConfigError


def validate_filters(version_id: str, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The spec's filters, or ConfigError naming the version and the bad filter."""
    checks: dict[str, Callable[[Any], bool]] = {
        "suppress_rule": lambda v: isinstance(v, str) or (
            isinstance(v, list) and all(isinstance(x, str) for x in v)),
        "suppress_path": lambda v: isinstance(v, str),
        "min_severity": lambda v: v in Severity.__members__,
        "min_confidence": lambda v: isinstance(v, int | float) and 0 <= v <= 1,
        "max_findings": lambda v: isinstance(v, int) and v >= 0,
    }
    for f in filters:
        if len(f) != 1 or next(iter(f)) not in checks or not checks[next(iter(f))](*f.values()):
            raise ConfigError(f"version {version_id}: bad filter {f!r}; each filter is one of "
                              f"{sorted(checks)} with a valid value")
    return filters


def apply_filters(findings: list[Finding], filters: list[dict[str, Any]]) -> list[Finding]:
    """Post-processing from the version spec, applied in the order written."""
    out = list(findings)
    for f in filters:
        (key, value), = f.items()
        if key == "suppress_rule":
            rules = {value} if isinstance(value, str) else set(value)
            out = [x for x in out if x.rule_id not in rules]
        elif key == "suppress_path":
            out = [x for x in out if not fnmatch.fnmatchcase(x.path, value)]
        elif key == "min_severity":
            limit = SEVERITY_ORDER[Severity(value)]
            out = [x for x in out if SEVERITY_ORDER[x.severity] <= limit]
        elif key == "min_confidence":
            out = [x for x in out if x.confidence >= value]
        elif key == "max_findings":
            # Keep the most severe, most confident; then restore the reading order.
            ranked = sorted(out, key=lambda x: (SEVERITY_ORDER[x.severity], -x.confidence,
                                                x.path, x.line, x.rule_id))
            keep = {id(x) for x in ranked[:value]}
            out = [x for x in out if id(x) in keep]
    return out
