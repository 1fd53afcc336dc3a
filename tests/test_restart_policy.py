"""The supervisor's restart policy (agents/restart_policy.py): pure, no processes."""

from __future__ import annotations

import signal

import pytest

from agents.restart_policy import (
    RestartPolicy,
    backoff_s,
    decide,
    exit_reason,
    is_failure,
    recent_deaths,
)

POLICY = RestartPolicy(backoff_initial_s=1.0, backoff_max_s=10.0, crash_loop_deaths=5,
                       crash_loop_window_s=60.0)


def test_exit_reasons_in_words():
    assert exit_reason(0) == "exit code 0"
    assert exit_reason(1) == "exit code 1"
    assert exit_reason(-signal.SIGKILL) == "killed by SIGKILL"
    assert exit_reason(-signal.SIGSEGV) == "killed by SIGSEGV"
    assert exit_reason(-200) == "killed by signal 200"


def test_on_failure_like_systemd():
    assert not is_failure(0)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        assert not is_failure(-sig)
    assert is_failure(1) and is_failure(2) and is_failure(139)
    assert is_failure(-signal.SIGKILL) and is_failure(-signal.SIGSEGV)
    assert is_failure(-signal.SIGABRT) and is_failure(-200)


def test_backoff_doubles_and_is_capped():
    assert [backoff_s(POLICY, k) for k in range(0, 7)] == [0.0, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff_s(POLICY, 10_000) == 10.0  # no overflow
    assert backoff_s(RestartPolicy(backoff_initial_s=0, backoff_max_s=0), 3) == 0.0


def test_deaths_outside_the_window_are_forgotten():
    assert recent_deaths([0.0, 30.0, 100.0, 150.0], now=150.0, window_s=60.0) == (100.0, 150.0)
    # A worker that dies once in a while always restarts after the initial backoff.
    d = decide(POLICY, [0.0, 100.0, 200.0, 300.0, 400.0, 500.0], now=500.0)
    assert d.restart and d.delay_s == 1.0 and d.recent == (500.0,)


def test_a_crash_loop_stops_the_restarts_and_says_why():
    deaths: list[float] = []
    delays = []
    for t in (0.0, 1.0, 3.0, 7.0, 15.0):
        deaths.append(t)
        d = decide(POLICY, deaths, now=t)
        deaths = list(d.recent)
        delays.append(d.delay_s if d.restart else None)
    assert delays == [1.0, 2.0, 4.0, 8.0, None]
    assert not d.restart and d.delay_s == 0.0
    assert d.reason == "died 5 times within 60 s (crash loop: limit 5)"


def test_the_fifth_death_after_the_window_moved_is_no_crash_loop():
    d = decide(POLICY, [0.0, 10.0, 20.0, 30.0, 70.0], now=70.0)
    assert d.restart and d.recent == (10.0, 20.0, 30.0, 70.0) and d.delay_s == 8.0


def test_one_death_allowed_means_no_restart():
    d = decide(RestartPolicy(crash_loop_deaths=1), [5.0], now=5.0)
    assert not d.restart and "died 1 time within" in d.reason


@pytest.mark.parametrize("kwargs", [
    {"backoff_initial_s": -1}, {"backoff_initial_s": 5, "backoff_max_s": 1},
    {"crash_loop_deaths": 0}, {"crash_loop_window_s": 0}])
def test_nonsense_policies_are_refused(kwargs):
    with pytest.raises(ValueError):
        RestartPolicy(**kwargs)
