"""Crash loop: a version whose backend kills the whole worker process (like a segfault in
native code). The supervisor (here: the test) restarts the worker each time; the markers of
the batches in flight at each death attribute it, the suspect runs alone after a death, and
after `crash_loop_restarts` attributable deaths the version is quarantined (trigger
crash_loop) before it can run again. The stable version serves every request throughout."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from agents.errors import ReviewbusError
from infra.kafka import produce_all, read_to_end, start_producer
from schemas import ChangedFile, CommitEvent, ReviewFindings
from streams import names

from .conftest import FAST_REJOIN, Stack

pytestmark = pytest.mark.integration


CONFIG = {
    "task": "code-review",
    "versions": [
        {"id": "st", "backend": "fake", "initial_state": "stable",
         "params": {"label": "feature", "findings": 1}},
        {"id": "crashy", "backend": "fake", "initial_state": "shadow",
         "params": {"mode": "exit", "exit_code": 139}},
    ],
    "quarantine": {"crash_loop_restarts": 2, "crash_loop_window_s": 600,
                   "poison_after_crashes": 2},
    "rotation": {"interval_s": 3600},
    "inference": {"batch_size": 1, "batch_wait_s": 0.01},
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, broker):
    s = Stack(tmp_path_factory.mktemp("crashloop"), broker, CONFIG)
    s.env.update(FAST_REJOIN)
    s.start()
    yield s
    s.stop()


def test_a_version_that_kills_the_worker_is_quarantined_for_a_crash_loop(stack):
    events = [CommitEvent(repo="acme/c", sha=f"{i:08x}", message=f"feat: c {i}",
                          event_id=f"loop-{i}",
                          files=[ChangedFile(path="a.py", status="added", content="a = 1\n")])
              for i in range(3)]

    async def publish() -> None:
        producer = await start_producer(stack.settings, stack.settings.kafka)
        try:
            await produce_all(producer, names.topic(stack.settings, "commits"),
                              ((e.repo.encode(), e.model_dump_json().encode()) for e in events))
        finally:
            await producer.stop()

    asyncio.run(publish())
    def quarantined() -> bool:
        try:
            return bool(stack.query("SELECT 1 FROM quarantines FINAL WHERE version_id = 'crashy'"))
        except ReviewbusError:  # the worker died under the query
            return False

    deaths = []
    while len(deaths) < 6:
        deadline = time.monotonic() + 120  # generous: a loaded machine starts workers slowly
        while stack.proc.poll() is None and time.monotonic() < deadline:
            if quarantined():
                break
            time.sleep(0.5)
        if stack.proc.poll() is None:
            break  # it stays up now
        deaths.append(stack.proc.returncode)
        try:
            stack.start()
        except RuntimeError:
            continue  # died while starting: counted on the next turn
    assert 2 <= len(deaths) <= 4 and set(deaths) == {139}
    assert stack.proc.poll() is None

    q = stack.wait_for("SELECT version_id, trigger, root_cause, evidence FROM quarantines FINAL",
                       lambda r: len(r) == 1)[0]
    assert (q["version_id"], q["trigger"]) == ("crashy", "crash_loop")
    assert "the worker died 2 times" in q["root_cause"]
    evidence = json.loads(q["evidence"])
    assert evidence["crashes"] == 2 and evidence["crash_loop_restarts"] == 2
    states = stack.wait_for("SELECT version_id, to_state FROM lifecycle FINAL "
                            "WHERE action = 'quarantine'", lambda r: len(r) >= 1)
    assert states == [{"version_id": "crashy", "to_state": "quarantined"}]

    history = json.loads((stack.home / "crashes.json").read_text())
    assert len(history) == len(deaths)
    assert all("crashy" in h["inflight"] for h in history)

    # Every request was served by the stable version, crashes or not.
    deadline = time.monotonic() + 90
    served: set[str] = set()
    while served != {e.event_id for e in events} and time.monotonic() < deadline:
        raw = asyncio.run(read_to_end(stack.settings, stack.settings.kafka,
                                      names.topic(stack.settings, "findings")))
        served = {ReviewFindings.model_validate_json(v).request_id for v in raw}
        time.sleep(0.5)
    assert served == {e.event_id for e in events}
    rows = stack.query("SELECT version_id, count() AS n FROM interactions FINAL "
                       "GROUP BY version_id")
    assert rows == [{"version_id": "st", "n": 3}]  # crashy never answered anything
