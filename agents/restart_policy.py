"""When the supervisor restarts a worker that died, and when it gives up (no I/O here).

Like systemd's `Restart=on-failure`: a non-zero exit or a death by signal is a failure and is
restarted; a clean exit (code 0, or SIGTERM/SIGINT/SIGHUP/SIGPIPE, which systemd also counts
as clean) is not. Each failure waits `backoff_initial_s * 2**(k-1)`, capped at
`backoff_max_s`, where k is the number of deaths within the crash-loop window (the death just
seen included): a worker that dies once a day always restarts after `backoff_initial_s`.
`crash_loop_deaths` deaths within `crash_loop_window_s` seconds is a crash loop: no restart.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from dataclasses import dataclass

CLEAN_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE})


@dataclass(frozen=True)
class RestartPolicy:
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    crash_loop_deaths: int = 5
    crash_loop_window_s: float = 600.0

    def __post_init__(self) -> None:
        if self.backoff_initial_s < 0 or self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("need 0 <= backoff_initial_s <= backoff_max_s")
        if self.crash_loop_deaths < 1 or self.crash_loop_window_s <= 0:
            raise ValueError("need crash_loop_deaths >= 1 and crash_loop_window_s > 0")


@dataclass(frozen=True)
class Decision:
    restart: bool
    delay_s: float  # wait this long before the restart (0 when not restarting)
    recent: tuple[float, ...]  # the deaths still inside the window: keep these, drop the rest
    reason: str = ""  # why not, when restart is False


def exit_reason(returncode: int) -> str:
    """A Popen returncode in words: 'exit code 1', 'killed by SIGKILL'."""
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


def is_failure(returncode: int) -> bool:
    if returncode == 0:
        return False
    if returncode < 0:
        try:
            return signal.Signals(-returncode) not in CLEAN_SIGNALS
        except ValueError:
            return True
    return True


def recent_deaths(deaths: Sequence[float], now: float, window_s: float) -> tuple[float, ...]:
    return tuple(t for t in deaths if now - t <= window_s)


def backoff_s(policy: RestartPolicy, deaths_in_window: int) -> float:
    if deaths_in_window <= 0:
        return 0.0
    # 2**k overflows for huge k long before the cap matters: cap the exponent too.
    return min(policy.backoff_max_s,
               policy.backoff_initial_s * 2.0 ** min(deaths_in_window - 1, 62))


def decide(policy: RestartPolicy, deaths: Sequence[float], now: float) -> Decision:
    """After a failure at `now` (already in `deaths`, the times of every death seen)."""
    recent = recent_deaths(deaths, now, policy.crash_loop_window_s)
    if len(recent) >= policy.crash_loop_deaths:
        n = len(recent)
        return Decision(False, 0.0, recent,
                        f"died {n} time{'s' if n != 1 else ''} within "
                        f"{policy.crash_loop_window_s:g} s (crash loop: limit "
                        f"{policy.crash_loop_deaths})")
    return Decision(True, backoff_s(policy, len(recent)), recent)
