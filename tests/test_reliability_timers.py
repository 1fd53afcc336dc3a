"""A worker that runs for weeks: timers that raise and the shadow join's expiry, in seconds.

Every leader timer raises on every tick (fault injection), the join TTL is one second and one
shadow answers three seconds late: the worker stays alive, counts each timer's errors, serves
every request, compares the fast shadow, and its join state empties by itself.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request

import pytest

from infra.gitsource import commit_events
from infra.procs import read_json
from streams.services.bus import submit

from .conftest import Stack
from .gitrepo import make_repo

pytestmark = pytest.mark.integration

FAULTY = ("rotation", "quarantine_retests", "error_budgets", "feedback_filters", "reconcile")
CONFIG = {
    "task": "code-review",
    "versions": [
        {"id": "stable-v", "backend": "fake", "initial_state": "stable",
         "params": {"label": "feature", "findings": 1}},
        {"id": "quick", "backend": "fake", "initial_state": "shadow",
         "params": {"label": "feature"}},
        {"id": "late", "backend": "fake", "initial_state": "shadow",
         "params": {"label": "fix", "sleep_ms": 3000}, "timeout_s": 30},
    ],
    "shadow": {"join_ttl_s": 1.0, "expire_interval_s": 0.5},
    "rotation": {"interval_s": 0.5},
    "quarantine": {"check_interval_s": 0.5},
    "slo": {"check_interval_s": 0.5},
    "feedback": {"interval_s": 0.5},
    "inference": {"batch_size": 1, "batch_wait_s": 0.01, "reconcile_interval_s": 0.5},
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, broker):
    s = Stack(tmp_path_factory.mktemp("timers"), broker, CONFIG)
    s.env["REVIEWBUS_FAULT_TIMER_ERRORS"] = ",".join(FAULTY)
    # the memory timers (streams/memory.py) run beside them, every half second
    s.env.update({"REVIEWBUS_MEMORY_REPORT_INTERVAL_S": "0.5", "REVIEWBUS_MEMORY_TRACE": "1",
                  "REVIEWBUS_MALLOC_TRIM_INTERVAL_S": "0.5"})
    s.start()
    yield s
    s.stop()


def metrics(stack: Stack) -> dict[str, float]:
    info = read_json(stack.home / "worker.json")
    with urllib.request.urlopen(f"{info['web_url']}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(reviewbus_\w+(?:\{[^}]*\})?) ([0-9.e+-]+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def wait_metrics(stack: Stack, predicate, timeout: float = 30.0) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        m = metrics(stack)
        if predicate(m) or time.monotonic() > deadline:
            return m
        time.sleep(0.3)


def test_raising_timers_and_join_expiry_leave_the_worker_serving(stack, tmp_path_factory):
    repo = make_repo(tmp_path_factory.mktemp("repo") / "demo")
    events = commit_events(repo, None, last=5)
    results = asyncio.run(submit(stack.settings, events, wait=True, timeout=120))
    assert [r.version_id for r in results] == ["stable-v"] * 5

    # Every faulty timer has raised several times, and the worker is still there.
    m = wait_metrics(stack, lambda m: all(
        m.get(f'reviewbus_timer_errors_total{{timer="{t}"}}', 0) >= 3 for t in FAULTY))
    for t in FAULTY:
        assert m.get(f'reviewbus_timer_errors_total{{timer="{t}"}}', 0) >= 3, (t, m)
    assert 'reviewbus_timer_errors_total{timer="shadow_join_expiry"}' not in m
    assert stack.proc.poll() is None

    # The quick shadow is compared; the late one's partner expired before it answered, and
    # its own entries expire too: the join ends empty without any further traffic.
    m = wait_metrics(stack, lambda m: m.get("reviewbus_shadow_join_pending") == 0
                     and m.get('reviewbus_shadow_join_dropped_total{reason="expired"}', 0) >= 10)
    assert m["reviewbus_shadow_join_pending"] == 0, m
    assert m['reviewbus_shadow_join_dropped_total{reason="expired"}'] >= 10, m
    rows = stack.settled("SELECT candidate_version AS v, count() AS n FROM shadow_comparisons "
                         "FINAL GROUP BY v ORDER BY v")
    assert rows == [{"v": "quick", "n": 5}]
    late = stack.wait_for("SELECT count() AS n FROM interactions FINAL WHERE version_id = 'late'",
                          lambda rows: rows[0]["n"] == 5)
    assert late[0]["n"] == 5

    # Still serving, long after the first expiry.
    more = asyncio.run(submit(stack.settings, commit_events(repo, None, last=2), wait=True,
                              timeout=60))
    assert len(more) == 2 and stack.proc.poll() is None


def test_memory_report_and_malloc_trim_run_on_their_timers(stack):
    m = wait_metrics(stack, lambda m: m.get(
        'reviewbus_timer_seconds_count{timer="malloc_trim"}', 0) >= 2 and m.get(
        'reviewbus_timer_seconds_count{timer="memory_report"}', 0) >= 3)
    assert m['reviewbus_timer_seconds_count{timer="malloc_trim"}'] >= 2, m
    assert 'reviewbus_timer_errors_total{timer="memory_report"}' not in m
    assert 'reviewbus_timer_errors_total{timer="malloc_trim"}' not in m
    assert m['reviewbus_malloc_bytes{kind="in_use"}'] > 1_000_000
    assert "reviewbus_malloc_trimmed_bytes_total" in m
    lines = [json.loads(line) for line in
             (stack.home / f"memory-{stack.proc.pid}.jsonl").read_text().splitlines()]
    assert len(lines) >= 3
    assert all(line["rss"] > line["heap"]["in_use"] > 0 for line in lines)
    assert lines[-1]["traced"]["current"] > 0
    assert "grew" not in lines[0] and len(lines[1]["grew"]) > 0  # sites against the first
    where, size, count = lines[-1]["grew"][0]
    assert ":" in where and isinstance(size, int) and isinstance(count, int)
