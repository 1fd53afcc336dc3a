"""Broker restart: stop the broker under a running worker and start it again on the same port.
The embedded broker keeps topics in memory, so it comes back empty; the worker recovers by
itself (recreates its topics, re-publishes the lifecycle history from ClickHouse) and events
submitted after the restart are processed, each counted once."""

from __future__ import annotations

import asyncio
import hashlib
import time

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from agents.errors import BrokerUnavailable
from agents.settings import Settings
from infra.broker import start_embedded_broker, stop_embedded_broker
from infra.kafka import client_kwargs, read_to_end, start_tail_consumer
from infra.procs import stop_pid
from schemas import ChangedFile, CommitEvent, LifecycleEvent, Status
from streams import names
from streams.services.bus import submit

from .conftest import Stack

pytestmark = pytest.mark.integration

CONFIG = {
    "task": "code-review",
    "versions": [
        {"id": "st", "backend": "fake", "initial_state": "stable",
         "params": {"label": "feature", "findings": 1}},
        {"id": "sh", "backend": "fake", "initial_state": "shadow", "params": {"label": "docs"}},
    ],
    "rotation": {"interval_s": 3600},
    "inference": {"batch_size": 4, "batch_wait_s": 0.02},
}


def commits(tag: str, n: int) -> list[CommitEvent]:
    return [CommitEvent(repo="acme/b", sha=hashlib.sha1(f"{tag}{i}".encode()).hexdigest(),
                        message=f"feat: {tag} {i}", event_id=f"{tag}-{i}",
                        files=[ChangedFile(path="a.py", status="added", content="a = 1\n")])
            for i in range(n)]


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory):
    home = tmp_path_factory.mktemp("own-broker")
    info = start_embedded_broker(home)
    yield home, info
    stop_embedded_broker(home)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, own_broker):
    _, info = own_broker
    s = Stack(tmp_path_factory.mktemp("broker-restart"), info.address, CONFIG)
    s.env["REVIEWBUS_TOPIC_CHECK_INTERVAL_S"] = "1"
    s.start()
    yield s
    s.stop()


async def topic_exists(settings, address: str, topic: str) -> bool:
    admin = AIOKafkaAdminClient(**client_kwargs(settings, address))
    try:
        await admin.start()
        return topic in await admin.list_topics()
    except (KafkaError, OSError):
        return False
    finally:
        await admin.close()


def test_tailing_a_missing_topic_is_a_clear_error_every_time(broker):
    # The consumer is stopped right after start(); aiokafka then raised CancelledError
    # instead of our error (seen after a broker restart, before the topics were recreated).
    async def tail() -> str:
        with pytest.raises(BrokerUnavailable) as err:
            await start_tail_consumer(Settings(), broker, "reviewbus-test.no-such-topic")
        return str(err.value)

    for _ in range(5):
        assert asyncio.run(tail()) == ("topic reviewbus-test.no-such-topic does not exist "
                                       "(is the worker set up?)")


def test_worker_recovers_from_a_broker_restart_by_itself(stack, own_broker):
    home, info = own_broker
    settings = stack.settings
    before = asyncio.run(submit(settings, commits("before", 5), wait=True, timeout=120))
    assert len(before) == 5 and all(r.status == Status.ok for r in before)
    stack.wait_for("SELECT count() AS n FROM lifecycle FINAL", lambda r: r[0]["n"] >= 2)
    worker_pid = stack.proc.pid

    port = int(info.address.rsplit(":", 1)[1])
    assert stop_pid(info.pid)
    time.sleep(1.0)
    restarted = start_embedded_broker(home, port=port)
    assert restarted.address == info.address

    lifecycle = names.topic(settings, "lifecycle")
    deadline = time.monotonic() + 90
    # submit reads the findings topic: the worker recreates the topics one by one, so the
    # lifecycle topic alone can exist before it
    for topic in (lifecycle, names.topic(settings, "findings")):
        while not asyncio.run(topic_exists(settings, info.address, topic)):
            assert time.monotonic() < deadline, stack.log_tail()
            time.sleep(0.5)

    after = commits("after", 5)
    results = asyncio.run(submit(settings, after, wait=True, timeout=150))
    assert sorted(r.request_id for r in results) == sorted(e.event_id for e in after)
    assert all(r.status == Status.ok and r.version_id == "st" for r in results)
    # Restarted itself in place (exec: same process), nobody restarted it.
    assert stack.proc.poll() is None and stack.proc.pid == worker_pid
    log = (stack.home / "worker.log").read_text()
    assert "recreating" in log and "restarting this worker in place" in log

    # The registry lives on: the lifecycle history was re-published from ClickHouse.
    raw = asyncio.run(read_to_end(settings, info.address, lifecycle))
    registered = {e.version_id: e.to_state.value for e in map(LifecycleEvent.model_validate_json,
                                                              raw) if e.action.value == "register"}
    assert registered == {"st": "stable", "sh": "shadow"}

    rows = stack.wait_for(
        "SELECT version_id, role, count() AS n, uniqExact(request_id) AS u FROM interactions "
        "FINAL WHERE startsWith(request_id, 'after-') GROUP BY version_id, role "
        "ORDER BY version_id", lambda rows: sum(r["n"] for r in rows) >= 10)
    assert [(r["version_id"], r["role"], r["n"], r["u"]) for r in rows] == [
        ("sh", "shadow", 5, 5), ("st", "primary", 5, 5)]
