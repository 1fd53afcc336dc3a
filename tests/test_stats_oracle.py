"""The hand-written intervals (agents/stats.py) against scipy as the oracle.

The worker's domain logic keeps its own few-line implementations so that the core install needs
no scipy; these tests pin them to scipy's on a grid of counts and confidence levels.
"""

from __future__ import annotations

import pytest
from scipy import stats as sp

from agents.stats import betainc, binomial_cdf, exact_interval, wilson_interval

CASES = [(k, n) for n in (1, 2, 5, 20, 30, 97, 400, 2500) for k in sorted({0, 1, n // 3, n // 2, n - 1, n})
         if 0 <= k <= n]


@pytest.mark.parametrize("confidence", [0.8, 0.9, 0.95, 0.99])
@pytest.mark.parametrize(("k", "n"), CASES)
def test_wilson_matches_scipy(k, n, confidence):
    ci = sp.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    lo, hi = wilson_interval(k, n, confidence)
    assert lo == pytest.approx(ci.low, abs=1e-9)
    assert hi == pytest.approx(ci.high, abs=1e-9)


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
@pytest.mark.parametrize(("k", "n"), CASES)
def test_clopper_pearson_matches_scipy(k, n, confidence):
    ci = sp.binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    lo, hi = exact_interval(k, n, confidence)
    assert lo == pytest.approx(ci.low, abs=1e-6)
    assert hi == pytest.approx(ci.high, abs=1e-6)


@pytest.mark.parametrize(("k", "n", "p"), [(0, 10, 0.1), (3, 10, 0.25), (49, 100, 0.5),
                                           (199, 200, 0.99), (10, 2500, 0.004)])
def test_binomial_cdf_and_incomplete_beta_match_scipy(k, n, p):
    assert binomial_cdf(k, n, p) == pytest.approx(sp.binom.cdf(k, n, p), abs=1e-9)
    assert betainc(k + 1, n - k, p) == pytest.approx(sp.beta.cdf(p, k + 1, n - k), abs=1e-9)
