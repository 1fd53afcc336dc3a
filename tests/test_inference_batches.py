"""streams/flows/inference.py handle_batch: what one take of the inference agent does.

The agent takes what its topic holds (up to `batch_max` events); the backend still gets batches
of `inference.batch_size`, each batch's outputs go to the producer as soon as it is done (a slow
backend's first findings do not wait for the last batch), and handle_batch returns only once the
broker has acked every output (the caller acks the sources after it). No broker: fake topics
whose acks arrive later, like aiokafka's futures; real crash guard, breakers and backend cache.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from agents.backends.base import Prediction
from agents.breaker import BreakerBoard
from agents.config import InferenceConfig
from infra.crash_markers import CrashGuard
from schemas import (
    ChangeType,
    InferenceRequest,
    NormalizedChange,
    Role,
    VersionSpec,
    VersionState,
)
from streams.backends import _identity
from streams.flows.inference import handle_batch

from .fake_topics import FakeTopic


class AckLaterTopic(FakeTopic):
    def __init__(self, name: str, log: list) -> None:
        super().__init__()
        self.name, self.log, self.futures = name, log, []

    async def send(self, key, value, force):
        fut = asyncio.get_running_loop().create_future()
        self.futures.append(fut)
        asyncio.get_running_loop().call_later(0.02, fut.set_result, None)
        self.log.append(("sent", self.name, key))
        return fut


class RecordingBackend:
    def __init__(self, log: list) -> None:
        self.log, self.sizes = log, []

    async def infer(self, batch: list[NormalizedChange]) -> list[Prediction]:
        self.sizes.append(len(batch))
        self.log.append(("infer", [c.sha for c in batch]))
        await asyncio.sleep(0.01)
        return [Prediction(change_type=ChangeType(label="fix", confidence=1.0)) for _ in batch]

    async def close(self) -> None:
        return None


def request(i: int, role: Role = Role.primary) -> InferenceRequest:
    return InferenceRequest(
        request_id=f"r{i}", task="code-review", version_id="v1", role=role,
        change=NormalizedChange(repo="o/r", sha=f"s{i}", message="m", diff=""))


def fake_ctx(tmp_path, log: list, backend: RecordingBackend, spec: VersionSpec, batch_size: int):
    topics = SimpleNamespace(**{n: AckLaterTopic(n, log) for n in ("results", "findings",
                                                                     "failures")})
    ctx = SimpleNamespace(
        config=SimpleNamespace(inference=InferenceConfig(batch_size=batch_size)),
        breakers=BreakerBoard(), crash_guard=CrashGuard(tmp_path / "inflight"),
        backends={spec.id: (_identity(spec), backend)}, backend_locks={}, topics=topics,
        registry=SimpleNamespace(registry=SimpleNamespace(versions={})))
    return ctx, topics


def test_a_take_runs_in_backend_batches_and_publishes_each_batch_before_the_next(tmp_path):
    log: list = []
    backend = RecordingBackend(log)
    spec = VersionSpec(id="v1", backend="fake")
    ctx, topics = fake_ctx(tmp_path, log, backend, spec, batch_size=2)
    requests = [request(i) for i in range(5)]

    asyncio.run(handle_batch(ctx, spec, requests))

    assert backend.sizes == [2, 2, 1]
    # The first batch's result and findings are handed to the producer before the second
    # batch reaches the backend.
    first_send = next(i for i, e in enumerate(log) if e[0] == "sent")
    second_infer = [i for i, e in enumerate(log) if e[0] == "infer"][1]
    assert first_send < second_infer
    assert [k for kind, name, k in (e for e in log if e[0] == "sent") if name == "results"] == [
        b"r0", b"r1", b"r2", b"r3", b"r4"]
    # Served and ok: a result and a findings message each; returned after every broker ack.
    sent = topics.results.futures + topics.findings.futures
    assert len(sent) == 10 and all(f.done() for f in sent)
    assert not topics.failures.futures
    # Every batch ran inside the crash guard and left it: its one slot file is empty again.
    assert [p.read_text() for p in (tmp_path / "inflight").glob("*.json")] == [""]


def test_replays_run_in_their_own_batches(tmp_path):
    log: list = []
    backend = RecordingBackend(log)
    spec = VersionSpec(id="v1", backend="fake")
    ctx, topics = fake_ctx(tmp_path, log, backend, spec, batch_size=4)
    requests = [request(0), request(1, Role.replay), request(2), request(3, Role.replay),
                request(4)]

    asyncio.run(handle_batch(ctx, spec, requests))

    assert [shas for kind, shas in (e for e in log if e[0] == "infer")] == [
        ["s0", "s2", "s4"], ["s1", "s3"]]
    assert len(topics.findings.futures) == 3  # replays publish results, never findings
    assert len(topics.results.futures) == 5


def test_a_version_closed_during_a_take_runs_no_more_of_it_but_its_replays(tmp_path):
    """Quarantined after its first batch failed (the quarantine agent judged the results
    while the take ran): the take's other shadow copies are dropped, not run; replays run."""
    log: list = []
    spec = VersionSpec(id="v1", backend="fake")

    class ClosingBackend(RecordingBackend):
        async def infer(self, batch):
            out = await super().infer(batch)
            ctx.registry.registry.versions["v1"] = SimpleNamespace(
                state=VersionState.quarantined)
            return out

    backend = ClosingBackend(log)
    ctx, topics = fake_ctx(tmp_path, log, backend, spec, batch_size=2)
    requests = [request(i, Role.shadow) for i in range(6)] + [request(9, Role.replay)]

    asyncio.run(handle_batch(ctx, spec, requests))

    assert [shas for kind, shas in (e for e in log if e[0] == "infer")] == [["s0", "s1"],
                                                                         ["s9"]]
    assert len(topics.results.futures) == 3


def test_a_version_with_concurrency_runs_that_many_backend_batches_at_once(tmp_path):
    log: list = []
    spec = VersionSpec(id="v1", backend="fake")
    in_flight, most = 0, 0

    class Counting(RecordingBackend):
        async def infer(self, batch):
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            try:
                return await super().infer(batch)
            finally:
                in_flight -= 1

    backend = Counting(log)
    ctx, topics = fake_ctx(tmp_path, log, backend, spec, batch_size=2)
    ctx.config.inference = InferenceConfig(batch_size=2, max_concurrency=3)

    asyncio.run(handle_batch(ctx, spec, [request(i) for i in range(12)]))

    assert backend.sizes == [2] * 6 and most == 3
    assert len(topics.results.futures) == 12


def test_reroutes_the_broker_refuses_are_dead_lettered_and_the_take_still_runs(tmp_path,
                                                                              monkeypatch):
    """A closed version: its users' requests go to their fallback; if the broker refuses
    those, their sources are dead-lettered (never acked silently) and the replays run."""
    from schemas import Registry, VersionEntry
    from streams.flows import inference

    log: list = []
    spec = VersionSpec(id="v1", backend="fake")
    backend = RecordingBackend(log)
    ctx, topics = fake_ctx(tmp_path, log, backend, spec, batch_size=4)
    registry = Registry(task="code-review")
    registry.versions["v1"] = VersionEntry(spec=spec, state=VersionState.quarantined)
    ctx.registry = SimpleNamespace(registry=registry)
    ctx.config.spec = lambda v: None
    dlq: list = []

    async def send_to_dlq(event, error, agent):
        dlq.append((event.value, error))

    async def refused(outputs):
        raise ConnectionError("broker gone")

    ctx.send_to_dlq = send_to_dlq
    monkeypatch.setattr(inference, "reroute", lambda ctx, r, why: [("findings", b"k", b"v")])
    monkeypatch.setattr(inference, "emit", refused)
    pairs = [(SimpleNamespace(value=b"user-0"), request(0)),
             (SimpleNamespace(value=b"replay-1"), request(1, Role.replay))]

    asyncio.run(inference.serve(ctx, "v1", pairs))

    assert [(v, e.split(":")[0]) for v, e in dlq] == [(b"user-0", "reroute not published")]
    assert [shas for kind, shas in (e for e in log if e[0] == "infer")] == [["s1"]]


def test_an_archived_versions_backend_is_closed_and_forgotten(tmp_path):
    from schemas import LifecycleAction, LifecycleEvent
    from streams.backends import release_backend

    closed: list = []

    class Closing(RecordingBackend):
        async def close(self) -> None:
            closed.append("v1")

    spec = VersionSpec(id="v1", backend="fake")
    ctx, _ = fake_ctx(tmp_path, [], Closing([]), spec, batch_size=2)

    def event(to_state: VersionState) -> LifecycleEvent:
        return LifecycleEvent(task="code-review", version_id="v1",
                              action=LifecycleAction.archive, from_state=VersionState.shadow,
                              to_state=to_state, actor="learner")

    async def main() -> None:
        release_backend(ctx, event(VersionState.shadow))  # not archived: kept
        assert "v1" in ctx.backends
        release_backend(ctx, event(VersionState.archived))
        await asyncio.sleep(0)

    asyncio.run(main())
    assert "v1" not in ctx.backends and closed == ["v1"]


def test_take_sizes_follow_concurrency_and_take_max():
    cfg = InferenceConfig(batch_size=4, concurrency={"llm": 3}, take_max={"slow": 16})
    assert cfg.take_of("fast", 500) == 500  # concurrency 1: what the topic holds
    assert cfg.take_of("slow", 500) == 16  # bounded: a rebalance repeats at most 16
    assert cfg.take_of("llm", 500) == 4  # one backend batch per take, 3 takes in flight
    assert InferenceConfig(batch_size=8, take_max={"x": 2}).take_of("x", 500) == 8
