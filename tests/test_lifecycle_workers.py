"""Two workers of one app (same app id and topics, each with its own chDB store) roll a
candidate out while one of them restarts: the leader alone rotates, and whatever either worker
emitted, every transition applies exactly once (no double promotion)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid

import pytest

from agents.registry import SkipCode, fold_annotated
from agents.settings import Settings
from infra.kafka import read_to_end
from infra.procs import read_json
from schemas import LifecycleEvent
from streams import names
from streams.services.bus import submit

from .conftest import Stack
from .test_lifecycle_e2e import commits

pytestmark = pytest.mark.integration

GATES = {"min_samples": 8, "max_error_rate": 0.35, "max_latency_ratio": None,
         "min_accuracy_delta": 0.0, "min_agreement": None}
CONFIG = {
    "task": "code-review",
    "versions": [
        {"id": "base", "backend": "fake", "initial_state": "stable",
         "params": {"label": "feature", "sleep_ms": 2}},
        {"id": "better", "backend": "fake", "initial_state": "shadow",
         "params": {"label": "feature", "label_by_path": {"docs/": "docs"}, "sleep_ms": 2}},
    ],
    "rotation": {"interval_s": 1.0, "window_s": 3600, "settle_s": 1.0, "canary_steps": [50],
                 "shadow_to_canary": GATES, "canary_step": GATES, "canary_to_stable": GATES},
    "quarantine": {"triggers": []},
    "inference": {"batch_size": 4, "batch_wait_s": 0.02},
}


def history(settings: Settings) -> list[LifecycleEvent]:
    raw = asyncio.run(read_to_end(settings, settings.kafka, names.topic(settings, "lifecycle")))
    return [LifecycleEvent.model_validate_json(v) for v in raw]


def worker_registry(stack: Stack) -> dict[str, str]:
    info = read_json(stack.home / "worker.json")
    with urllib.request.urlopen(info["web_url"] + "/registry", timeout=5) as resp:
        body = json.loads(resp.read())
    return {v["version_id"]: v["state"] for v in body["versions"]}


@pytest.fixture(scope="module")
def pair(tmp_path_factory, broker):
    first = Stack(tmp_path_factory.mktemp("worker-a"), broker, CONFIG)
    second = Stack(tmp_path_factory.mktemp("worker-b"), broker, CONFIG)
    prefix = first.env["REVIEWBUS_TOPIC_PREFIX"]
    app_id = f"lc-{uuid.uuid4().hex[:8]}"
    for s in (first, second):
        s.env["REVIEWBUS_TOPIC_PREFIX"] = prefix
        s.env["REVIEWBUS_APP_ID"] = app_id
        s.settings = Settings(home=s.home, kafka=broker, topic_prefix=prefix,
                              config=s.home / "versions.yaml", partitions=2, app_id=app_id)
    first.start()
    second.start()
    yield first, second
    second.stop()
    first.stop()


def send(settings: Settings, start: int, count: int) -> None:
    # Fire and forget: a worker stopping mid-flight may cost a few answers; the rollout only
    # needs enough of them in ClickHouse.
    asyncio.run(submit(settings, commits(start, count), wait=False))


CRASHES: list[str] = []


def keep_running(*stacks: Stack) -> None:
    """Restart a worker that died. Known foundation issue (reported): on Tansu, Faust's table
    recovery can crash a worker whose standby becomes active after a rebalance
    (ConsistencyError: persisted changelog offset > the under-reported highwater). That is
    not what this test is about; a restarted worker is just one more restart."""
    for s in stacks:
        if s.proc is not None and s.proc.poll() is not None:
            CRASHES.append(s.log_tail(3))
            s.start()


def applied_states(settings: Settings) -> dict[str, str]:
    _, notes = fold_annotated("code-review", history(settings))
    return {e.version_id: e.to_state.value for e, skipped in notes if skipped is None}


def test_two_workers_and_a_restart_never_double_promote(pair):
    first, second = pair
    settings = first.settings
    send(settings, 0, 30)
    time.sleep(3.0)
    # Restart one worker mid-rollout: the other takes over (and may become the leader).
    first.stop()
    send(settings, 30, 20)
    first.start()
    sent = 50
    deadline = time.monotonic() + 90
    states = applied_states(settings)
    while time.monotonic() < deadline and states.get("better") != "stable":
        keep_running(first, second)
        send(settings, sent, 20)
        sent += 20
        time.sleep(2.0)
        states = applied_states(settings)
    events = history(settings)
    final, notes = fold_annotated("code-review", events)
    assert final.versions["better"].state.value == "stable", (sent, states)
    assert final.versions["base"].state.value == "deprecated"

    applied = [(e.version_id, e.action.value, e.from_state and e.from_state.value,
                e.to_state.value, e.traffic_percent)
               for e, skipped in notes if skipped is None and e.actor == "rotation"]
    assert applied == [("better", "promote", "shadow", "canary", 50.0),
                       ("better", "promote", "canary", "stable", 0.0)]
    # Whatever else reached the topic from either worker was dropped as a duplicate or as
    # decided on a stale registry, never applied again.
    extra = [skipped for e, skipped in notes if skipped is not None and e.actor == "rotation"]
    assert all(why.code in (SkipCode.duplicate, SkipCode.stale) for why in extra), extra
    positions = [e.position for e, skipped in notes if skipped is None and e.actor == "rotation"]
    assert len(set(positions)) == len(positions)

    # Both workers' registries (their own fold of the topic) agree.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        keep_running(first, second)
        views = [worker_registry(first), worker_registry(second)]
        if all(v == {"base": "deprecated", "better": "stable"} for v in views):
            break
        time.sleep(0.5)
    assert views == [{"base": "deprecated", "better": "stable"}] * 2
    print(f"two workers: {sent} requests, {len(extra)} dropped duplicate/stale rotation "
          f"events, {len(CRASHES)} worker crashes restarted")

    # A leader that restarts and repeats its last tick re-sends the same ids; a worker that
    # decided on an old registry sends a stale decision. Neither changes anything anywhere.
    promotions = [e for e, skipped in notes if skipped is None and e.actor == "rotation"]
    stale = promotions[0].model_copy(update={"event_id": "stale-" + uuid.uuid4().hex[:8]})
    asyncio.run(publish(settings, [*promotions, stale]))
    again, notes = fold_annotated("code-review", history(settings))
    assert again.versions == final.versions and again.applied == final.applied
    tail = [skipped for _, skipped in notes[-3:]]
    assert [why.code for why in tail] == [SkipCode.duplicate, SkipCode.duplicate, SkipCode.stale]
    time.sleep(2.0)
    keep_running(first, second)
    assert [worker_registry(first), worker_registry(second)] == [
        {"base": "deprecated", "better": "stable"}] * 2


async def publish(settings: Settings, events: list[LifecycleEvent]) -> None:
    from infra.kafka import produce_all, start_producer

    producer = await start_producer(settings, settings.kafka)
    try:
        await produce_all(producer, names.topic(settings, "lifecycle"),
                          ((e.version_id.encode(), e.model_dump_json().encode()) for e in events))
    finally:
        await producer.stop()
