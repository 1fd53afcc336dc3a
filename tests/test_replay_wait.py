"""streams/services/replay.py wait_for_run: polls the stored count on one open store of the
running worker, and opens whichever store answers next when the worker restarts."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import infra.store
from agents.errors import ReviewbusError, StoreBusy
from infra.queries import Query
from streams.services.replay import wait_for_run

COUNT = Query("SELECT count() AS n FROM interactions", {})


class Remote:
    """A worker-hosted store answering the run's count from a script (an exception raises)."""

    def __init__(self, answers: list) -> None:
        self.answers, self.queries = answers, 0

    def query(self, sql, params):
        self.queries += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return SimpleNamespace(rows=[[answer]])


def test_one_store_for_every_poll_and_another_when_the_worker_restarts(monkeypatch):
    restarting = Remote([1, StoreBusy("worker at http://x does not answer")])
    restarted = Remote([3, 5])
    opened = [restarting, restarted]
    monkeypatch.setattr(infra.store, "open_store", lambda settings: opened.pop(0))

    wait_for_run(SimpleNamespace(), COUNT, "run-1", expected=5, timeout=10, poll_s=0.01)

    assert (restarting.queries, restarted.queries) == (2, 2)  # opened twice, not per poll
    assert opened == []


def test_a_run_that_never_completes_times_out_naming_the_count(monkeypatch):
    store = Remote([2] * 1000)
    monkeypatch.setattr(infra.store, "open_store", lambda settings: store)
    with pytest.raises(ReviewbusError, match="run-2: 2 of 5 results stored after 0.05 s"):
        wait_for_run(SimpleNamespace(), COUNT, "run-2", expected=5, timeout=0.05, poll_s=0.01)


def test_polls_four_times_as_often_once_the_rest_is_one_batch_away(monkeypatch):
    """A long replay is counted every poll_s; once the last pause stored at least what is
    left, every poll_s / 4, so the command ends soon after its last row is stored."""
    import streams.services.replay as replay

    store = Remote([0, 40, 80, 80, 90, 100])
    pauses: list[float] = []
    monkeypatch.setattr(infra.store, "open_store", lambda settings: store)
    monkeypatch.setattr(replay.time, "sleep", pauses.append)

    wait_for_run(SimpleNamespace(), COUNT, "run-3", expected=100, timeout=10, poll_s=0.2)

    # 0 stored, then 40 of 100 (60 left > 40 gained), then 80 (20 left <= 40, the most one
    # pause stored), still 80 after a pause that stored nothing, then 90
    assert pauses == [0.2, 0.2, 0.05, 0.05, 0.05]
    assert store.queries == 6
