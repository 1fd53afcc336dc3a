"""Service-level objectives and error budgets per version (pure arithmetic; the query is
infra/queries.py `slo`).

Three objectives per version, measured on live traffic (no replays) over a sliding window:

- availability: the share of requests the version answered at all (not a timeout, not refused
  by an open circuit, not a backend that could not start);
- error rate: the share of requests that did not end `ok` (errors, timeouts, invalid output);
- latency: the share of ok requests answered within `latency_ms`.

An objective allows a budget of bad requests: (1 - target) * n for availability and latency,
max_error_rate * n for errors. `budget_left` is the unspent fraction of it (1: untouched,
0 or less: exhausted). With fewer than `min_samples` requests nothing is judged. An exhausted
budget of a candidate (shadow or canary) is a quarantine trigger (`error_budget`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

OBJECTIVES = ("availability", "error_rate", "latency")
# An error text that means the version never really answered (see agents/inference.py and
# streams/flows/inference.py).
UNAVAILABLE_ERRORS = ("circuit open%", "backend unavailable%")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SloObjectives(_Strict):
    availability: float = Field(default=0.99, ge=0.0, le=1.0)
    latency_ms: float = Field(default=30_000.0, gt=0)
    latency_target: float = Field(default=0.95, ge=0.0, le=1.0)
    max_error_rate: float = Field(default=0.05, ge=0.0, le=1.0)


class SloOverride(_Strict):
    availability: float | None = Field(default=None, ge=0.0, le=1.0)
    latency_ms: float | None = Field(default=None, gt=0)
    latency_target: float | None = Field(default=None, ge=0.0, le=1.0)
    max_error_rate: float | None = Field(default=None, ge=0.0, le=1.0)


class SloConfig(SloObjectives):
    """`slo:` in the versions file: objectives for every version, per-version overrides."""

    window_s: float = Field(default=3600.0, gt=0)
    min_samples: int = Field(default=20, ge=1)
    check_interval_s: float = Field(default=30.0, gt=0)  # the leader's budget check
    per_version: dict[str, SloOverride] = Field(default_factory=dict)

    def objectives(self, version_id: str) -> SloObjectives:
        base = SloObjectives(availability=self.availability, latency_ms=self.latency_ms,
                             latency_target=self.latency_target,
                             max_error_rate=self.max_error_rate)
        override = self.per_version.get(version_id)
        if override is None:
            return base
        changes = {k: v for k, v in override.model_dump().items() if v is not None}
        return base.model_copy(update=changes)


def budget_left(bad: int, n: int, allowed_fraction: float) -> float:
    """Unspent share of the error budget: 1 - bad / (allowed_fraction * n)."""
    allowed = allowed_fraction * n
    if allowed <= 0:
        return 1.0 if bad == 0 else -math.inf
    return 1.0 - bad / allowed


def evaluate(version_id: str, row: Mapping[str, Any], objectives: SloObjectives,
             min_samples: int) -> dict[str, Any]:
    """The SLO report of one version from its infra.queries.slo row (an empty row: no traffic)."""
    n = int(row.get("n") or 0)
    ok = int(row.get("ok") or 0)
    unavailable = int(row.get("unavailable") or 0)
    errors = int(row.get("errors") or 0)
    slow = int(row.get("slow") or 0)
    measured = {
        "availability": (1 - unavailable / n) if n else None,
        "error_rate": errors / n if n else None,
        "latency": (1 - slow / ok) if ok else None,
    }
    budgets = {
        "availability": budget_left(unavailable, n, 1 - objectives.availability) if n else None,
        "error_rate": budget_left(errors, n, objectives.max_error_rate) if n else None,
        "latency": budget_left(slow, ok, 1 - objectives.latency_target) if ok else None,
    }
    judged = n >= min_samples
    exhausted = [k for k in OBJECTIVES
                 if judged and (left := budgets[k]) is not None and left <= 0]
    status = "insufficient_data" if not judged else ("exhausted" if exhausted else "ok")

    def num(x: float | None) -> float | None:
        if x is None:
            return None
        return round(x, 4) if math.isfinite(x) else -1.0e9  # JSON has no -inf

    return {
        "version_id": version_id, "n": n, "status": status,
        "availability": num(measured["availability"]),
        "availability_objective": objectives.availability,
        "availability_budget_left": num(budgets["availability"]),
        "error_rate": num(measured["error_rate"]),
        "error_rate_objective": objectives.max_error_rate,
        "error_budget_left": num(budgets["error_rate"]),
        "latency_ok_share": num(measured["latency"]),
        "latency_objective_ms": objectives.latency_ms,
        "latency_target": objectives.latency_target,
        "latency_budget_left": num(budgets["latency"]),
        "p50_ms": row.get("p50_ms") if ok else None,
        "p95_ms": row.get("p95_ms") if ok else None,
        "exhausted": exhausted, "min_samples": min_samples,
    }


def reports(rows: Sequence[Mapping[str, Any]], versions: Sequence[str], config: SloConfig
            ) -> list[dict[str, Any]]:
    """One report per version named (versions without traffic included), by version id."""
    by_id = {str(r.get("version_id")): r for r in rows}
    return [evaluate(v, by_id.get(v, {}), config.objectives(v), config.min_samples)
            for v in sorted(set(versions) | set(by_id))]


SERVING_STATES = ("registered", "shadow", "canary", "stable")


def since_of(registry: Any) -> dict[str, float]:
    """Epoch seconds at which each serving version entered its current state: its SLO period
    starts there (a version back from quarantine, or promoted, starts with a full budget).
    Versions out of service (quarantined, deprecated, archived) keep the whole window, which
    shows why they left."""
    out = {}
    for vid, entry in registry.versions.items():
        when = getattr(entry, "since", None)
        if when is not None and getattr(entry.state, "value", entry.state) in SERVING_STATES:
            out[vid] = when.timestamp()
    return out


SLO_COLUMNS = ("version_id", "state", "n", "status", "availability", "availability_budget_left",
               "error_rate", "error_budget_left", "p95_ms", "latency_ok_share",
               "latency_budget_left")
