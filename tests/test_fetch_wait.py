"""The idle fetch wait of the worker's Faust consumer (infra/faust_compat.py): 20 ms while records
come, REVIEWBUS_FETCH_IDLE_WAIT_MS once nothing came for REVIEWBUS_FETCH_IDLE_AFTER_S, back to
20 ms with the first fetch that returns records. On the embedded broker, where an empty fetch
is held for its whole wait, and through a real worker."""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.settings import Settings
from infra.consumer_rules import IdleFetchWait, idle_fetch_wait_ms
from infra.faust_compat import adapt_fetch_wait
from infra.kafka import FETCH_MAX_WAIT_MS, client_kwargs, ensure_topics, start_producer
from infra.procs import read_json

from .conftest import Stack


@pytest.mark.parametrize(("quiet_s", "after_s", "idle_ms", "wait"), [
    (0.0, 2.0, 250, 20),     # records just came
    (1.99, 2.0, 250, 20),    # not quiet long enough
    (2.0, 2.0, 250, 250),    # quiet for idle_after_s: the idle wait
    (60.0, 2.0, 250, 250),
    (60.0, 0.0, 250, 20),    # idle_after_s 0: off
    (60.0, 2.0, 0, 20),      # idle_wait_ms 0: off
    (60.0, 2.0, 5, 20),      # never shorter than the short wait
])
def test_the_wait_for_a_time_without_records(quiet_s, after_s, idle_ms, wait):
    assert idle_fetch_wait_ms(quiet_s, 20, after_s, idle_ms) == wait


def test_the_wrapped_fetcher_switches_its_wait_and_passes_the_result_through():
    """adapt_fetch_wait on a stand-in fetcher: the wait it sets for the next request, the
    switches it counts, the inner result returned as it was, and a failing policy (a bug)
    that leaves the wait alone instead of ending aiokafka's fetch loop."""
    from types import SimpleNamespace

    from prometheus_client import REGISTRY

    results = []

    async def inner(assignment, node_id, request):
        return results.pop(0)

    fetcher = SimpleNamespace(_fetch_max_wait_ms=20, _proc_fetch_request=inner)
    policy = adapt_fetch_wait(SimpleNamespace(_fetcher=fetcher), 2.0, 250)
    now = [0.0]
    policy.clock, policy.last_records = (lambda: now[0]), 0.0

    def switches(to: str) -> float:
        return REGISTRY.get_sample_value("reviewbus_faust_fetch_wait_switches_total",
                                         {"to": to}) or 0.0

    before = switches("idle"), switches("short")

    def fetch(got, at):
        now[0] = at
        results.append(got)
        assert asyncio.run(fetcher._proc_fetch_request(None, 0, None)) is got
        return fetcher._fetch_max_wait_ms

    assert [fetch(False, 1.0), fetch(False, 2.5), fetch(False, 3.0), fetch(True, 3.1),
            fetch(False, 3.2)] == [20, 250, 250, 20, 20]
    assert (switches("idle") - before[0], switches("short") - before[1]) == (1, 1)
    policy.after_fetch = None  # a bug in the policy: the fetch still returns, the wait stays
    assert fetch(True, 10.0) == 20


def test_the_wait_goes_idle_after_a_quiet_spell_and_back_with_the_first_records():
    now = [100.0]
    policy = IdleFetchWait(20, 2.0, 250, clock=lambda: now[0])
    waits = []
    for step, got in [(0.5, False), (1.0, False), (0.6, False), (0.25, False), (0.0, True),
                      (0.1, False), (1.85, False), (0.1, False), (0.3, True)]:
        now[0] += step
        waits.append(policy.after_fetch(got))
    assert waits == [20, 20, 250, 250, 20, 20, 20, 250, 20]


async def _fetches(fetcher, seconds: float) -> int:
    """Fetch requests the consumer completes in `seconds`."""
    count = [0]
    inner = fetcher._proc_fetch_request

    async def counting(*args):
        count[0] += 1
        return await inner(*args)

    fetcher._proc_fetch_request = counting
    try:
        await asyncio.sleep(seconds)
    finally:
        fetcher._proc_fetch_request = inner
    return count[0]


@pytest.mark.integration
def test_an_idle_consumer_fetches_less_and_the_first_record_switches_back(broker, tmp_path):
    settings = Settings(home=tmp_path)

    async def run() -> dict:
        topic = f"idle-wait-{uuid.uuid4().hex[:8]}"
        await ensure_topics(settings, broker, {topic: 2})
        tps = [TopicPartition(topic, p) for p in range(2)]
        out: dict = {}
        for adapt in (False, True):
            consumer = AIOKafkaConsumer(**client_kwargs(settings, broker), enable_auto_commit=False,
                                        auto_offset_reset="latest",
                                        fetch_max_wait_ms=FETCH_MAX_WAIT_MS)
            await consumer.start()
            try:
                consumer.assign(tps)
                await consumer.seek_to_end(*tps)
                if adapt:
                    adapt_fetch_wait(consumer, 0.3, 300)
                await asyncio.sleep(0.6)  # quiet for longer than idle_after_s
                fetcher = consumer._fetcher
                out[adapt, "wait idle"] = fetcher._fetch_max_wait_ms
                out[adapt, "fetches in 1.2 s"] = await _fetches(fetcher, 1.2)
                producer = await start_producer(settings, broker)
                try:
                    sent = time.monotonic()
                    await (await producer.send(topic, b"v", key=b"k"))
                finally:
                    await producer.stop()
                got = await consumer.getmany(timeout_ms=3000)
                out[adapt, "latency"] = time.monotonic() - sent
                out[adapt, "records"] = sum(map(len, got.values()))
                out[adapt, "wait after"] = fetcher._fetch_max_wait_ms
            finally:
                await consumer.stop()
        return out

    out = asyncio.run(run())
    # Off: every empty fetch is held 20 ms, about 50 a second.
    assert out[False, "wait idle"] == 20 and out[False, "fetches in 1.2 s"] >= 20, out
    # On: quiet for 0.3 s -> 300 ms fetches, 4 or 5 in 1.2 s.
    assert out[True, "wait idle"] == 300 and out[True, "fetches in 1.2 s"] <= 6, out
    # The record still arrives, at most the idle wait late, and its fetch sets 20 ms again.
    assert out[True, "records"] == 1 and out[True, "latency"] < 1.0, out
    assert out[True, "wait after"] == 20, out


def _metric(url: str, name: str, label: str = "") -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + label + " ") or line.startswith(f"{name}{{{label}}} "):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {label} not in /metrics")


def _wait_metric(url: str, name: str, predicate, timeout: float = 20.0) -> float:
    deadline = time.monotonic() + timeout
    value = _metric(url, name)
    while not predicate(value) and time.monotonic() < deadline:
        time.sleep(0.1)
        value = _metric(url, name)
    return value


@pytest.mark.integration
def test_an_idle_worker_fetches_with_the_idle_wait_and_still_serves_a_commit(
        broker, tmp_path_factory):
    from bench.load import commit_events
    from schemas import CommitEvent
    from streams.services.bus import submit

    stack = Stack(tmp_path_factory.mktemp("idle-wait"), broker, {
        "task": "code-review",
        "versions": [{"id": "fake-stable", "backend": "fake", "initial_state": "stable"}]})
    stack.env.update({"REVIEWBUS_FETCH_IDLE_AFTER_S": "0.5", "REVIEWBUS_FETCH_IDLE_WAIT_MS": "300"})
    stack.start()
    try:
        url = read_json(stack.home / "worker.json")["web_url"]
        # The commit reaches the worker through intake's consumer (no idle switch) and the
        # inference request through the hops' consumer, which switches like Faust's consumer
        # (which now reads only the failures: idle here all along).
        assert _wait_metric(url, "reviewbus_faust_fetch_wait_ms", lambda v: v == 300) == 300
        gauge, switches = "reviewbus_hops_fetch_wait_ms", "reviewbus_hops_fetch_wait_switches_total"
        assert _wait_metric(url, gauge, lambda v: v == 300) == 300, stack.log_tail()
        back_before = _metric(url, switches, 'to="short"')
        idle_before = _metric(url, switches, 'to="idle"')
        events = [CommitEvent.model_validate_json(v) for _, _, v in
                  commit_events(1, f"idle{uuid.uuid4().hex[:6]}")]
        results = asyncio.run(submit(stack.settings, events, wait=True, timeout=60))
        assert [r.request_id for r in results] == [events[0].event_id]
        # The commit's fetch switched the consumer back to the short wait, and once the worker
        # is quiet again it goes idle again.
        assert _metric(url, switches, 'to="short"') >= back_before + 1
        assert _wait_metric(url, gauge, lambda v: v == 300) == 300
        assert _metric(url, switches, 'to="idle"') >= idle_before + 1
    finally:
        stack.stop()


def test_the_self_check_refuses_a_fetcher_that_no_longer_reads_the_wait_per_request(monkeypatch):
    from infra import faust_check

    key = ("aiokafka.consumer.fetcher", "Fetcher", "_get_actions_per_node")
    monkeypatch.setitem(faust_check.SOURCE_NEEDS, key, "self._no_such_wait_ms")
    with pytest.raises(faust_check.FaustIncompatible,
                       match="Fetcher._get_actions_per_node no longer uses self._no_such_wait_ms"):
        faust_check.self_check()
