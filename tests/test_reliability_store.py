"""Store unavailable: ClickHouse fails every insert for a while (the fault-injection hook
REVIEWBUS_FAULT_STORE_DOWN_FILE). Findings keep flowing, the sink retries its one held batch
with backoff and acknowledges nothing it has not stored (the rest waits in Kafka: the
consumer group's lag grows), the worker never crashes, and once the store is back every
event is stored exactly once."""

from __future__ import annotations

import asyncio
import re
import urllib.request

import pytest

from infra.kafka import consumer_lag
from infra.procs import read_json
from schemas import ChangedFile, CommitEvent, Status
from streams import names
from streams.services.bus import submit

from .conftest import Stack

pytestmark = pytest.mark.integration

SINK_BATCH = 40
CONFIG = {
    "task": "code-review",
    "versions": [
        {"id": "st", "backend": "fake", "initial_state": "stable",
         "params": {"label": "feature", "findings": 1}},
        {"id": "sh", "backend": "fake", "initial_state": "shadow", "params": {"label": "feature"}},
    ],
    "rotation": {"interval_s": 3600},
    "inference": {"batch_size": 8, "batch_wait_s": 0.02, "reconcile_after_s": 3,
                  "reconcile_interval_s": 1},
}


def commits(tag: str, n: int) -> list[CommitEvent]:
    return [CommitEvent(repo="acme/s", sha=f"{i + (1000 if tag == 'down' else 0):08x}",
                        message=f"feat: {tag} {i}", event_id=f"{tag}-{i}",
                        files=[ChangedFile(path="a.py", status="added", content="a = 1\n")])
            for i in range(n)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, broker):
    home = tmp_path_factory.mktemp("store-outage")
    s = Stack(home, broker, CONFIG)
    s.fault = home / "clickhouse-is-down"
    s.env["REVIEWBUS_FAULT_STORE_DOWN_FILE"] = str(s.fault)
    s.env["REVIEWBUS_SINK_BATCH"] = str(SINK_BATCH)
    s.start()
    yield s
    s.stop()


def metric(stack, name: str, labels: str) -> float:
    web = read_json(stack.home / "worker.json")["web_url"]
    with urllib.request.urlopen(f"{web}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    m = re.search(rf"^{name}{{{labels}}} ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def lag(stack) -> int:
    """What the sink's own group (streams/flows/sink.py) has not committed."""
    s = stack.settings
    topics = [names.topic(s, t) for t in ("results", "accepted")]
    return sum(asyncio.run(consumer_lag(s, s.kafka, names.sink_group(s), topics)).values())


def test_store_outage_loses_nothing_and_the_worker_lives(stack):
    up = asyncio.run(submit(stack.settings, commits("up", 10), wait=True, timeout=120))
    assert len(up) == 10
    stack.wait_for("SELECT count() AS n FROM interactions FINAL", lambda r: r[0]["n"] == 20)

    stack.fault.write_text("fault injection")
    down = commits("down", 60)
    results = asyncio.run(submit(stack.settings, down, wait=True, timeout=120))
    # Users still get their findings while ClickHouse is down.
    assert sorted(r.request_id for r in results) == sorted(e.event_id for e in down)
    assert all(r.status == Status.ok for r in results)
    stack.wait_for("SELECT 1 AS x", lambda r: metric(stack, "reviewbus_sink_rows_total",
                                                     'outcome="retry"') >= 2)
    assert stack.query("SELECT count() AS n FROM interactions FINAL") == [{"n": 20}]
    assert stack.proc.poll() is None
    assert lag(stack) > 0  # unstored events are not acknowledged: they wait in Kafka
    log = (stack.home / "worker.log").read_text()
    held = [int(n) for n in re.findall(r"ClickHouse unavailable \(attempt \d+, (\d+) events held",
                                       log)]
    # One bounded batch held for the store, and at most one more parsed behind it.
    assert held and max(held) <= SINK_BATCH

    stack.fault.unlink()
    rows = stack.wait_for(
        "SELECT version_id, role, count() AS n, uniqExact(request_id) AS u FROM interactions "
        "FINAL GROUP BY version_id, role ORDER BY version_id",
        lambda rows: sum(r["n"] for r in rows) >= 140, timeout=120)
    assert [(r["version_id"], r["role"], r["n"], r["u"]) for r in rows] == [
        ("sh", "shadow", 70, 70), ("st", "primary", 70, 70)]
    stored = {r["request_id"] for r in stack.query(
        "SELECT request_id FROM events_archive FINAL")}
    assert stored == {e.event_id for e in commits("up", 10) + down}
    assert stack.query("SELECT count() AS n FROM dead_letters FINAL") == [{"n": 0}]
    assert "ClickHouse is back" in (stack.home / "worker.log").read_text()
    assert stack.proc.poll() is None
    stack.wait_for("SELECT 1 AS x", lambda r: lag(stack) == 0, timeout=60)


def test_which_store_errors_mean_retry_all_and_which_mean_bad_rows():
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

    from infra.store import StoreUnavailable, is_unavailable

    assert is_unavailable(StoreUnavailable("fault injection"))
    assert is_unavailable(ConnectionRefusedError(111, "refused"))
    assert is_unavailable(OperationalError("HTTPDriver: connection reset"))
    assert is_unavailable(DatabaseError("received ClickHouse error code 241: memory limit"))
    assert is_unavailable(RuntimeError("Code: 252. DB::Exception: Too many parts"))
    # A store not set up for the rows fails every row alike: held and retried, not isolated.
    assert is_unavailable(DatabaseError("Code: 60. DB::Exception: Unknown table results_ingest"))
    assert is_unavailable(DatabaseError("Code: 115. DB::Exception: Unknown setting "
                                        "input_format_json_read_objects_as_strings"))
    # A refused row stays a data error, whatever words its own text quotes.
    assert not is_unavailable(DatabaseError("Code: 53. Type mismatch in 'fix connection "
                                            "timeout, code: 241'"))
    assert not is_unavailable(ValueError("connection refused"))


def test_an_accepted_request_the_bus_lost_is_routed_again(stack):
    """End-to-end repair: a request in the archive (accepted) that never reached a version --
    written straight to the store here, as if the bus had lost it -- is routed again once the
    bus has no backlog, and served."""
    from agents.intake import accept_input
    from agents.settings import Limits
    from infra.store import open_store

    lost = commits("lost", 1)[0].model_copy(update={"event_id": "lost-in-transit"})
    accepted = accept_input(lost.model_dump_json().encode(), source_topic="x", kind="commit",
                            task="code-review", limits=Limits())
    with open_store(stack.settings) as store:  # the worker's store, through its web port
        assert store.insert_events([accepted]) == 1
    rows = stack.wait_for(
        "SELECT version_id, role, status FROM interactions FINAL "
        "WHERE request_id = 'lost-in-transit' ORDER BY version_id",
        lambda rows: len(rows) == 2, timeout=90)
    assert rows == [{"version_id": "sh", "role": "shadow", "status": "ok"},
                    {"version_id": "st", "role": "primary", "status": "ok"}]
    action = stack.wait_for("SELECT reason FROM healing_actions FINAL WHERE action = 'reroute'",
                            lambda rows: len(rows) >= 1)
    assert any("lost-in-transit" in a["reason"] for a in action)
