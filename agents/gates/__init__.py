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

The gates are a table (GATES): each row names a metric (how one version's value and interval
are measured: a rate, a latency quantile, a mean cost), a comparator (at most / at least /
non-inferior), a method (absolute, difference to stable, ratio to stable), and the GateConfig
field holding its threshold; one function per method judges every row. Only the dwell time
and the sample size, which have no interval, are gates of their own.

Modules: results (GateConfig, VersionMetrics, GateResult, GateDecision), methods (metrics,
comparators, the three methods), table (GATES and evaluate_gates).
"""


from ..stats import newcombe_difference
from .methods import AT_LEAST, AT_MOST, NON_INFERIOR, Comparator, Gate, Metric
from .results import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    GateConfig,
    GateDecision,
    GateResult,
    Outcome,
    VersionMetrics,
)
from .table import GATES, combine, evaluate_gates

__all__ = [
    "AT_LEAST", "AT_MOST", "FAIL", "GATES", "INCONCLUSIVE", "NON_INFERIOR", "PASS", "Comparator",
    "Gate", "GateConfig", "GateDecision", "GateResult", "Metric", "Outcome", "VersionMetrics",
    "combine", "evaluate_gates", "newcombe_difference",
]
