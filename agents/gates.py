"""Promotion gates: compare a candidate with the stable version using confidence intervals.

Pure: the rotation agent queries ClickHouse into VersionMetrics and calls evaluate_gates. Each
gate is pass, fail or inconclusive; too little data is inconclusive and never pass. The
overall outcome is fail if any gate fails, pass if every gate passes, else inconclusive.

How a gate judges (c = the gate set's `confidence`, every interval two-sided at c):

- "at most T" (error rate, absolute latency, cost): pass when the upper bound <= T, fail when
  the lower bound > T, else inconclusive.
- "at least T" (accuracy, agreement): pass when the lower bound >= T, fail when the upper
  bound < T.
- against stable by a ratio R (latency p95/p99, accuracy, cost): the candidate's and the
  stable version's intervals are each taken at 1 - (1-c)/2 (Bonferroni), and "candidate <= R x
  stable" passes when cand_upper <= R x stable_lower, fails when cand_lower > R x stable_upper.
  The ratio's reported interval [cand_lower/stable_upper, cand_upper/stable_lower] therefore
  errs on each side with probability at most (1-c)/2.
- against stable by a difference D (error rate, accuracy non-inferiority): Newcombe's
  interval of candidate - stable, judged like "at most D" / "at least D".

Gates relative to stable are left out when the task has no stable version; accuracy gates
relative to stable are left out when no attempt of either version has a label. The absolute
accuracy gate (a must-pass) is inconclusive without labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .stats import (
    each_side,
    mean_interval,
    newcombe_difference,
    quantile,
    quantile_interval,
    rate_interval,
)

Outcome = Literal["pass", "fail", "inconclusive"]
PASS: Outcome = "pass"
FAIL: Outcome = "fail"
INCONCLUSIVE: Outcome = "inconclusive"

LATENCY_QUANTILE = 0.95

__all__ = [
    "FAIL", "INCONCLUSIVE", "PASS", "GateConfig", "GateDecision", "GateResult", "Outcome",
    "VersionMetrics", "combine", "evaluate_gates", "newcombe_difference",
]


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


def _side(estimate: float | None, lo: float | None, hi: float | None, n: int) -> dict[str, Any]:
    return {"estimate": _num(estimate), "interval": [_num(lo), _num(hi)], "n": n}


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


def _ci(lo: float | None, hi: float | None) -> str:
    return f"[{_fmt(lo)}, {_fmt(hi)}]"


def _at_most(lo: float | None, hi: float | None, thr: float) -> tuple[Outcome, str]:
    if hi is not None and hi <= thr:
        return PASS, f"upper bound <= {thr:g}"
    if lo is not None and lo > thr:
        return FAIL, f"lower bound > {thr:g}"
    if hi is None:
        return INCONCLUSIVE, "too few samples to bound it from above"
    return INCONCLUSIVE, f"interval straddles {thr:g}"


def _at_least(lo: float | None, hi: float | None, thr: float) -> tuple[Outcome, str]:
    if lo is not None and lo >= thr:
        return PASS, f"lower bound >= {thr:g}"
    if hi is not None and hi < thr:
        return FAIL, f"upper bound < {thr:g}"
    if lo is None:
        return INCONCLUSIVE, "too few samples to bound it from below"
    return INCONCLUSIVE, f"interval straddles {thr:g}"


def _div(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    if b == 0:
        return None if a != 0 else 1.0
    return a / b


def _ratio(c: tuple[float | None, float | None, float | None],
           s: tuple[float | None, float | None, float | None], limit: float, at_most: bool
           ) -> tuple[Outcome, str, float | None, tuple[float | None, float | None]]:
    """Judge candidate <= limit x stable (at_most) or candidate >= limit x stable, each given
    as (estimate, lower, upper) at the Bonferroni-adjusted level."""
    (ce, cl, ch), (se, sl, sh) = c, s
    est = _div(ce, se)
    interval = (_div(cl, sh), _div(ch, sl))
    if at_most:
        if ch is not None and sl is not None and ch <= limit * sl:
            return PASS, f"candidate upper <= {limit:g} x stable lower", est, interval
        if cl is not None and sh is not None and cl > limit * sh:
            return FAIL, f"candidate lower > {limit:g} x stable upper", est, interval
    else:
        if cl is not None and sh is not None and cl >= limit * sh:
            return PASS, f"candidate lower >= {limit:g} x stable upper", est, interval
        if ch is not None and sl is not None and ch < limit * sl:
            return FAIL, f"candidate upper < {limit:g} x stable lower", est, interval
    return INCONCLUSIVE, "intervals overlap the limit", est, interval


# -- the gates ------------------------------------------------------------------------------

def _dwell_gate(dwell_s: float | None, cfg: GateConfig) -> GateResult:
    thr = cfg.min_dwell_s
    if dwell_s is None:
        return GateResult("dwell", INCONCLUSIVE, None, (None, None), thr,
                          "time in the current state unknown")
    ok = dwell_s >= thr
    return GateResult(
        "dwell", PASS if ok else INCONCLUSIVE, dwell_s, (dwell_s, dwell_s), thr,
        f"{dwell_s:.0f} s in the current state, need {thr:g} s" + ("" if ok else ": too early"))


def _sample_size_gate(c: VersionMetrics, cfg: GateConfig) -> GateResult:
    ok = c.n >= cfg.min_samples
    return GateResult(
        "sample_size", PASS if ok else INCONCLUSIVE, float(c.n), (float(c.n), float(c.n)),
        float(cfg.min_samples),
        f"{c.n} attempts, need {cfg.min_samples}" + ("" if ok else ": too little data"),
        candidate=_side(float(c.n), c.n, c.n, c.n),
    )


def _error_rate_gate(c: VersionMetrics, cfg: GateConfig) -> GateResult:
    thr = cfg.max_error_rate
    assert thr is not None
    if c.n <= 0:
        return GateResult("error_rate", INCONCLUSIVE, None, (None, None), thr, "no attempts")
    errors = min(max(c.errors, 0), c.n)
    lo, hi = rate_interval(errors, c.n, cfg.confidence, cfg.rate_interval)
    est = errors / c.n
    ci = f"{errors}/{c.n} errors, {cfg.rate_interval} {cfg.confidence:.0%} CI [{lo:.4f}, {hi:.4f}]"
    if c.n < cfg.min_samples:
        outcome, why = INCONCLUSIVE, f"only {c.n} attempts, need {cfg.min_samples}"
    else:
        outcome, why = _at_most(lo, hi, thr)
    return GateResult("error_rate", outcome, est, (lo, hi), thr, f"{ci}: {why}",
                      candidate=_side(est, lo, hi, c.n))


def _error_rate_delta_gate(c: VersionMetrics, s: VersionMetrics, cfg: GateConfig) -> GateResult:
    thr = cfg.max_error_rate_delta
    assert thr is not None
    if c.n < cfg.min_samples or s.n < cfg.min_samples:
        return GateResult("error_rate_delta", INCONCLUSIVE, None, (None, None), thr,
                          f"attempts: candidate {c.n}, stable {s.n}; need {cfg.min_samples} each")
    xc, xs = min(max(c.errors, 0), c.n), min(max(s.errors, 0), s.n)
    d, lo, hi = newcombe_difference(xc, c.n, xs, s.n, cfg.confidence)
    outcome, why = _at_most(lo, hi, thr)
    cl, ch = rate_interval(xc, c.n, cfg.confidence, cfg.rate_interval)
    sl, sh = rate_interval(xs, s.n, cfg.confidence, cfg.rate_interval)
    return GateResult(
        "error_rate_delta", outcome, d, (lo, hi), thr,
        f"error rate candidate {xc}/{c.n}, stable {s.version_id} {xs}/{s.n}; difference "
        f"{d:+.4f}, Newcombe {cfg.confidence:.0%} CI [{lo:+.4f}, {hi:+.4f}]: {why}",
        candidate=_side(xc / c.n, cl, ch, c.n), stable=_side(xs / s.n, sl, sh, s.n))


def _quantile_side(values: list[float], q: float, confidence: float
                   ) -> tuple[float | None, float | None, float | None]:
    lo, hi = quantile_interval(values, q, confidence)
    return quantile(values, q), lo, hi


def _latency_ratio_gate(name: str, q: float, limit: float, c: VersionMetrics,
                        s: VersionMetrics, cfg: GateConfig) -> GateResult:
    level = each_side(cfg.confidence)
    cs = _quantile_side(c.latencies_ms, q, level)
    ss = _quantile_side(s.latencies_ms, q, level)
    nc, ns = len(c.latencies_ms), len(s.latencies_ms)
    label = f"p{round(q * 100)}"
    cand, stab = _side(cs[0], cs[1], cs[2], nc), _side(ss[0], ss[1], ss[2], ns)
    text = (f"candidate {label} {_fmt(cs[0])} ms {_ci(cs[1], cs[2])} (n={nc}), stable "
            f"{s.version_id} {label} {_fmt(ss[0])} ms {_ci(ss[1], ss[2])} (n={ns}), each at "
            f"{level:.1%}; limit {limit:g} x stable")
    if nc < cfg.min_samples or ns < cfg.min_samples:
        return GateResult(name, INCONCLUSIVE, _div(cs[0], ss[0]), (None, None), limit,
                          f"{text}: need {cfg.min_samples} latencies on each side",
                          candidate=cand, stable=stab)
    outcome, why, est, interval = _ratio(cs, ss, limit, at_most=True)
    if outcome == INCONCLUSIVE and (cs[2] is None or ss[1] is None):
        why = f"too few latencies to bound {label} (candidate from above, stable from below)"
    return GateResult(name, outcome, est, interval, limit, f"{text}: {why}",
                      candidate=cand, stable=stab)


def _latency_abs_gate(name: str, q: float, limit: float, c: VersionMetrics,
                      cfg: GateConfig) -> GateResult:
    est, lo, hi = _quantile_side(c.latencies_ms, q, cfg.confidence)
    n = len(c.latencies_ms)
    label = f"p{round(q * 100)}"
    text = (f"candidate {label} {_fmt(est)} ms, order-statistic {cfg.confidence:.0%} CI "
            f"{_ci(lo, hi)} (n={n}), limit {limit:g} ms")
    if n < cfg.min_samples:
        outcome, why = INCONCLUSIVE, f"only {n} latencies, need {cfg.min_samples}"
    else:
        outcome, why = _at_most(lo, hi, limit)
    return GateResult(name, outcome, est, (lo, hi), limit, f"{text}: {why}",
                      candidate=_side(est, lo, hi, n))


def _accuracy_gate(c: VersionMetrics, cfg: GateConfig) -> GateResult:
    thr = cfg.min_accuracy
    assert thr is not None
    if c.labelled <= 0:
        return GateResult("accuracy", INCONCLUSIVE, None, (None, None), thr,
                          "no labelled attempts: accuracy cannot be shown")
    x = min(max(c.correct, 0), c.labelled)
    lo, hi = rate_interval(x, c.labelled, cfg.confidence, cfg.rate_interval)
    est = x / c.labelled
    text = (f"{x}/{c.labelled} labelled attempts right, {cfg.rate_interval} "
            f"{cfg.confidence:.0%} CI [{lo:.4f}, {hi:.4f}]")
    if c.labelled < cfg.min_samples:
        outcome, why = INCONCLUSIVE, f"only {c.labelled} labelled, need {cfg.min_samples}"
    else:
        outcome, why = _at_least(lo, hi, thr)
    return GateResult("accuracy", outcome, est, (lo, hi), thr, f"{text}: {why}",
                      candidate=_side(est, lo, hi, c.labelled))


def _accuracy_delta_gate(c: VersionMetrics, s: VersionMetrics | None,
                         cfg: GateConfig) -> GateResult:
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
    cl, ch = rate_interval(xc, c.labelled, cfg.confidence, cfg.rate_interval)
    sl, sh = rate_interval(xs, s.labelled, cfg.confidence, cfg.rate_interval)
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
    return GateResult("accuracy_delta", outcome, d, (lo, hi), margin, f"{ci}: {why}",
                      candidate=_side(xc / c.labelled, cl, ch, c.labelled),
                      stable=_side(xs / s.labelled, sl, sh, s.labelled))


def _accuracy_ratio_gate(c: VersionMetrics, s: VersionMetrics, cfg: GateConfig) -> GateResult:
    limit = cfg.min_accuracy_ratio
    assert limit is not None
    if c.labelled < cfg.min_samples or s.labelled < cfg.min_samples:
        return GateResult(
            "accuracy_ratio", INCONCLUSIVE, None, (None, None), limit,
            f"labelled attempts: candidate {c.labelled}, stable {s.labelled}; "
            f"need {cfg.min_samples} each")
    level = each_side(cfg.confidence)
    xc, xs = min(max(c.correct, 0), c.labelled), min(max(s.correct, 0), s.labelled)
    cl, ch = rate_interval(xc, c.labelled, level, cfg.rate_interval)
    sl, sh = rate_interval(xs, s.labelled, level, cfg.rate_interval)
    ce, se = xc / c.labelled, xs / s.labelled
    outcome, why, est, interval = _ratio((ce, cl, ch), (se, sl, sh), limit, at_most=False)
    return GateResult(
        "accuracy_ratio", outcome, est, interval, limit,
        f"accuracy candidate {xc}/{c.labelled} {_ci(cl, ch)}, stable {s.version_id} "
        f"{xs}/{s.labelled} {_ci(sl, sh)}, each at {level:.1%}; need >= {limit:g} x stable: "
        f"{why}",
        candidate=_side(ce, cl, ch, c.labelled), stable=_side(se, sl, sh, s.labelled))


def _agreement_gate(c: VersionMetrics, cfg: GateConfig) -> GateResult:
    thr = cfg.min_agreement
    assert thr is not None
    if c.compared <= 0:
        return GateResult(
            "agreement", INCONCLUSIVE, None, (None, None), thr,
            "no shadow comparisons with a change type on both sides",
        )
    agree = min(max(c.agree, 0), c.compared)
    lo, hi = rate_interval(agree, c.compared, cfg.confidence, cfg.rate_interval)
    est = agree / c.compared
    ci = (f"{agree}/{c.compared} agree with stable, {cfg.rate_interval} {cfg.confidence:.0%} "
          f"CI [{lo:.4f}, {hi:.4f}]")
    if c.compared < cfg.min_samples:
        outcome, why = INCONCLUSIVE, f"only {c.compared} comparisons, need {cfg.min_samples}"
    else:
        outcome, why = _at_least(lo, hi, thr)
    return GateResult("agreement", outcome, est, (lo, hi), thr, f"{ci}: {why}",
                      candidate=_side(est, lo, hi, c.compared))


def _cost_side(m: VersionMetrics, confidence: float):
    return mean_interval(m.cost_sum, m.cost_sumsq, m.n, confidence)


def _cost_gate(c: VersionMetrics, cfg: GateConfig) -> GateResult:
    thr = cfg.max_cost_per_request
    assert thr is not None
    est, lo, hi = _cost_side(c, cfg.confidence)
    text = f"mean cost {_fmt(est)} USD per request {_ci(lo, hi)} (n={c.n}), limit {thr:g}"
    if c.n < cfg.min_samples:
        outcome, why = INCONCLUSIVE, f"only {c.n} attempts, need {cfg.min_samples}"
    else:
        outcome, why = _at_most(lo, hi, thr)
    return GateResult("cost", outcome, est, (lo, hi), thr, f"{text}: {why}",
                      candidate=_side(est, lo, hi, c.n))


def _cost_ratio_gate(c: VersionMetrics, s: VersionMetrics, cfg: GateConfig) -> GateResult:
    limit = cfg.max_cost_ratio
    assert limit is not None
    level = each_side(cfg.confidence)
    cs, ss = _cost_side(c, level), _cost_side(s, level)
    cand, stab = _side(cs[0], cs[1], cs[2], c.n), _side(ss[0], ss[1], ss[2], s.n)
    text = (f"mean cost candidate {_fmt(cs[0])} {_ci(cs[1], cs[2])}, stable {s.version_id} "
            f"{_fmt(ss[0])} {_ci(ss[1], ss[2])}, each at {level:.1%}; limit {limit:g} x stable")
    if c.n < cfg.min_samples or s.n < cfg.min_samples:
        return GateResult("cost_ratio", INCONCLUSIVE, _div(cs[0], ss[0]), (None, None), limit,
                          f"{text}: need {cfg.min_samples} attempts each",
                          candidate=cand, stable=stab)
    outcome, why, est, interval = _ratio(cs, ss, limit, at_most=True)
    return GateResult("cost_ratio", outcome, est, interval, limit, f"{text}: {why}",
                      candidate=cand, stable=stab)


def combine(gates: list[GateResult]) -> Outcome:
    if any(g.outcome == FAIL for g in gates):
        return FAIL
    if gates and all(g.outcome == PASS for g in gates):
        return PASS
    return INCONCLUSIVE


def evaluate_gates(
    candidate: VersionMetrics, stable: VersionMetrics | None, cfg: GateConfig,
    dwell_s: float | None = None,
) -> GateDecision:
    """Apply every configured gate to the candidate (against stable where one is given).

    `dwell_s` (time in the current state) is judged when cfg.min_dwell_s > 0; unknown or too
    short is inconclusive.
    """
    c, s = candidate, stable
    gates: list[GateResult] = []
    if cfg.min_dwell_s > 0:
        gates.append(_dwell_gate(dwell_s, cfg))
    gates.append(_sample_size_gate(c, cfg))
    if cfg.max_error_rate is not None:
        gates.append(_error_rate_gate(c, cfg))
    if s is not None and cfg.max_error_rate_delta is not None:
        gates.append(_error_rate_delta_gate(c, s, cfg))
    if s is not None and cfg.max_latency_ratio is not None:
        gates.append(_latency_ratio_gate("latency_p95", 0.95, cfg.max_latency_ratio, c, s, cfg))
    if s is not None and cfg.max_p99_ratio is not None:
        gates.append(_latency_ratio_gate("latency_p99", 0.99, cfg.max_p99_ratio, c, s, cfg))
    if cfg.max_p95_ms is not None:
        gates.append(_latency_abs_gate("latency_p95_ms", 0.95, cfg.max_p95_ms, c, cfg))
    if cfg.max_p99_ms is not None:
        gates.append(_latency_abs_gate("latency_p99_ms", 0.99, cfg.max_p99_ms, c, cfg))
    if cfg.min_accuracy is not None:
        gates.append(_accuracy_gate(c, cfg))
    labels_exist = c.labelled > 0 or (s is not None and s.labelled > 0)
    if cfg.min_accuracy_delta is not None and labels_exist:
        gates.append(_accuracy_delta_gate(c, s, cfg))
    if s is not None and cfg.min_accuracy_ratio is not None and labels_exist:
        gates.append(_accuracy_ratio_gate(c, s, cfg))
    if cfg.min_agreement is not None:
        gates.append(_agreement_gate(c, cfg))
    if cfg.max_cost_per_request is not None:
        gates.append(_cost_gate(c, cfg))
    if s is not None and cfg.max_cost_ratio is not None:
        gates.append(_cost_ratio_gate(c, s, cfg))
    samples: dict[str, Any] = {"candidate": _sizes(c)}
    if s is not None:
        samples["stable"] = _sizes(s)
    return GateDecision(combine(gates), gates, samples, cfg.model_dump(mode="json"))
