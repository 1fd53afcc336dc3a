"""Interval estimates for promotion gates: Wilson for rates, order statistics for quantiles.

Pure functions, stdlib only. Every interval is two-sided at `confidence`; a gate that compares
a bound with a threshold therefore errs, on each side, with probability at most (1-confidence)/2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0.0, 1.0) when n == 0."""
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    z = _z(confidence)
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def quantile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile with linear interpolation between order statistics (numpy's default,
    Hyndman-Fan type 7); None for an empty sample."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q!r}")
    xs = sorted(float(v) for v in values)
    if not xs:
        return None
    h = (len(xs) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (h - lo) * (xs[hi] - xs[lo])


def _binomial_pmf(n: int, p: float) -> list[float]:
    """P(B = k) for k = 0..n, B ~ Binomial(n, p), in log space so large n does not overflow."""
    if p <= 0.0:
        return [1.0] + [0.0] * n
    if p >= 1.0:
        return [0.0] * n + [1.0]
    lp, lq, lgn = math.log(p), math.log1p(-p), math.lgamma(n + 1)
    return [
        math.exp(lgn - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * lp + (n - k) * lq)
        for k in range(n + 1)
    ]


def quantile_interval(
    values: Sequence[float], q: float, confidence: float = 0.95
) -> tuple[float | None, float | None]:
    """Distribution-free confidence interval for the population q-quantile.

    With B ~ Binomial(n, q) the number of observations below the quantile, the order statistic
    X(l) lies above the quantile with probability P(B < l) and X(u) below it with probability
    P(B >= u). The lower bound is the largest X(l) with P(B < l) <= alpha/2, the upper bound
    the smallest X(u) with P(B >= u) <= alpha/2. Where even X(1) (resp. X(n)) does not reach
    that level the sample is too small to bound that side, and the bound is None: for example
    an upper bound on p95 needs at least 72 observations at 95% confidence.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q!r}")
    alpha_half = (1.0 - confidence) / 2.0
    _z(confidence)  # validates confidence
    xs = sorted(float(v) for v in values)
    n = len(xs)
    if n == 0:
        return None, None
    pmf = _binomial_pmf(n, q)

    lower: float | None = None
    below = 0.0  # P(B < l), for l = 1, 2, ...
    for l_rank in range(1, n + 1):
        below += pmf[l_rank - 1]
        if below > alpha_half:
            break
        lower = xs[l_rank - 1]

    upper: float | None = None
    above = 0.0  # P(B >= u), for u = n, n-1, ...
    for u_rank in range(n, 0, -1):
        above += pmf[u_rank]
        if above > alpha_half:
            break
        upper = xs[u_rank - 1]
    return lower, upper
