"""The slowdown driver's pure parts (the runs themselves need a broker and minutes)."""

from __future__ import annotations

import os

from bench.slowdown import cpu_s, leader_queries


def test_cpu_seconds_of_this_process_are_read_from_proc():
    spent = cpu_s(os.getpid())
    assert spent is not None and spent > 0
    assert cpu_s(None) is None


def test_leader_queries_always_time_the_reconcile_and_skip_builders_that_moved():
    # The SQL builders are being rewritten: the driver times those that exist, never fails.
    for shadows in (0, 1):
        queries = leader_queries("code-review", shadows)
        assert "NOT IN (SELECT request_id FROM interactions FINAL" in queries["reconcile_unserved"]
        assert all("FROM" in sql for sql in queries.values())
