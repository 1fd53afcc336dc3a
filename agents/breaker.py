"""Circuit breaker per version: stop sending requests to a failing version, probe it later.

Pure apart from the injected clock. closed: every request allowed; `failure_threshold`
consecutive failures open it, or, with `window_s` set, that many failures within the last
`window_s` seconds (successes in between do not reset the count then). open: nothing allowed
until `cooldown_s` has passed, then it is half_open: exactly one trial request at a time; its
success closes the circuit, its failure opens it again for another cooldown. A trial that
never reports back is given up after another cooldown, so a lost result cannot wedge the
breaker.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        window_s: float | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if cooldown_s < 0:
            raise ValueError("cooldown_s must not be negative")
        if window_s is not None and window_s <= 0:
            raise ValueError("window_s must be positive (or None: consecutive failures)")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.window_s = window_s
        self._clock = clock
        self._failure_times: deque[float] = deque()  # closed, with window_s: recent failures
        self._open = False
        self._opened_at = 0.0
        self._trial_started: float | None = None  # when the half-open trial was let through
        self.failures = 0  # consecutive failures while closed
        self.times_opened = 0

    @property
    def state(self) -> str:
        if not self._open:
            return CLOSED
        if self._clock() - self._opened_at >= self.cooldown_s:
            return HALF_OPEN
        return OPEN

    def _trial_in_flight(self, now: float) -> bool:
        return self._trial_started is not None and now - self._trial_started < self.cooldown_s

    def would_allow(self) -> bool:
        """What allow() would answer, without taking the half-open trial."""
        state = self.state
        if state == CLOSED:
            return True
        if state == OPEN:
            return False
        return not self._trial_in_flight(self._clock())

    def allow(self) -> bool:
        """May a request go to this version now? In half_open, True for one trial at a time."""
        state = self.state
        if state == CLOSED:
            return True
        if state == OPEN:
            return False
        now = self._clock()
        if self._trial_in_flight(now):
            return False
        self._trial_started = now
        return True

    def record_success(self) -> None:
        state = self.state
        if state == CLOSED:
            if self.window_s is None:
                self.failures = 0
        elif state == HALF_OPEN:
            self._close()
        # OPEN: a late success of a request sent before the circuit opened proves nothing.

    def record_failure(self) -> None:
        state = self.state
        if state == CLOSED:
            if self.window_s is None:
                self.failures += 1
            else:
                now = self._clock()
                self._failure_times.append(now)
                while self._failure_times and now - self._failure_times[0] > self.window_s:
                    self._failure_times.popleft()
                self.failures = len(self._failure_times)
            if self.failures >= self.failure_threshold:
                self._trip()
        elif state == HALF_OPEN:
            self._trip()
        # OPEN: already open; a late failure does not extend the cooldown.

    def reset(self) -> None:
        self._close()

    def snapshot(self) -> dict[str, Any]:
        """State and counters, for /health, `reviewbus slo` and evidence."""
        state = self.state
        out: dict[str, Any] = {"state": state, "failures": self.failures,
                               "failure_threshold": self.failure_threshold,
                               "window_s": self.window_s, "cooldown_s": self.cooldown_s,
                               "times_opened": self.times_opened}
        if state != CLOSED:
            out["open_for_s"] = round(self._clock() - self._opened_at, 3)
        return out

    def _trip(self) -> None:
        self._open = True
        self._opened_at = self._clock()
        self._trial_started = None
        self.times_opened += 1

    def _close(self) -> None:
        self._open = False
        self._trial_started = None
        self.failures = 0
        self._failure_times.clear()


class BreakerBoard:
    """One CircuitBreaker per version id, created on first use with the board's settings or
    the version's own (`overrides`: version id -> {failure_threshold, cooldown_s, window_s})."""

    def __init__(
        self,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        window_s: float | None = None,
        overrides: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.window_s = window_s
        self.overrides = dict(overrides or {})
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, version_id: str) -> CircuitBreaker:
        breaker = self._breakers.get(version_id)
        if breaker is None:
            o = self.overrides.get(version_id, {})
            breaker = CircuitBreaker(
                o.get("failure_threshold", self.failure_threshold),
                o.get("cooldown_s", self.cooldown_s), self._clock,
                o.get("window_s", self.window_s))
            self._breakers[version_id] = breaker
        return breaker

    def reset(self, version_id: str) -> None:
        """Close a version's circuit (after it was restored from quarantine)."""
        breaker = self._breakers.get(version_id)
        if breaker is not None:
            breaker.reset()

    def snapshots(self) -> dict[str, dict[str, Any]]:
        return {vid: b.snapshot() for vid, b in sorted(self._breakers.items())}

    def states(self) -> dict[str, str]:
        return {vid: b.state for vid, b in sorted(self._breakers.items())}

    def open_versions(self) -> frozenset[str]:
        """Versions that would reject a request now: open circuits, and half-open ones whose
        single trial is already in flight. A half-open version with no trial in flight is
        left out, so the router sends it the request that probes it."""
        return frozenset(vid for vid, b in self._breakers.items() if not b.would_allow())
