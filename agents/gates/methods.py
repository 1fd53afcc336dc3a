"""The gate table's vocabulary: metrics (what is measured and how its interval is taken),
comparators (at most, at least, non-inferior) and the three methods (absolute, difference to
stable, ratio to stable), with the one function per method that judges any row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ..stats import (
    each_side,
    mean_interval,
    newcombe_difference,
    quantile,
    quantile_interval,
    rate_interval,
)
from .results import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    GateConfig,
    GateResult,
    Outcome,
    VersionMetrics,
    side_dict,
)


def _fmt(x: float | None) -> str:
    return "none" if x is None else f"{x:.4g}"


def _ci(lo: float | None, hi: float | None) -> str:
    return f"[{_fmt(lo)}, {_fmt(hi)}]"


Judgement = tuple[Outcome, str]


def _at_most(lo: float | None, hi: float | None, thr: float) -> Judgement:
    if hi is not None and hi <= thr:
        return PASS, f"upper bound <= {thr:g}"
    if lo is not None and lo > thr:
        return FAIL, f"lower bound > {thr:g}"
    if hi is None:
        return INCONCLUSIVE, "too few samples to bound it from above"
    return INCONCLUSIVE, f"interval straddles {thr:g}"


def _at_least(lo: float | None, hi: float | None, thr: float) -> Judgement:
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


# -- metrics: how one version's value and its interval are measured -------------------------

Bounds = tuple[float | None, float | None, float | None]  # estimate, lower, upper


@dataclass(frozen=True)
class Measured:
    """One version's value of one metric at one confidence level."""

    bounds: Bounds
    n: int  # the sample size
    x: int = 0  # rates: the count of the numerator

    def side(self) -> dict[str, Any]:
        return side_dict(*self.bounds, self.n)

    def fields(self, prefix: str = "") -> dict[str, Any]:
        """What a metric's text templates name: {x}, {n}, {est}, {ci} (and s-prefixed)."""
        est, lo, hi = self.bounds
        out = {"x": self.x, "n": self.n, "est": _fmt(est), "ci": _ci(lo, hi)}
        if lo is not None and hi is not None:
            out["ci4"] = f"[{lo:.4f}, {hi:.4f}]"
        return {prefix + k: v for k, v in out.items()}


@dataclass(frozen=True)
class Metric:
    """A measured quantity: `rate` (count/total, a binomial proportion with a Wilson or
    Clopper-Pearson interval), `quantile` (of the latencies, a distribution-free interval) or
    `mean` (cost per request, a normal-approximation interval). `text` and `pair_text` are the
    detail's templates for a gate on the candidate alone and on the pair."""

    kind: Literal["rate", "quantile", "mean"]
    text: str
    pair_text: str
    unit: str  # "only {n} <unit>, need ..."
    pair_unit: str  # rates: "<pair_unit>: candidate {n}, stable {n}"; else "need N <pair_unit>"
    count: str = ""  # rates: the VersionMetrics fields of numerator and denominator
    total: str = "n"
    q: float = 0.0  # quantiles
    subject: str = ""  # rates: "error rate" (the difference's detail)
    empty: str = ""  # rates: the detail when the candidate has no total at all
    optional: bool = False  # rates: relative gates are left out when neither side has a total

    def size(self, m: VersionMetrics) -> int:
        return len(m.latencies_ms) if self.kind == "quantile" else int(getattr(m, self.total))

    def measure(self, m: VersionMetrics, level: float, cfg: GateConfig) -> Measured:
        if self.kind == "quantile":
            lo, hi = quantile_interval(m.latencies_ms, self.q, level)
            return Measured((quantile(m.latencies_ms, self.q), lo, hi), len(m.latencies_ms))
        if self.kind == "mean":
            return Measured(mean_interval(m.cost_sum, m.cost_sumsq, m.n, level), m.n)
        n = self.size(m)
        x = min(max(int(getattr(m, self.count)), 0), n)
        r_lo, r_hi = rate_interval(x, n, level, cfg.rate_interval)
        return Measured((x / n, r_lo, r_hi), n, x)

    def describe(self, template: str, c: Measured, s: Measured | None, limit: float,
                 cfg: GateConfig, **extra: Any) -> str:
        return template.format(
            **c.fields(), **(s.fields("s") if s else {}), limit=f"{limit:g}",
            label=f"p{round(self.q * 100)}", method=cfg.rate_interval,
            conf=f"{cfg.confidence:.0%}", **extra)


def rate(count: str, total: str, *, noun: str, subject: str, unit: str, pair_unit: str,
         empty: str, optional: bool = False, need: str = "limit") -> Metric:
    return Metric(
        "rate", "{x}/{n} " + noun + ", {method} {conf} CI {ci4}",
        subject + " candidate {x}/{n} {ci}, stable {stable} {sx}/{sn} {sci}, each at {level}; "
        + need + " {limit} x stable", unit, pair_unit, count=count, total=total,
        subject=subject, empty=empty, optional=optional)


def latency(q: float) -> Metric:
    return Metric(
        "quantile", "candidate {label} {est} ms, order-statistic {conf} CI {ci} (n={n}), "
        "limit {limit} ms",
        "candidate {label} {est} ms {ci} (n={n}), stable {stable} {label} {sest} ms {sci} "
        "(n={sn}), each at {level}; limit {limit} x stable",
        "latencies", "latencies on each side", q=q)


ERROR_RATE = rate("errors", "n", noun="errors", subject="error rate", unit="attempts",
                  pair_unit="attempts", empty="no attempts")
ACCURACY = rate("correct", "labelled", noun="labelled attempts right", subject="accuracy",
                unit="labelled", pair_unit="labelled attempts", need="need >=", optional=True,
                empty="no labelled attempts: accuracy cannot be shown")
AGREEMENT = rate("agree", "compared", noun="agree with stable", subject="agreement",
                 unit="comparisons", pair_unit="comparisons",
                 empty="no shadow comparisons with a change type on both sides")
P95, P99 = latency(0.95), latency(0.99)
COST = Metric("mean", "mean cost {est} USD per request {ci} (n={n}), limit {limit}",
              "mean cost candidate {est} {ci}, stable {stable} {sest} {sci}, each at {level}; "
              "limit {limit} x stable", "attempts", "attempts each")


@dataclass(frozen=True)
class Comparator:
    """How a value (or its difference to stable) is held against the threshold."""

    name: str
    at_least: bool
    judge: Callable[[float | None, float | None, float], Judgement]
    margin: bool = False  # state the threshold as a non-inferiority margin


def _non_inferior(lo: float | None, hi: float | None, margin: float) -> Judgement:
    if lo is not None and lo >= margin:
        return PASS, "lower bound >= margin (non-inferior)"
    if hi is not None and hi < margin:
        return FAIL, "upper bound < margin (inferior)"
    return INCONCLUSIVE, "interval straddles the margin"


AT_MOST = Comparator("at_most", False, _at_most)
AT_LEAST = Comparator("at_least", True, _at_least)
NON_INFERIOR = Comparator("non_inferior", True, _non_inferior, margin=True)

Method = Literal["absolute", "difference", "ratio"]


@dataclass(frozen=True)
class Gate:
    """One row of the gate table: `name` judges `metric` by `comparator` against the
    GateConfig field `threshold` (null: the gate is off), absolutely, as the difference to
    stable (Newcombe, rates only) or as the ratio to stable (Bonferroni)."""

    name: str
    metric: Metric
    comparator: Comparator
    method: Method
    threshold: str
    # Relative gates: the detail when there is no stable version (None: leave the gate out).
    without_stable: str | None = None

    def evaluate(self, c: VersionMetrics, s: VersionMetrics | None, cfg: GateConfig
                 ) -> GateResult | None:
        """The gate's result, or None when it is off or does not apply."""
        limit = getattr(cfg, self.threshold)
        if limit is None:
            return None
        if self.method == "absolute":
            return _absolute(self, c, cfg, limit)
        metric = self.metric
        if metric.optional and metric.size(c) <= 0 and (s is None or metric.size(s) <= 0):
            return None
        if s is None:
            if self.without_stable is None:
                return None
            return GateResult(self.name, INCONCLUSIVE, None, (None, None), limit,
                              self.without_stable)
        if self.method == "difference":
            return _difference(self, c, s, cfg, limit)
        return _ratio_gate(self, c, s, cfg, limit)


def _absolute(g: Gate, c: VersionMetrics, cfg: GateConfig, limit: float) -> GateResult:
    metric = g.metric
    if metric.kind == "rate" and metric.size(c) <= 0:
        return GateResult(g.name, INCONCLUSIVE, None, (None, None), limit, metric.empty)
    m = metric.measure(c, cfg.confidence, cfg)
    text = metric.describe(metric.text, m, None, limit, cfg)
    if m.n < cfg.min_samples:
        outcome, why = INCONCLUSIVE, f"only {m.n} {metric.unit}, need {cfg.min_samples}"
    else:
        outcome, why = g.comparator.judge(m.bounds[1], m.bounds[2], limit)
    return GateResult(g.name, outcome, m.bounds[0], (m.bounds[1], m.bounds[2]), limit,
                      f"{text}: {why}", candidate=m.side())


def _too_few_pairs(g: Gate, c: VersionMetrics, s: VersionMetrics, cfg: GateConfig,
                   limit: float) -> GateResult | None:
    """Rates: inconclusive before measuring when either side has too few samples."""
    metric = g.metric
    nc, ns = metric.size(c), metric.size(s)
    if nc < cfg.min_samples or ns < cfg.min_samples:
        return GateResult(g.name, INCONCLUSIVE, None, (None, None), limit,
                          f"{metric.pair_unit}: candidate {nc}, stable {ns}; "
                          f"need {cfg.min_samples} each")
    return None


def _difference(g: Gate, c: VersionMetrics, s: VersionMetrics, cfg: GateConfig,
                limit: float) -> GateResult:
    """Newcombe's interval of candidate - stable, judged against `limit`."""
    metric = g.metric
    short = _too_few_pairs(g, c, s, cfg, limit)
    if short is not None:
        return short
    cm, sm = metric.measure(c, cfg.confidence, cfg), metric.measure(s, cfg.confidence, cfg)
    d, lo, hi = newcombe_difference(cm.x, cm.n, sm.x, sm.n, cfg.confidence)
    outcome, why = g.comparator.judge(lo, hi, limit)
    margin = f", margin {limit:+.4f}" if g.comparator.margin else ""
    text = (f"{metric.subject} candidate {cm.x}/{cm.n}, stable {s.version_id} {sm.x}/{sm.n}; "
            f"difference {d:+.4f}, Newcombe {cfg.confidence:.0%} CI [{lo:+.4f}, {hi:+.4f}]"
            f"{margin}")
    return GateResult(g.name, outcome, d, (lo, hi), limit, f"{text}: {why}",
                      candidate=cm.side(), stable=sm.side())


def _ratio_gate(g: Gate, c: VersionMetrics, s: VersionMetrics, cfg: GateConfig,
                limit: float) -> GateResult:
    """candidate vs limit x stable, each side's interval at the Bonferroni-adjusted level."""
    metric = g.metric
    if metric.kind == "rate":
        short = _too_few_pairs(g, c, s, cfg, limit)
        if short is not None:
            return short
    level = each_side(cfg.confidence)
    cm, sm = metric.measure(c, level, cfg), metric.measure(s, level, cfg)
    text = metric.describe(metric.pair_text, cm, sm, limit, cfg, stable=s.version_id,
                           level=f"{level:.1%}")
    if metric.kind != "rate" and (cm.n < cfg.min_samples or sm.n < cfg.min_samples):
        return GateResult(g.name, INCONCLUSIVE, _div(cm.bounds[0], sm.bounds[0]), (None, None),
                          limit, f"{text}: need {cfg.min_samples} {metric.pair_unit}",
                          candidate=cm.side(), stable=sm.side())
    outcome, why, est, interval = _ratio(cm.bounds, sm.bounds, limit,
                                         at_most=not g.comparator.at_least)
    if metric.kind == "quantile" and outcome == INCONCLUSIVE and (
            cm.bounds[2] is None or sm.bounds[1] is None):
        why = (f"too few latencies to bound p{round(metric.q * 100)} (candidate from above, "
               "stable from below)")
    return GateResult(g.name, outcome, est, interval, limit, f"{text}: {why}",
                      candidate=cm.side(), stable=sm.side())
