"""The guard of timers and tasks (streams/guard.py): an exception is logged and counted."""

from __future__ import annotations

import asyncio

import pytest

from streams.guard import InjectedFault, faulty, run_guarded
from streams.metrics import TIMER_ERRORS, TIMER_SECONDS


def errors(name: str) -> float:
    return TIMER_ERRORS.labels(timer=name)._value.get()


def test_an_exception_is_counted_and_swallowed(caplog):
    async def boom() -> None:
        raise KeyError("stale key")

    before = errors("t-boom")
    assert asyncio.run(run_guarded("t-boom", boom)) is False
    assert errors("t-boom") == before + 1
    assert "timer t-boom failed" in caplog.text and "stale key" in caplog.text


def test_a_tick_that_works_counts_nothing():
    ran = []

    async def fine() -> None:
        ran.append(1)

    assert asyncio.run(run_guarded("t-fine", fine)) is True
    assert ran == [1] and errors("t-fine") == 0
    ticks = {s.name: s.value for m in TIMER_SECONDS.collect() for s in m.samples
             if s.labels.get("timer") == "t-fine"}
    assert ticks["reviewbus_timer_seconds_count"] == 1  # each tick's duration is measured


def test_cancellation_is_not_swallowed():
    """A worker that stops cancels its timers: the guard must let that through."""
    async def cancelled() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(run_guarded("t-cancel", cancelled))
    assert errors("t-cancel") == 0


def test_injected_faults_raise_before_the_body():
    ran = []

    async def body() -> None:
        ran.append(1)

    assert faulty(" rotation, reconcile ,") == {"rotation", "reconcile"}
    assert asyncio.run(run_guarded("rotation", body, faulty("rotation"))) is False
    assert asyncio.run(run_guarded("other", body, faulty("rotation"))) is True
    assert asyncio.run(run_guarded("any", body, faulty("*"))) is False
    assert ran == [1] and errors("rotation") >= 1
    assert issubclass(InjectedFault, RuntimeError)


def test_a_task_that_raises_is_started_again_after_restart_s():
    """guarded_task: the task body raises twice, is restarted each time, then returns."""
    from streams.guard import guarded_task

    class FakeApp:
        def task(self, fn):
            self.registered = fn
            return fn

    app, calls = FakeApp(), []

    async def body() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("lost the broker")

    before = errors("t-task")
    guarded_task(app, name="t-task", restart_s=0.01)(body)
    asyncio.run(asyncio.wait_for(app.registered(), timeout=5))
    assert len(calls) == 3 and errors("t-task") == before + 2
