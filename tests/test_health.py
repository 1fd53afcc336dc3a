import pytest

from agents.health import HealthTracker


def test_consecutive_failures_trigger_once():
    h = HealthTracker(consecutive_failures=3, window=50, min_samples=20)
    assert h.observe("v1", False) is None
    assert h.observe("v1", False) is None
    verdict = h.observe("v1", False)
    assert verdict is not None
    trigger, evidence = verdict
    assert trigger == "consecutive_failures"
    assert evidence["consecutive_failures"] == 3
    assert evidence["window_errors"] == 3 and evidence["window_size"] == 3
    assert evidence["error_rate"] == 1.0
    assert h.tripped("v1")
    # silent afterwards, however bad it gets
    assert all(h.observe("v1", False) is None for _ in range(100))


def test_a_success_breaks_the_streak():
    h = HealthTracker(consecutive_failures=3, window=50, max_error_rate=1.0, min_samples=20)
    for _ in range(10):
        assert h.observe("v1", False) is None
        assert h.observe("v1", False) is None
        assert h.observe("v1", True) is None


def test_error_rate_trigger_needs_min_samples():
    h = HealthTracker(consecutive_failures=100, window=50, max_error_rate=0.5, min_samples=20)
    outcomes = [False, False, True] * 7  # 2/3 errors, never 100 in a row
    results = [h.observe("v1", ok) for ok in outcomes]
    first = next(i for i, r in enumerate(results) if r is not None)
    assert first == 19  # the 20th observation: the window has min_samples
    trigger, evidence = results[first]
    assert trigger == "error_rate"
    assert evidence["window_size"] == 20
    assert evidence["window_errors"] == 14
    assert evidence["error_rate"] == pytest.approx(0.7)
    assert all(r is None for r in results[first + 1:])


def test_error_rate_at_the_threshold_does_not_trigger():
    h = HealthTracker(consecutive_failures=100, window=20, max_error_rate=0.5, min_samples=20)
    assert all(h.observe("v1", ok) is None for ok in [False, True] * 40)


def test_window_slides():
    h = HealthTracker(consecutive_failures=100, window=10, max_error_rate=0.5, min_samples=10)
    for _ in range(5):
        assert h.observe("v1", False) is None
    for _ in range(20):
        assert h.observe("v1", True) is None  # old failures slide out
    results = [h.observe("v1", False) for _ in range(6)]
    assert results[:5] == [None] * 5  # 5/10 is not above 0.5
    assert results[5] is not None and results[5][1]["window_errors"] == 6


def test_versions_are_independent_and_reset_rearms():
    h = HealthTracker(consecutive_failures=2, window=50, min_samples=20)
    h.observe("v1", False)
    assert h.observe("v2", False) is None
    assert h.observe("v1", False)[0] == "consecutive_failures"
    assert h.observe("v1", False) is None
    h.reset("v1")
    assert not h.tripped("v1")
    assert h.observe("v1", False) is None
    assert h.observe("v1", False)[0] == "consecutive_failures"


def test_rejects_bad_settings():
    with pytest.raises(ValueError):
        HealthTracker(consecutive_failures=0)
    with pytest.raises(ValueError):
        HealthTracker(max_error_rate=1.5)
