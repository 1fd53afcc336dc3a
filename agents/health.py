"""Health tracking: decide when a version's failures warrant quarantine.

Pure. Per version it counts consecutive failures and the error rate over a sliding window of
the last `window` outcomes. The first time a threshold is crossed observe() returns the
trigger and its evidence; after that it stays silent for that version until reset().
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any


@dataclass
class _VersionHealth:
    window: deque[bool]
    consecutive: int = 0
    observed: int = 0
    failed: int = 0
    tripped: bool = False
    trigger: str | None = None


class HealthTracker:
    def __init__(
        self,
        consecutive_failures: int = 5,
        window: int = 50,
        max_error_rate: float = 0.5,
        min_samples: int = 20,
    ) -> None:
        if consecutive_failures < 1 or window < 1 or min_samples < 1:
            raise ValueError("consecutive_failures, window and min_samples must be >= 1")
        if not 0.0 <= max_error_rate <= 1.0:
            raise ValueError("max_error_rate must be in [0, 1]")
        self.consecutive_failures = consecutive_failures
        self.window = window
        self.max_error_rate = max_error_rate
        self.min_samples = min(min_samples, window)  # a window never holds more than `window`
        self._versions: dict[str, _VersionHealth] = {}

    def _get(self, version_id: str) -> _VersionHealth:
        h = self._versions.get(version_id)
        if h is None:
            h = _VersionHealth(window=deque(maxlen=self.window))
            self._versions[version_id] = h
        return h

    def observe(self, version_id: str, ok: bool) -> tuple[str, dict[str, Any]] | None:
        """Record one outcome; (trigger, evidence) the first time a threshold is crossed."""
        h = self._get(version_id)
        h.observed += 1
        h.window.append(bool(ok))
        if ok:
            h.consecutive = 0
        else:
            h.failed += 1
            h.consecutive += 1
        if h.tripped:
            return None
        trigger: str | None = None
        errors = sum(1 for o in h.window if not o)
        rate = errors / len(h.window)
        if h.consecutive >= self.consecutive_failures:
            trigger = "consecutive_failures"
        elif len(h.window) >= self.min_samples and rate > self.max_error_rate:
            trigger = "error_rate"
        if trigger is None:
            return None
        h.tripped, h.trigger = True, trigger
        return trigger, {
            "version_id": version_id,
            "trigger": trigger,
            "consecutive_failures": h.consecutive,
            "consecutive_threshold": self.consecutive_failures,
            "window_size": len(h.window),
            "window_errors": errors,
            "error_rate": rate,
            "max_error_rate": self.max_error_rate,
            "min_samples": self.min_samples,
            "observed": h.observed,
            "failed": h.failed,
        }

    def tripped(self, version_id: str) -> bool:
        h = self._versions.get(version_id)
        return bool(h and h.tripped)

    def reset(self, version_id: str) -> None:
        """Forget a version's history (after restore), so it can trigger again."""
        self._versions.pop(version_id, None)
