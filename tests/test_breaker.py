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


def test_window_counts_failures_in_time_not_in_a_row():
    clock = FakeClock()
    b = CircuitBreaker(failure_threshold=3, cooldown_s=10, clock=clock, window_s=60)
    b.record_failure()
    b.record_success()  # does not forgive within the window
    b.record_failure()
    assert b.state == "closed" and b.failures == 2
    clock.t += 61  # both slide out
    b.record_failure()
    assert b.state == "closed" and b.failures == 1
    clock.t += 1
    b.record_failure()
    b.record_failure()
    assert b.state == "open" and b.times_opened == 1
    clock.t += 10
    assert b.allow()
    b.record_success()
    assert b.state == "closed" and b.failures == 0  # a closed circuit starts with a clean slate


def test_window_must_be_positive():
    with pytest.raises(ValueError):
        CircuitBreaker(window_s=0)


def test_board_overrides_per_version_and_reset():
    clock = FakeClock()
    board = BreakerBoard(failure_threshold=5, cooldown_s=30, clock=clock,
                         overrides={"fragile": {"failure_threshold": 1, "cooldown_s": 5}})
    assert board.get("fragile").failure_threshold == 1
    assert board.get("sturdy").failure_threshold == 5
    board.get("fragile").record_failure()
    assert board.open_versions() == frozenset({"fragile"})
    snap = board.snapshots()["fragile"]
    assert snap["state"] == "open" and snap["cooldown_s"] == 5 and snap["open_for_s"] == 0
    board.reset("fragile")
    board.reset("unknown")  # a version never seen: nothing to do
    assert board.open_versions() == frozenset()
    assert board.snapshots()["fragile"]["state"] == "closed"


def test_board_from_config():
    from agents.config import BreakerConfig

    cfg = BreakerConfig(failure_threshold=4, window_s=30,
                        per_version={"x": {"cooldown_s": 1}})
    board = BreakerBoard(cfg.failure_threshold, cfg.cooldown_s, window_s=cfg.window_s,
                         overrides=cfg.overrides())
    assert (board.get("x").cooldown_s, board.get("x").failure_threshold) == (1, 4)
    assert board.get("y").window_s == 30 and board.get("y").cooldown_s == 30


def test_breaker_wiring_open_fallback_half_open_probe_close(tmp_path):
    """run_batch records outcomes on the version's breaker; the router reads the board: an
    open circuit sends traffic to the fallback, after the cooldown one probe goes back to the
    version, and its success closes the circuit."""
    import asyncio

    from agents.backends.fake import FakeBackend
    from agents.inference import run_batch
    from agents.routing import plan_route
    from schemas import (
        InferenceRequest,
        NormalizedChange,
        Registry,
        Role,
        VersionEntry,
        VersionSpec,
        VersionState,
    )

    broken = tmp_path / "broken"
    broken.touch()
    spec = VersionSpec(id="v1", backend="fake", params={"fail_while_file": str(broken)})
    backend = FakeBackend(spec)
    registry = Registry(task="code-review", versions={
        "v1": VersionEntry(spec=spec, state=VersionState.stable),
        "v2": VersionEntry(spec=VersionSpec(id="v2", backend="fake"), state=VersionState.shadow)})
    clock = FakeClock()
    board = BreakerBoard(failure_threshold=2, cooldown_s=10, clock=clock)

    def request(i: int) -> InferenceRequest:
        return InferenceRequest(request_id=f"r{i}", task="code-review", version_id="v1",
                                role=Role.primary,
                                change=NormalizedChange(repo="r", sha="abcd", message="", diff=""))

    def run(i: int) -> str:
        [result] = asyncio.run(run_batch(spec, backend, [request(i)], board.get("v1")))
        return result.status.value if result.status.value != "error" else result.error

    assert plan_route(registry, "c", board.open_versions()).primary == "v1"
    assert "failing while" in run(1) and "failing while" in run(2)
    plan = plan_route(registry, "c", board.open_versions())
    assert (plan.primary, plan.role, plan.fallback_from) == ("v2", Role.fallback, "v1")
    assert run(3).startswith("circuit open")  # queued work is refused fast, not run
    broken.unlink()  # the version recovers
    clock.t += 10
    assert board.states() == {"v1": "half_open"}
    assert plan_route(registry, "c", board.open_versions()).primary == "v1"  # the probe
    assert run(4) == "ok"  # run_batch took the one half-open trial, and it passed
    assert board.states() == {"v1": "closed"} and run(5) == "ok"
