"""Promotion gates: compare a candidate with the stable version using confidence intervals.

Pure: the rotation agent queries ClickHouse into VersionMetrics and calls evaluate_gates. Each
gate is pass, fail or inconclusive; too little data is inconclusive and never pass. The
overall outcome is fail if any gate fails, pass if every gate passes, else inconclusive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .stats import quantile, quantile_interval, wilson_interval

Outcome = Literal["pass", "fail", "inconclusive"]
PASS: Outcome = "pass"
FAIL: Outcome = "fail"
INCONCLUSIVE: Outcome = "inconclusive"

LATENCY_QUANTILE = 0.95


class GateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_samples: int = Field(default=30, ge=1)
    max_error_rate: float = Field(default=0.05, ge=0.0, le=1.0)
    # candidate p95 / stable p95; None switches the latency gate off (it needs >= 72 samples
    # before a 95% upper bound on p95 exists at all).
    max_latency_ratio: float | None = Field(default=1.5, gt=0.0)
    min_agreement: float = Field(default=0.6, ge=0.0, le=1.0)
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0)
    # Non-inferiority margin on change-type accuracy (candidate - stable), e.g. -0.05.
    min_accuracy_delta: float | None = Field(default=None, ge=-1.0, le=1.0)


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


@dataclass
class GateResult:
    name: str
    outcome: Outcome
    estimate: float | None
    interval: tuple[float | None, float | None]
    threshold: float | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "outcome": self.outcome,
            "estimate": _num(self.estimate),
            "interval": [_num(self.interval[0]), _num(self.interval[1])],
            "threshold": _num(self.threshold),
            "detail": self.detail,
        }


@dataclass
class GateDecision:
    outcome: Outcome
    gates: list[GateResult]
    samples: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def gate(self, name: str) -> GateResult | None:
        return next((g for g in self.gates if g.name == name), None)

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


def _sizes(m: VersionMetrics) -> dict[str, Any]:
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


def _fmt(x: float | None) -> str:
    return "none" if x is None else f"{x:.4g}"


def _sample_size_gate(c: VersionMetrics, cfg: GateConfig) -> GateResult:
    ok = c.n >= cfg.min_samples
    return GateResult(
        "sample_size", PASS if ok else INCONCLUSIVE, float(c.n), (float(c.n), float(c.n)),
        float(cfg.min_samples),
        f"{c.n} attempts, need {cfg.min_samples}" + ("" if ok else ": too little data"),
    )


def _error_rate_gate(c: VersionMetrics, cfg: GateConfig) -> GateResult:
    thr = cfg.max_error_rate
    if c.n <= 0:
        return GateResult("error_rate", INCONCLUSIVE, None, (None, None), thr, "no attempts")
    errors = min(max(c.errors, 0), c.n)
    lo, hi = wilson_interval(errors, c.n, cfg.confidence)
    est = errors / c.n
    ci = f"{errors}/{c.n} errors, Wilson {cfg.confidence:.0%} CI [{lo:.4f}, {hi:.4f}]"
    if c.n < cfg.min_samples:
        outcome, why = INCONCLUSIVE, f"only {c.n} attempts, need {cfg.min_samples}"
    elif hi <= thr:
        outcome, why = PASS, f"upper bound <= {thr}"
    elif lo > thr:
        outcome, why = FAIL, f"lower bound > {thr}"
    else:
        outcome, why = INCONCLUSIVE, f"interval straddles {thr}"
    return GateResult("error_rate", outcome, est, (lo, hi), thr, f"{ci}: {why}")


def _latency_gate(c: VersionMetrics, s: VersionMetrics, cfg: GateConfig) -> GateResult:
    q = LATENCY_QUANTILE
    stable_p = quantile(s.latencies_ms, q)
    est = quantile(c.latencies_ms, q)
    lo, hi = quantile_interval(c.latencies_ms, q, cfg.confidence)
    thr = None if stable_p is None else cfg.max_latency_ratio * stable_p
    nc, ns = len(c.latencies_ms), len(s.latencies_ms)
    ci = (
        f"candidate p95 {_fmt(est)} ms, order-statistic {cfg.confidence:.0%} CI "
        f"[{_fmt(lo)}, {_fmt(hi)}] (n={nc}); stable {s.version_id} p95 {_fmt(stable_p)} ms "
        f"(n={ns}); limit {cfg.max_latency_ratio} x stable = {_fmt(thr)} ms"
    )
    if nc < cfg.min_samples or ns < cfg.min_samples or thr is None:
        outcome, why = INCONCLUSIVE, f"need {cfg.min_samples} latencies on each side"
    elif hi is not None and hi <= thr:
        outcome, why = PASS, "upper bound within limit"
    elif lo is not None and lo > thr:
        outcome, why = FAIL, "lower bound above limit"
    elif hi is None:
        outcome, why = INCONCLUSIVE, "too few latencies to bound p95 from above"
    else:
        outcome, why = INCONCLUSIVE, "interval straddles the limit"
    return GateResult("latency_p95", outcome, est, (lo, hi), thr, f"{ci}: {why}")


def _agreement_gate(c: VersionMetrics, cfg: GateConfig) -> GateResult:
    thr = cfg.min_agreement
    if c.compared <= 0:
        return GateResult(
            "agreement", INCONCLUSIVE, None, (None, None), thr,
            "no shadow comparisons with a change type on both sides",
        )
    agree = min(max(c.agree, 0), c.compared)
    lo, hi = wilson_interval(agree, c.compared, cfg.confidence)
    est = agree / c.compared
    ci = f"{agree}/{c.compared} agree with stable, Wilson {cfg.confidence:.0%} CI [{lo:.4f}, {hi:.4f}]"
    if c.compared < cfg.min_samples:
        outcome, why = INCONCLUSIVE, f"only {c.compared} comparisons, need {cfg.min_samples}"
    elif lo >= thr:
        outcome, why = PASS, f"lower bound >= {thr}"
    elif hi < thr:
        outcome, why = FAIL, f"upper bound < {thr}"
    else:
        outcome, why = INCONCLUSIVE, f"interval straddles {thr}"
    return GateResult("agreement", outcome, est, (lo, hi), thr, f"{ci}: {why}")


def newcombe_difference(
    x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95
) -> tuple[float, float, float]:
    """p1 - p2 and Newcombe's hybrid score interval (method 10) from two Wilson intervals."""
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson_interval(x1, n1, confidence)
    l2, u2 = wilson_interval(x2, n2, confidence)
    d = p1 - p2
    lo = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return d, max(-1.0, lo), min(1.0, hi)


def _accuracy_gate(c: VersionMetrics, s: VersionMetrics | None, cfg: GateConfig) -> GateResult:
    margin = cfg.min_accuracy_delta if cfg.min_accuracy_delta is not None else -1.0
    if s is None:
        return GateResult(
            "accuracy_delta", INCONCLUSIVE, None, (None, None), margin,
            "labels exist but there is no stable version to compare with",
        )
    if c.labelled < cfg.min_samples or s.labelled < cfg.min_samples:
        return GateResult(
            "accuracy_delta", INCONCLUSIVE, None, (None, None), margin,
            f"labelled attempts: candidate {c.labelled}, stable {s.labelled}; "
            f"need {cfg.min_samples} each",
        )
    xc, xs = min(max(c.correct, 0), c.labelled), min(max(s.correct, 0), s.labelled)
    d, lo, hi = newcombe_difference(xc, c.labelled, xs, s.labelled, cfg.confidence)
    ci = (
        f"accuracy candidate {xc}/{c.labelled}, stable {s.version_id} {xs}/{s.labelled}; "
        f"difference {d:+.4f}, Newcombe {cfg.confidence:.0%} CI [{lo:+.4f}, {hi:+.4f}], "
        f"margin {margin:+.4f}"
    )
    if lo >= margin:
        outcome, why = PASS, "lower bound >= margin (non-inferior)"
    elif hi < margin:
        outcome, why = FAIL, "upper bound < margin (inferior)"
    else:
        outcome, why = INCONCLUSIVE, "interval straddles the margin"
    return GateResult("accuracy_delta", outcome, d, (lo, hi), margin, f"{ci}: {why}")


def combine(gates: list[GateResult]) -> Outcome:
    if any(g.outcome == FAIL for g in gates):
        return FAIL
    if gates and all(g.outcome == PASS for g in gates):
        return PASS
    return INCONCLUSIVE


def evaluate_gates(
    candidate: VersionMetrics, stable: VersionMetrics | None, cfg: GateConfig
) -> GateDecision:
    """Apply every configured gate to the candidate (against stable where one is given).

    Gates: sample_size, error_rate, latency_p95 (only with a stable version), agreement, and
    accuracy_delta (only when cfg.min_accuracy_delta is set and labels exist on either side).
    """
    gates = [_sample_size_gate(candidate, cfg), _error_rate_gate(candidate, cfg)]
    if stable is not None and cfg.max_latency_ratio is not None:
        gates.append(_latency_gate(candidate, stable, cfg))
    gates.append(_agreement_gate(candidate, cfg))
    labels_exist = candidate.labelled > 0 or (stable is not None and stable.labelled > 0)
    if cfg.min_accuracy_delta is not None and labels_exist:
        gates.append(_accuracy_gate(candidate, stable, cfg))
    samples: dict[str, Any] = {"candidate": _sizes(candidate)}
    if stable is not None:
        samples["stable"] = _sizes(stable)
    return GateDecision(combine(gates), gates, samples, cfg.model_dump(mode="json"))
