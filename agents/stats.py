"""Interval estimates for promotion gates: Wilson or Clopper-Pearson for rates, order
statistics for quantiles, Newcombe for differences of rates, the normal approximation for means.

Pure functions, stdlib only. Every interval is two-sided at `confidence`; a gate that compares
a bound with a threshold therefore errs, on each side, with probability about (1-confidence)/2
(at most that for the exact and order-statistic intervals; Wilson is nominal on average but
dips below it for some rates, see tests/test_stats.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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


# -- exact (Clopper-Pearson) interval ------------------------------------------------------

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 3e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(ln_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(ln_front) * _betacf(b, a, 1.0 - x) / b


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(B <= k) for B ~ Binomial(n, p)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return betainc(n - k, k + 1, 1.0 - p)


def _solve(f: Callable[[float], float], target: float, lo: float = 0.0, hi: float = 1.0) -> float:
    """The p in [lo, hi] with f(p) = target, for f decreasing in p (bisection)."""
    for _ in range(100):
        mid = (lo + hi) / 2.0
        if f(mid) > target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return (lo + hi) / 2.0


def exact_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson interval: coverage at least `confidence` for every true rate.

    Wider than Wilson; use it where a gate must never be more permissive than its nominal
    level. (0.0, 1.0) when n == 0.
    """
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    _z(confidence)  # validates confidence
    alpha_half = (1.0 - confidence) / 2.0
    if n == 0:
        return 0.0, 1.0
    # lower: P(B >= x | p) = alpha/2, i.e. 1 - cdf(x-1) = alpha/2; upper: cdf(x | p) = alpha/2.
    lo = 0.0 if successes == 0 else _solve(
        lambda p: binomial_cdf(successes - 1, n, p), 1.0 - alpha_half)
    hi = 1.0 if successes == n else _solve(lambda p: binomial_cdf(successes, n, p), alpha_half)
    return lo, hi


def rate_interval(successes: int, n: int, confidence: float = 0.95,
                  method: str = "wilson") -> tuple[float, float]:
    """A binomial proportion's interval: `wilson` (default) or `exact` (Clopper-Pearson)."""
    if method == "wilson":
        return wilson_interval(successes, n, confidence)
    if method == "exact":
        return exact_interval(successes, n, confidence)
    raise ValueError(f"unknown interval method {method!r}; use wilson or exact")


def newcombe_difference(x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95
                        ) -> tuple[float, float, float]:
    """p1 - p2 and Newcombe's hybrid score interval (method 10) from two Wilson intervals."""
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson_interval(x1, n1, confidence)
    l2, u2 = wilson_interval(x2, n2, confidence)
    d = p1 - p2
    lo = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return d, max(-1.0, lo), min(1.0, hi)


def mean_interval(total: float, total_sq: float, n: int, confidence: float = 0.95
                  ) -> tuple[float | None, float | None, float | None]:
    """Mean and its normal-approximation interval from the sum and the sum of squares
    (what a SQL aggregate returns); (None, None, None) for n == 0."""
    z = _z(confidence)
    if n <= 0:
        return None, None, None
    mean = total / n
    if n == 1:
        return mean, None, None
    var = max(0.0, (total_sq - n * mean * mean) / (n - 1))
    half = z * math.sqrt(var / n)
    return mean, mean - half, mean + half


def each_side(confidence: float, k: int = 2) -> float:
    """Bonferroni: the confidence of each of k intervals so that all hold at `confidence`.

    A ratio judged from two independent intervals (candidate and stable) uses each at
    1 - (1 - confidence)/2, so the ratio's bounds err with probability at most
    (1 - confidence)/2 on each side, as a single interval would.
    """
    _z(confidence)
    return 1.0 - (1.0 - confidence) / k
