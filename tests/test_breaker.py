import pytest

from agents.breaker import BreakerBoard, CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_opens_after_threshold_consecutive_failures():
    clock = FakeClock()
    b = CircuitBreaker(failure_threshold=3, cooldown_s=10, clock=clock)
    for _ in range(2):
        b.record_failure()
    assert b.state == "closed" and b.allow()
    b.record_failure()
    assert b.state == "open"
    assert not b.allow()


def test_success_resets_the_consecutive_count():
    b = CircuitBreaker(failure_threshold=3, cooldown_s=10, clock=FakeClock())
    for _ in range(5):
        b.record_failure()
        b.record_failure()
        b.record_success()
    assert b.state == "closed" and b.failures == 0


def test_half_open_allows_exactly_one_trial():
    clock = FakeClock()
    b = CircuitBreaker(failure_threshold=1, cooldown_s=10, clock=clock)
    b.record_failure()
    clock.t += 9.9
    assert b.state == "open" and not b.allow()
    clock.t += 0.1
    assert b.state == "half_open"
    assert b.allow() is True
    assert b.allow() is False
    assert b.allow() is False


def test_trial_success_closes():
    clock = FakeClock()
    b = CircuitBreaker(failure_threshold=1, cooldown_s=10, clock=clock)
    b.record_failure()
    clock.t += 10
    assert b.allow()
    b.record_success()
    assert b.state == "closed"
    assert all(b.allow() for _ in range(5))


def test_trial_failure_reopens_for_a_full_cooldown():
    clock = FakeClock()
    b = CircuitBreaker(failure_threshold=2, cooldown_s=10, clock=clock)
    b.record_failure()
    b.record_failure()
    clock.t += 10
    assert b.allow()
    b.record_failure()  # one failure is enough in half_open
    assert b.state == "open"
    clock.t += 9
    assert not b.allow()
    clock.t += 1
    assert b.state == "half_open" and b.allow()
    assert b.times_opened == 2


def test_lost_trial_does_not_wedge_the_breaker():
    clock = FakeClock()
    b = CircuitBreaker(failure_threshold=1, cooldown_s=10, clock=clock)
    b.record_failure()
    clock.t += 10
    assert b.allow()  # the trial never reports back
    clock.t += 5
    assert not b.allow()
    clock.t += 5
    assert b.allow()  # a new trial after another cooldown


def test_late_results_while_open_change_nothing():
    clock = FakeClock()
    b = CircuitBreaker(failure_threshold=1, cooldown_s=10, clock=clock)
    b.record_failure()
    clock.t += 5
    b.record_success()
    assert b.state == "open"
    b.record_failure()
    clock.t += 5  # the cooldown still counts from the first opening
    assert b.state == "half_open"


def test_rejects_bad_settings():
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0)
    with pytest.raises(ValueError):
        CircuitBreaker(cooldown_s=-1)


def test_board_keeps_one_breaker_per_version():
    clock = FakeClock()
    board = BreakerBoard(failure_threshold=2, cooldown_s=10, clock=clock)
    assert board.get("v1") is board.get("v1")
    assert board.get("v1") is not board.get("v2")
    assert board.get("v1").failure_threshold == 2
    assert board.open_versions() == frozenset()
    board.get("v1").record_failure()
    board.get("v1").record_failure()
    board.get("v2").record_failure()
    assert board.open_versions() == frozenset({"v1"})
    assert board.states() == {"v1": "open", "v2": "closed"}


def test_board_half_open_is_routable_until_its_trial_is_taken():
    clock = FakeClock()
    board = BreakerBoard(failure_threshold=1, cooldown_s=10, clock=clock)
    board.get("v1").record_failure()
    clock.t += 10
    assert board.open_versions() == frozenset()  # the router may send the probe
    assert board.get("v1").allow()
    assert board.open_versions() == frozenset({"v1"})  # trial in flight: others fall back
    board.get("v1").record_success()
    assert board.open_versions() == frozenset()
