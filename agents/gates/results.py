"""What the gates read and what they answer: the thresholds (GateConfig), one version's
measurements (VersionMetrics), each gate's result and the decision as evidence."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Outcome = Literal["pass", "fail", "inconclusive"]
PASS: Outcome = "pass"
FAIL: Outcome = "fail"
INCONCLUSIVE: Outcome = "inconclusive"


class GateConfig(BaseModel):
    """One transition's gates. A threshold set to null switches its gate off."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_samples: int = Field(default=30, ge=1)  # per side and per metric
    min_dwell_s: float = Field(default=0.0, ge=0.0)  # time in the current state or step
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0)
    rate_interval: Literal["wilson", "exact"] = "wilson"  # exact = Clopper-Pearson
    # error rate: absolute, and candidate - stable (Newcombe)
    max_error_rate: float | None = Field(default=0.05, ge=0.0, le=1.0)
    max_error_rate_delta: float | None = Field(default=None, ge=-1.0, le=1.0)
    # latency relative to stable (ratio of quantiles; a p95 upper bound needs >= 86 samples
    # per side at 95%, a p99 one >= 436) and absolute (>= 72 and >= 367 samples)
    max_latency_ratio: float | None = Field(default=1.5, gt=0.0)  # p95
    max_p99_ratio: float | None = Field(default=None, gt=0.0)
    max_p95_ms: float | None = Field(default=None, gt=0.0)
    max_p99_ms: float | None = Field(default=None, gt=0.0)
    # change-type accuracy on labelled traffic: absolute, non-inferiority margin on
    # candidate - stable (0.0: at least as accurate as stable; -0.02: within 2 points), ratio
    min_accuracy: float | None = Field(default=None, ge=0.0, le=1.0)
    min_accuracy_delta: float | None = Field(default=None, ge=-1.0, le=1.0)
    min_accuracy_ratio: float | None = Field(default=None, gt=0.0)
    # change-type agreement with stable (shadow comparisons)
    min_agreement: float | None = Field(default=0.6, ge=0.0, le=1.0)
    # cost per request (usage.cost_usd): absolute mean and ratio of means
    max_cost_per_request: float | None = Field(default=None, ge=0.0)
    max_cost_ratio: float | None = Field(default=None, gt=0.0)


@dataclass
class VersionMetrics:
    version_id: str
    n: int  # attempts in the window
    errors: int  # attempts with a status other than ok
    latencies_ms: list[float]
    agree: int = 0  # shadow comparisons whose change type agreed with stable
    compared: int = 0  # shadow comparisons with a change type on both sides
    correct: int = 0  # labelled attempts whose change type matched the label
    labelled: int = 0  # attempts with a ground-truth label
    cost_sum: float = 0.0  # sum of cost_usd over the attempts
    cost_sumsq: float = 0.0  # sum of cost_usd^2


@dataclass
class GateResult:
    name: str
    outcome: Outcome
    estimate: float | None
    interval: tuple[float | None, float | None]
    threshold: float | None
    detail: str
    candidate: dict[str, Any] | None = None  # {estimate, interval, n} of the candidate
    stable: dict[str, Any] | None = None  # the same for stable, where the gate compares

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "outcome": self.outcome,
            "estimate": _num(self.estimate),
            "interval": [_num(self.interval[0]), _num(self.interval[1])],
            "threshold": _num(self.threshold),
            "detail": self.detail,
            "candidate": self.candidate,
            "stable": self.stable,
        }


@dataclass
class GateDecision:
    outcome: Outcome
    gates: list[GateResult]
    samples: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def gate(self, name: str) -> GateResult | None:
        return next((g for g in self.gates if g.name == name), None)

    def signature(self) -> str:
        """The outcome and each gate's outcome, e.g. `inconclusive:error_rate=pass,...`."""
        return self.outcome + ":" + ",".join(f"{g.name}={g.outcome}" for g in self.gates)

    def to_evidence(self) -> dict[str, Any]:
        """JSON-serializable: the outcome, every gate with its numbers, the sample sizes and
        the thresholds, so the decision can be audited and re-run."""
        return {
            "outcome": self.outcome,
            "gates": [g.to_dict() for g in self.gates],
            "samples": dict(self.samples),
            "config": dict(self.config),
        }


def _num(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def side_dict(estimate: float | None, lo: float | None, hi: float | None, n: int) -> dict[str, Any]:
    return {"estimate": _num(estimate), "interval": [_num(lo), _num(hi)], "n": n}


def sizes(m: VersionMetrics) -> dict[str, Any]:
    return {
        "version_id": m.version_id,
        "n": m.n,
        "errors": m.errors,
        "latencies": len(m.latencies_ms),
        "agree": m.agree,
        "compared": m.compared,
        "correct": m.correct,
        "labelled": m.labelled,
    }
