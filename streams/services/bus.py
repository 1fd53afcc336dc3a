"""Over Kafka: submit commits and wait for their findings, read the findings topic, send
replay requests to one version."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable

from agents.errors import ReviewbusError, UnknownVersion
from agents.settings import Settings
from infra.kafka import existing_topics, start_tail_consumer, true_end_offsets
from schemas import AcceptedChange, CommitEvent, InferenceRequest, ReviewFindings, Role, new_id

from .. import names
from .common import bootstrap, publish


async def submit(settings: Settings, events: list[CommitEvent], *, wait: bool,
                 timeout: float = 300.0,
                 on_result: Callable[[ReviewFindings], None] | None = None
                 ) -> list[ReviewFindings]:
    """Produce the commits; with `wait`, return the findings of exactly those commits."""
    address = bootstrap(settings)
    findings_topic = names.topic(settings, "findings")
    # Subscribe before producing, at the current end, so no answer can be missed.
    consumer = await start_tail_consumer(settings, address, findings_topic) if wait else None
    try:
        await publish(settings, names.topic(settings, "commits"),
                      ((e.repo.encode(), e.model_dump_json().encode()) for e in events), address)
        if consumer is None:
            return []
        return await collect(consumer, {e.event_id for e in events}, timeout, on_result)
    finally:
        if consumer is not None:
            await consumer.stop()


async def collect(consumer, wanted: set[str], timeout: float,
                  on_result: Callable[[ReviewFindings], None] | None) -> list[ReviewFindings]:
    found: dict[str, ReviewFindings] = {}
    deadline = time.monotonic() + timeout
    while len(found) < len(wanted):
        left = deadline - time.monotonic()
        if left <= 0:
            raise ReviewbusError(f"timed out after {timeout:g} s with findings for "
                                 f"{len(found)} of {len(wanted)} commits (is a worker running?)")
        batch = await consumer.getmany(timeout_ms=int(min(left, 1.0) * 1000))
        for messages in batch.values():
            for m in messages:
                result = ReviewFindings.model_validate_json(m.value)
                # At-least-once: a redelivered answer is the same request; keep the first.
                if result.request_id in wanted and result.request_id not in found:
                    found[result.request_id] = result
                    if on_result:
                        on_result(result)
    return list(found.values())


async def follow_findings(settings: Settings, follow: bool) -> AsyncIterator[ReviewFindings]:
    """Every finding on the topic from the beginning; with `follow`, keep waiting for more."""
    consumer = await start_tail_consumer(settings, bootstrap(settings),
                                         names.topic(settings, "findings"), from_beginning=True)
    try:
        tps = list(consumer.assignment())
        ends = await true_end_offsets(consumer, tps)
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                for m in messages:
                    yield ReviewFindings.model_validate_json(m.value)
            if not follow:
                positions = [await consumer.position(tp) for tp in tps]
                if all(p >= ends[tp] for p, tp in zip(positions, tps)):
                    return
    finally:
        await consumer.stop()


def replay_requests(rows: list[dict], version_id: str, run_id: str) -> list[InferenceRequest]:
    out = []
    for row in rows:
        accepted = AcceptedChange.model_validate_json(row["accepted"])
        out.append(InferenceRequest(
            request_id=accepted.request_id, task=accepted.task, version_id=version_id,
            role=Role.replay, run_id=run_id, label=accepted.label, change=accepted.change,
            accepted_at=accepted.occurred_at))
    return out


def serving_topic(settings: Settings, topics: Iterable[str], version_id: str) -> str | None:
    """The topic a worker reads a version's requests from, among the broker's topics: the
    version's own (created when a worker starts serving it), else the pool topic (workers
    serve every version registered since their start through it; the caller knows the version
    is registered and not archived). None: no worker ran yet, requests would wait unread."""
    names_there = set(topics)
    for topic in (names.inference_topic(settings, version_id), names.pool_topic(settings)):
        if topic in names_there:
            return topic
    return None


async def served_versions(settings: Settings, address: str, versions: Iterable[str]) -> set[str]:
    """The versions a worker serves, of those given (registered ones): by their own inference
    topic, or by the pool topic when they have none (registered after the workers started)."""
    topics = set(await existing_topics(settings, address))
    return {v for v in versions if serving_topic(settings, topics, v) is not None}


async def send_replay(settings: Settings, version_id: str, requests: list[InferenceRequest],
                      progress: Callable[[int], None] | None = None) -> int:
    """Send replay requests to the version's topic: its own, or the pool's for a version
    registered since the workers started (served there at once, no restart)."""
    address = bootstrap(settings)
    topic = serving_topic(settings, await existing_topics(settings, address), version_id)
    if topic is None:
        raise UnknownVersion(f"no worker serves {version_id!r} yet (no topic "
                             f"{names.inference_topic(settings, version_id)} nor "
                             f"{names.pool_topic(settings)}): start the workers (`reviewbus up`)")
    return await publish(settings, topic,
                         ((r.request_id.encode(), r.model_dump_json().encode()) for r in requests),
                         address, progress)


def new_run_id() -> str:
    return f"run-{time.strftime('%Y%m%d-%H%M%S')}-{new_id()[:6]}"


def check_version(version_id: str, known: list[str]) -> None:
    if version_id not in known:
        raise UnknownVersion(f"unknown version {version_id!r}; known: {', '.join(known)}")
