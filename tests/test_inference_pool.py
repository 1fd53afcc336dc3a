"""The pool: versions registered while the workers run are served at once, through one shared
topic and agent (`inference._pool`), until the next start gives them their own. Pure helpers
here, no broker: the topic names, where a request for a version goes (the router, healing,
the re-tests and `reviewbus replay` ask), and one take of the pool holding two versions'
requests (tests/test_pool_e2e.py runs it on a real worker)."""

from __future__ import annotations

import asyncio
import re
from types import SimpleNamespace

import pytest

from agents.breaker import BreakerBoard
from agents.config import InferenceConfig
from agents.settings import Settings
from infra.crash_markers import CrashGuard
from schemas import (
    VERSION_ID_PATTERN,
    InferenceRequest,
    InferenceResult,
    NormalizedChange,
    Registry,
    Role,
    VersionEntry,
    VersionSpec,
    VersionState,
)
from streams import names
from streams.flows import inference
from streams.flows.router import inference_topic_of
from streams.services.bus import serving_topic

from .fake_topics import FakeTopic

SETTINGS = Settings(topic_prefix="p.", partitions=3)


def test_the_pool_topic_is_named_like_the_inference_topics_and_no_version_can_take_it():
    assert names.pool_topic(SETTINGS) == "p.inference._pool"
    assert names.pool_topic(SETTINGS) == names.inference_topic(SETTINGS, names.POOL)
    assert not re.match(VERSION_ID_PATTERN, names.POOL)  # a version id starts with [A-Za-z0-9]
    topics = names.all_topics(SETTINGS, ["v1"])
    assert topics["p.inference._pool"] == 3 and topics["p.inference.v1"] == 3
    assert names.all_topics(SETTINGS, [])["p.inference._pool"] == 3  # always created


def _ctx(states: dict[str, VersionState], own: tuple[str, ...] = ("stable-v",)):
    registry = Registry(task="code-review")
    for vid, state in states.items():
        registry.versions[vid] = VersionEntry(spec=VersionSpec(id=vid, backend="fake"),
                                              state=state)
    topics = SimpleNamespace(inference={v: f"topic:{v}" for v in own}, pool="topic:pool")
    return SimpleNamespace(topics=topics, registry=SimpleNamespace(registry=registry))


def test_a_version_goes_to_its_own_topic_else_to_the_pool_while_it_gets_traffic():
    S = VersionState
    ctx = _ctx({"stable-v": S.stable, "new-shadow": S.shadow, "new-canary": S.canary,
                "new-reg": S.registered, "new-dep": S.deprecated, "gone": S.archived,
                "bad": S.quarantined})
    assert inference_topic_of(ctx, "stable-v") == "topic:stable-v"
    for vid in ("new-shadow", "new-canary", "new-reg", "new-dep"):
        assert inference_topic_of(ctx, vid, Role.shadow) == "topic:pool", vid
    # Nowhere: unknown, archived; a quarantined version only for its re-test replays.
    assert inference_topic_of(ctx, "unknown") is None
    assert inference_topic_of(ctx, "gone") is None
    assert inference_topic_of(ctx, "gone", Role.replay) is None
    assert inference_topic_of(ctx, "bad", Role.shadow) is None
    assert inference_topic_of(ctx, "bad", Role.fallback) is None
    assert inference_topic_of(ctx, "bad", Role.replay) == "topic:pool"
    # A version with its own topic keeps it, whatever its state (the agent screens it).
    ctx = _ctx({"stable-v": S.quarantined})
    assert inference_topic_of(ctx, "stable-v", Role.shadow) == "topic:stable-v"


def test_replay_goes_to_the_versions_own_topic_else_the_pool_once_a_worker_created_it():
    own, pool = names.inference_topic(SETTINGS, "v1"), names.pool_topic(SETTINGS)
    assert serving_topic(SETTINGS, {own, pool}, "v1") == own
    assert serving_topic(SETTINGS, {own, pool}, "late") == pool
    assert serving_topic(SETTINGS, {own}, "late") is None  # workers older than the pool
    assert serving_topic(SETTINGS, set(), "v1") is None


def _request(i: int, version: str, role: Role = Role.shadow) -> InferenceRequest:
    return InferenceRequest(
        request_id=f"r{i}", task="code-review", version_id=version, role=role,
        change=NormalizedChange(repo="o/r", sha=f"s{i}", message="m", diff=""))


def test_a_take_is_grouped_by_version_in_the_order_taken():
    pairs = [(n, _request(n, v)) for n, v in enumerate(["a", "b", "a", "c", "b"])]
    groups = inference.by_version(pairs)
    assert list(groups) == ["a", "b", "c"]
    assert [e for e, _ in groups["a"]] == [0, 2] and [e for e, _ in groups["b"]] == [1, 4]


class Topic(FakeTopic):
    def __init__(self, name: str, sent: list) -> None:
        super().__init__()
        self.name, self.sent = name, sent

    async def send(self, key, value, force):
        if self.name == "results":
            value = InferenceResult.model_validate_json(value)
        self.sent.append((self.name, value))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


class Stream:
    def __init__(self) -> None:
        self.acked: list = []

    async def ack(self, event) -> None:
        self.acked.append(event)


def _pool_ctx(tmp_path, registry: Registry):
    sent: list = []
    dlq: list = []
    topics = SimpleNamespace(**{n: Topic(n, sent) for n in ("results", "findings", "failures")})

    async def send_to_dlq(event, error, agent):
        dlq.append((event, error))

    ctx = SimpleNamespace(
        config=SimpleNamespace(inference=InferenceConfig(batch_size=8), spec=lambda v: None),
        breakers=BreakerBoard(), crash_guard=CrashGuard(tmp_path / "inflight"),
        backends={}, backend_locks={}, topics=topics, send_to_dlq=send_to_dlq,
        registry=SimpleNamespace(registry=registry))
    return ctx, sent, dlq


def test_one_take_of_the_pool_runs_each_versions_requests_with_its_own_spec(tmp_path, monkeypatch):
    registry = Registry(task="code-review")
    for vid, label in (("late-a", "fix"), ("late-b", "docs")):
        registry.versions[vid] = VersionEntry(
            spec=VersionSpec(id=vid, backend="fake", params={"label": label}),
            state=VersionState.shadow)
    ctx, sent, dlq = _pool_ctx(tmp_path, registry)
    monkeypatch.setattr(inference, "SPEC_WAIT_S", 0.2)
    requests = [_request(0, "late-a"), _request(1, "late-b"), _request(2, "late-a"),
                _request(3, "never-registered")]
    events = [SimpleNamespace(value=r.model_dump_json().encode()) for r in requests]
    events.append(SimpleNamespace(value=b"not json"))
    stream = Stream()

    asyncio.run(inference.process(ctx, events, stream))

    results = {}
    for topic, value in sent:
        if topic == "results":
            results[value.request_id] = (value.version_id, value.status.value,
                                         value.change_type.label if value.change_type else None)
    assert results == {"r0": ("late-a", "ok", "fix"), "r2": ("late-a", "ok", "fix"),
                       "r1": ("late-b", "ok", "docs")}
    # Each version's backend was built from its registry spec and cached.
    assert set(ctx.backends) == {"late-a", "late-b"}
    # The unknown version's request (never in the registry) and the bad bytes: dead letters.
    assert sorted(error.split(":")[0] for _, error in dlq) == [
        "invalid InferenceRequest", "unknown version never-registered"]
    assert stream.acked == events  # all acked, in order


@pytest.mark.parametrize("state", [VersionState.quarantined, VersionState.archived])
def test_a_closed_pool_version_runs_replays_only(tmp_path, state):
    registry = Registry(task="code-review")
    registry.versions["late"] = VersionEntry(spec=VersionSpec(id="late", backend="fake"),
                                             state=state)
    ctx, sent, dlq = _pool_ctx(tmp_path, registry)
    requests = [_request(0, "late", Role.shadow), _request(1, "late", Role.replay)]
    events = [SimpleNamespace(value=r.model_dump_json().encode()) for r in requests]

    asyncio.run(inference.process(ctx, events, Stream()))

    assert [v.request_id for t, v in sent if t == "results"] == ["r1"]  # the shadow copy dropped
    assert dlq == []


def test_a_failed_request_falls_back_to_a_version_served_by_the_pool():
    from schemas import FailureEvent
    from streams.flows.healing import plan

    S = VersionState
    ctx = _ctx({"stable-v": S.stable, "late-canary": S.canary, "bad": S.quarantined})
    ctx.topics.findings, ctx.topics.healing = "topic:findings", "topic:healing"
    ctx.unavailable = frozenset
    ctx.config = SimpleNamespace(inference=InferenceConfig(max_fallback_attempts=2))
    failed = _request(0, "stable-v", Role.primary)
    out = plan(ctx, FailureEvent(request_id="r0", task="code-review", version_id="stable-v",
                                 role="primary", status="error", error="boom", request=failed))
    assert [(topic, type(v).__name__) for topic, _, v in out] == [
        ("topic:pool", "InferenceRequest"), ("topic:healing", "HealingAction")]
    assert out[0][2].version_id == "late-canary" and out[0][2].role == Role.fallback


def test_the_pool_agent_keeps_each_versions_concurrency_limit(monkeypatch):
    declared = []
    monkeypatch.setattr(inference, "agent", lambda ctx, topic, name, concurrency, run:
                        declared.append((topic, name, concurrency, run)))
    running: dict[str, int] = {}
    most: dict[str, int] = {}

    async def serve(ctx, version_id, pairs):
        running[version_id] = running.get(version_id, 0) + 1
        most[version_id] = max(most.get(version_id, 0), running[version_id])
        await asyncio.sleep(0.02)
        running[version_id] -= 1

    monkeypatch.setattr(inference, "serve", serve)
    ctx = SimpleNamespace(topics=SimpleNamespace(pool="topic:pool"), config=SimpleNamespace(
        inference=InferenceConfig(max_concurrency=3, concurrency={"_pool": 4, "one-at-a-time": 1})))
    inference.install_pool(ctx)
    [(topic, name, concurrency, run)] = declared
    assert (topic, name, concurrency) == ("topic:pool", "inference._pool", 4)

    async def takes():
        await asyncio.gather(*(run(ctx, v, []) for v in ["one-at-a-time"] * 3 + ["other"] * 3))

    asyncio.run(takes())
    assert most == {"one-at-a-time": 1, "other": 3}  # other: max_concurrency
