import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.stats import quantile, quantile_interval, wilson_interval


def test_wilson_known_values():
    lo, hi = wilson_interval(10, 100)
    assert lo == pytest.approx(0.05522, abs=1e-4)
    assert hi == pytest.approx(0.17437, abs=1e-4)
    lo, hi = wilson_interval(0, 30)
    assert lo == 0.0
    assert hi == pytest.approx(0.11351, abs=1e-4)
    lo, hi = wilson_interval(30, 30)
    assert hi == 1.0
    assert lo == pytest.approx(1 - 0.11351, abs=1e-4)


def test_wilson_empty_sample_is_uninformative():
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_narrows_with_confidence_and_n():
    w95 = wilson_interval(50, 100)
    w80 = wilson_interval(50, 100, confidence=0.80)
    w95_big = wilson_interval(500, 1000)
    assert w80[1] - w80[0] < w95[1] - w95[0]
    assert w95_big[1] - w95_big[0] < w95[1] - w95[0]


@pytest.mark.parametrize("args", [(-1, 10), (11, 10), (1, -1)])
def test_wilson_rejects_impossible_counts(args):
    with pytest.raises(ValueError):
        wilson_interval(*args)


def test_wilson_rejects_bad_confidence():
    with pytest.raises(ValueError):
        wilson_interval(1, 10, confidence=1.0)


@given(st.integers(min_value=1, max_value=2000).flatmap(
    lambda n: st.tuples(st.integers(min_value=0, max_value=n), st.just(n))))
def test_wilson_contains_the_point_estimate(xn):
    x, n = xn
    lo, hi = wilson_interval(x, n)
    assert 0.0 <= lo <= x / n <= hi <= 1.0


def test_wilson_95_covers_the_true_rate_in_simulation():
    rng = random.Random(20240521)
    trials = covered = 0
    for p in (0.02, 0.05, 0.1, 0.3, 0.5, 0.8):
        for n in (30, 50, 100, 300):
            for _ in range(250):
                x = sum(rng.random() < p for _ in range(n))
                lo, hi = wilson_interval(x, n)
                covered += lo <= p <= hi
                trials += 1
    coverage = covered / trials
    assert coverage >= 0.93, coverage
    assert coverage <= 0.99, coverage  # and it is not trivially wide


def test_quantile_linear_interpolation_matches_numpy_default():
    xs = [1, 2, 3, 4]
    assert quantile(xs, 0.0) == 1
    assert quantile(xs, 1.0) == 4
    assert quantile(xs, 0.5) == 2.5
    assert quantile(xs, 0.95) == pytest.approx(3.85)
    assert quantile([7.0], 0.3) == 7.0
    assert quantile([3, 1, 2], 0.5) == 2  # unsorted input
    assert quantile([], 0.5) is None


def test_quantile_rejects_q_out_of_range():
    with pytest.raises(ValueError):
        quantile([1, 2], 1.5)


def test_quantile_interval_empty_and_small_samples():
    assert quantile_interval([], 0.95) == (None, None)
    xs = list(range(1, 31))  # 30 values: cannot bound p95 from above at 95%
    lo, hi = quantile_interval(xs, 0.95)
    assert hi is None
    assert lo is not None and lo <= quantile(xs, 0.95)


def test_quantile_interval_upper_bound_appears_at_72_samples_for_p95():
    assert quantile_interval(list(range(71)), 0.95)[1] is None
    assert quantile_interval(list(range(72)), 0.95)[1] == 71


def test_quantile_interval_median_known_ranks():
    # n=100, median, 95%: the classic ranks are 40 and 61 (1-based).
    xs = list(range(1, 101))
    assert quantile_interval(xs, 0.5) == (40, 61)


def test_quantile_interval_covers_true_p95_in_simulation():
    rng = random.Random(7)
    true_p95 = -100.0 * math.log(0.05)  # exponential, mean 100
    covered = trials = 0
    for _ in range(600):
        xs = [rng.expovariate(1 / 100) for _ in range(200)]
        lo, hi = quantile_interval(xs, 0.95)
        assert lo is not None and hi is not None
        assert lo <= hi
        covered += lo <= true_p95 <= hi
        trials += 1
    assert covered / trials >= 0.93


def test_quantile_interval_handles_large_samples():
    xs = [float(i) for i in range(100_000)]
    lo, hi = quantile_interval(xs, 0.95)
    assert lo is not None and hi is not None
    assert lo < 95_000 < hi
    assert hi - lo < 300
