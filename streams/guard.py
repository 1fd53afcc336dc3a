"""One guard for every timer and background task: nothing periodic can kill a worker.

An exception that escapes a Faust timer or task crashes the whole worker (mode's Service
crashes, Faust logs `We experienced a crash!` and the process exits). Every timer and task of
reviewbus is declared through `guarded_timer` / `guarded_task` instead of `app.timer` /
`app.task`: an exception is logged with the timer's name, counted in
`reviewbus_timer_errors_total{timer}`, and the worker goes on (a timer at its next tick, a task
after `task_restart_s`, started again from the top).

Fault injection for tests and drills: `REVIEWBUS_FAULT_TIMER_ERRORS=rotation,budgets` (or `*`)
makes those timers raise on every tick, before their body runs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable

from .metrics import TIMER_ERRORS, TIMER_SECONDS

log = logging.getLogger("reviewbus")

TickFn = Callable[[], Awaitable[None]]


class InjectedFault(RuntimeError):
    """Raised by a guard whose timer is named in REVIEWBUS_FAULT_TIMER_ERRORS."""


def faulty(spec: str | None) -> frozenset[str]:
    """`a,b` -> {"a", "b"}; `*` means every timer."""
    return frozenset(x.strip() for x in (spec or "").split(",") if x.strip())


def _inject(name: str, faults: frozenset[str]) -> None:
    if name in faults or "*" in faults:
        raise InjectedFault(f"fault injected into timer {name} (REVIEWBUS_FAULT_TIMER_ERRORS)")


async def run_guarded(name: str, fn: TickFn, faults: frozenset[str] = frozenset()) -> bool:
    """Run one tick of `fn`; False when it raised (logged and counted, never re-raised)."""
    start = time.perf_counter()
    try:
        _inject(name, faults)
        await fn()
        TIMER_SECONDS.labels(timer=name).observe(time.perf_counter() - start)
        return True
    except asyncio.CancelledError:
        raise
    except Exception:
        TIMER_ERRORS.labels(timer=name).inc()
        log.exception("timer %s failed; the worker goes on and the next tick retries", name)
        return False


def guarded_timer(app, interval_s: float, *, name: str, on_leader: bool = False,
                  faults: frozenset[str] = frozenset()) -> Callable[[TickFn], TickFn]:
    """`@app.timer(interval_s, on_leader=...)`, with every tick under the guard."""

    def decorate(fn: TickFn) -> TickFn:
        @functools.wraps(fn)
        async def tick() -> None:
            await run_guarded(name, fn, faults)

        app.timer(interval_s, on_leader=on_leader, name=name)(tick)
        return fn

    return decorate


def guarded_task(app, *, name: str, restart_s: float = 5.0,
                 faults: frozenset[str] = frozenset()) -> Callable[[TickFn], TickFn]:
    """`@app.task`, started again (after `restart_s`) whenever it raises; a task that returns
    is done."""

    def decorate(fn: TickFn) -> TickFn:
        @functools.wraps(fn)
        async def supervised() -> None:
            while not await run_guarded(name, fn, faults):
                await asyncio.sleep(restart_s)

        app.task(supervised)
        return fn

    return decorate


__all__ = ["InjectedFault", "faulty", "guarded_task", "guarded_timer", "run_guarded"]
