"""inference: one agent per version topic, so a slow candidate never delays the stable one.

The versions served at start (the versions file's and those registered by then) each have
their topic and agent; a version registered while the worker runs is served at once through
one shared topic and agent, `inference._pool` (install_pool), until the next start gives it
its own. Both kinds run a version's requests through `serve`.

Per version and worker: at most `inference.max_concurrency` batches in flight (bounded
concurrency), each bounded in time by the version's `timeout_s`, behind its circuit breaker.
The spec comes from the registry (the fold of the lifecycle topic), so a spec update there
(the false-positive filter adds or removes a suppression) applies to the next batch.

A quarantined (or archived) version serves nobody: user requests still queued for it go
straight to their fallback (healing's plan), shadow copies are dropped, replays (re-tests)
still run. Every batch runs inside the crash guard (a marker file while it
runs; see streams/flows/quarantine.py), and a request that was in flight at repeated worker
deaths is dead-lettered for this version and healed elsewhere.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable

from agents.breaker import CircuitBreaker
from agents.inference import run_batch
from schemas import (
    FailureEvent,
    InferenceRequest,
    InferenceResult,
    ReviewFindings,
    Role,
    Status,
    VersionSpec,
    VersionState,
)

from .. import names
from ..backends import backend_for, release_backend
from ..context import AppContext, emit, log, send_all
from ..metrics import BATCH_EVENTS, EVENTS, INFERENCE_SECONDS
from .healing import plan
from .quarantine import NO_TRAFFIC

# Replays and re-tests never trip (nor are refused by) the circuit that guards user traffic.
_REPLAY_BREAKER = CircuitBreaker(failure_threshold=2**31, cooldown_s=0)
# How long a request waits for its version's register event to reach this worker's registry.
SPEC_WAIT_S = 5.0



def review_findings(r: InferenceResult) -> ReviewFindings:
    """The ReviewFindings users subscribe to, from a served, ok result (published by this hop:
    a findings agent on `results` was one hop, one parse and one produce more per event)."""
    return ReviewFindings(
        request_id=r.request_id, task=r.task, repo=r.repo, sha=r.sha,
        pull_request=r.pull_request, version_id=r.version_id, role=r.role, status=r.status,
        fallback_from=r.fallback_from, change_type=r.change_type, risk=r.risk,
        findings=r.findings, suggested_message=r.suggested_message, latency_ms=r.latency_ms,
        error=r.error)


def current_spec(ctx: AppContext, version_id: str) -> VersionSpec | None:
    """The registry's spec of a version (updated by events), else the versions file's."""
    entry = ctx.registry.registry.versions.get(version_id)
    return entry.spec if entry is not None else ctx.config.spec(version_id)


def post_filter(spec: VersionSpec, result: InferenceResult) -> InferenceResult:
    """The spec's filters, whatever the backend: those added by events reach every backend
    (the analyzers backend applies them itself too; every filter is idempotent)."""
    if not spec.filters or result.status != Status.ok or not result.findings:
        return result
    from agents.backends.analyzers import apply_filters

    try:
        kept = apply_filters(list(result.findings), list(spec.filters))
    except Exception:  # a malformed filter must not drop the answer
        log.warning("version %s: filters %r could not be applied", spec.id, spec.filters)
        return result
    if len(kept) == len(result.findings):
        return result
    return result.model_copy(update={"findings": kept})


def failure_for(result: InferenceResult, request: InferenceRequest) -> FailureEvent:
    return FailureEvent(
        request_id=result.request_id, task=result.task, version_id=result.version_id,
        role=result.role.value, status=result.status.value, error=result.error or "",
        latency_ms=result.latency_ms,
        request=request if request.role.serves_users else None)


def outputs_for(ctx: AppContext, result: InferenceResult, request: InferenceRequest) -> list:
    """The result; its findings when it serves users and is ok (this hop holds the result, so
    it publishes them: no findings hop, see docs/concepts/architecture.md); a failure if not."""
    out = [(ctx.topics.results, result.request_id, result)]
    if result.role.serves_users and result.status == Status.ok:
        out.append((ctx.topics.findings, result.repo, review_findings(result)))
        EVENTS.labels(agent="inference", outcome="published").inc()
    if result.status != Status.ok:
        out.append((ctx.topics.failures, result.version_id, failure_for(result, request)))
    return out


def reroute(ctx: AppContext, request: InferenceRequest, error: str) -> list:
    """A request this version will not run: a user's goes straight to its fallback (healing's
    plan, recorded as a `fallback` HealingAction; no failure of this version is recorded, it
    never ran), a shadow copy is dropped."""
    if not request.role.serves_users:
        return []
    return plan(ctx, FailureEvent(
        event_id=f"{request.event_id}-rr", request_id=request.request_id, task=request.task,
        version_id=request.version_id, role=request.role.value, status=Status.error.value,
        error=error, request=request))


def _unavailable(r: InferenceRequest, error: str) -> InferenceResult:
    return InferenceResult(
        request_id=r.request_id, task=r.task, version_id=r.version_id, role=r.role,
        run_id=r.run_id, status=Status.error, latency_ms=0.0, label=r.label,
        fallback_from=r.fallback_from, attempt=r.attempt, error=f"backend unavailable: {error}",
        repo=r.change.repo, sha=r.change.sha, pull_request=r.change.pull_request,
        accepted_at=r.accepted_at)


def closed_state(ctx: AppContext, version_id: str) -> VersionState | None:
    """The version's state when it gets no traffic (quarantined, archived), else None: its
    users' requests are rerouted, its shadow copies dropped, its replays still run."""
    entry = ctx.registry.registry.versions.get(version_id)
    return entry.state if entry is not None and entry.state in NO_TRAFFIC else None


async def handle_batch(ctx: AppContext, spec: VersionSpec, requests: list[InferenceRequest]) -> None:
    """Run the requests in the backend's batches of `inference.batch_size` (users' requests
    and replays apart: they answer to different circuits), at most the version's concurrency
    of them at once, and publish their results and failures: each batch's outputs are handed
    to the producer as soon as it is done (a slow backend's first findings do not wait for the
    last batch), the broker's acks are awaited once at the end, before the caller acks the
    sources."""
    size = max(1, ctx.config.inference.batch_size)
    batches = [
        (group[start:start + size], breaker)
        for group, breaker in (
            ([r for r in requests if r.role != Role.replay], ctx.breakers.get(spec.id)),
            ([r for r in requests if r.role == Role.replay], _REPLAY_BREAKER))
        for start in range(0, len(group), size)]
    slots = asyncio.Semaphore(ctx.config.inference.concurrency_of(spec.id))

    async def one(group: list[InferenceRequest], breaker: CircuitBreaker) -> list:
        async with slots:
            closed = closed_state(ctx, spec.id)
            if closed is not None and group[0].role != Role.replay:
                # Closed while this take ran (quarantined after its first batches failed):
                # the rest of the take is not run; users go to their fallback, shadows drop.
                return await send_all([o for r in group for o in reroute(
                    ctx, r, f"version {spec.id} is {closed.value}")])
            try:
                backend = await backend_for(ctx, spec)
                async with ctx.crash_guard.slot(spec.id, [r.request_id for r in group]):
                    results = await run_batch(spec, backend, group, breaker)
            except Exception as exc:  # building the backend failed: every request fails
                log.exception("backend %s unavailable", spec.id)
                breaker.record_failure()
                results = [_unavailable(r, str(exc)[:500]) for r in group]
            outputs: list = []
            for request, result in zip(group, results):
                result = post_filter(spec, result)
                INFERENCE_SECONDS.labels(version=spec.id, status=result.status.value).observe(
                    result.latency_ms / 1000)
                outputs += outputs_for(ctx, result, request)
            EVENTS.labels(agent="inference", outcome="ok").inc(len(results))
            return await send_all(outputs)

    # Every batch finishes (or fails) before this returns: a failed send must not leave later
    # batches running after the caller has dead-lettered and acked the take.
    sent = await asyncio.gather(*(one(group, breaker) for group, breaker in batches),
                                return_exceptions=True)
    failed = next((x for x in sent if isinstance(x, BaseException)), None)
    futures = [f for batch in sent if not isinstance(batch, BaseException) for f in batch]
    if futures:
        await asyncio.gather(*futures)
    if failed is not None:
        raise failed


def by_version(pairs: list[tuple[object, InferenceRequest]]
               ) -> dict[str, list[tuple[object, InferenceRequest]]]:
    """A take's (event, request) pairs grouped by the request's version, each group in the
    order taken (the pool's topic holds several versions' requests; a version's own, one)."""
    groups: dict[str, list[tuple[object, InferenceRequest]]] = {}
    for event, request in pairs:
        groups.setdefault(request.version_id, []).append((event, request))
    return groups


async def known_spec(ctx: AppContext, version_id: str, wait_s: float | None = None
                     ) -> VersionSpec | None:
    """current_spec; for a version this worker's registry does not hold yet (registered a
    moment ago: another worker's router folded the event first), wait for it a little."""
    spec = current_spec(ctx, version_id)
    deadline = asyncio.get_running_loop().time() + (SPEC_WAIT_S if wait_s is None else wait_s)
    while spec is None and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
        spec = current_spec(ctx, version_id)
    return spec


async def serve(ctx: AppContext, version_id: str, pairs: list[tuple[object, InferenceRequest]]
                ) -> None:
    """Screen and run one version's requests of a take (a dedicated agent's whole take, or a
    group of the pool's): a closed version's users go to their fallback, poison requests to
    the dead letters, the rest through handle_batch under the version's registry spec."""
    async def dead_letter(event, reason: str) -> None:
        with contextlib.suppress(Exception):  # a broker refusing even this: logged by the caller
            await ctx.send_to_dlq(event, reason, "inference")

    try:
        spec = await known_spec(ctx, version_id)
        closed = closed_state(ctx, version_id)
        run, outputs, rerouted = [], [], []
        for event, request in pairs:
            if spec is None:
                await dead_letter(event, f"unknown version {version_id}")
            elif closed is not None and request.role != Role.replay:
                outputs += reroute(ctx, request, f"version {version_id} is {closed.value}")
                rerouted.append(event)
            elif ctx.crash_guard.is_poison(version_id, request.request_id):
                await dead_letter(
                    event, f"request {request.request_id} was in flight when the worker died "
                    f"{ctx.config.quarantine.poison_after_crashes} times running version "
                    f"{version_id}")
                outputs += reroute(ctx, request, "poison request: it crashed the worker")
            else:
                run.append((event, request))
        if outputs:
            try:
                await emit(outputs)
            except Exception as exc:  # the reroutes are lost: their sources are dead-lettered,
                log.exception("inference %s: reroutes not published", version_id)
                for event in rerouted:  # and the rest of the take still runs
                    await dead_letter(event, f"reroute not published: {exc!r}")
        if run and spec is not None:
            try:
                await handle_batch(ctx, spec, [r for _, r in run])
            except Exception as exc:  # e.g. the broker refused the results
                log.exception("inference %s: batch failed, dead-lettering", version_id)
                for event, _ in run:
                    with contextlib.suppress(Exception):
                        await ctx.send_to_dlq(event, repr(exc), "inference")
    except Exception:
        log.exception("inference %s: batch could not be handled", version_id)


async def process(ctx: AppContext, events: list, stream, ack: bool = True,
                  run: Callable[..., Awaitable[None]] = serve) -> None:
    """Parse one take, run each version's requests in it (`run`, serve by default; the
    versions' groups side by side), and ack every event (unless the caller acks), whatever
    happens."""
    try:
        pairs = []
        for event in events:
            try:
                pairs.append((event, InferenceRequest.model_validate_json(event.value)))
            except Exception as exc:
                await ctx.send_to_dlq(event, f"invalid InferenceRequest: {exc}", "inference")
        groups = by_version(pairs)
        await asyncio.gather(*(run(ctx, v, group) for v, group in groups.items()),
                             return_exceptions=True)
    except Exception:
        log.exception("inference: a take could not be handled")
    finally:
        if ack:
            for event in events:
                await stream.ack(event)


def agent(ctx: AppContext, topic, name: str, concurrency: int,
          run: Callable[..., Awaitable[None]] = serve) -> None:
    """An inference agent on `topic`: takes, at most `concurrency` of them in flight, acked in
    the order taken."""

    async def infer(stream):
        await ctx.registry.ready.wait()
        await ctx.crash_guard.checked.wait()  # crash loops are judged before any batch runs
        limit = asyncio.Semaphore(concurrency)
        # Batches run concurrently but are acked in the order they were taken, so the offsets
        # committed (the first run of consecutive acked ones: streams/topic_streams.py) never
        # pass a batch still running. In order, a crash only ever repeats work.
        pending: collections.deque[tuple[list, asyncio.Event]] = collections.deque()
        running: set[asyncio.Future] = set()

        async def ack_in_order() -> None:
            while pending and pending[0][1].is_set():
                done, _ = pending.popleft()
                for event in done:
                    await stream.ack(event)

        async def bounded(events: list, finished: asyncio.Event) -> None:
            try:
                await process(ctx, events, stream, ack=False, run=run)  # never raises
            except asyncio.CancelledError:
                limit.release()  # stopped mid-batch (the worker stops): not acked, read again
                raise
            finished.set()
            limit.release()
            await ack_in_order()

        # Take what the topic holds (up to `batch_max` events), not one backend batch: the
        # broker round trip and the acks are paid per take, the backend still gets batches of
        # `inference.batch_size` (handle_batch). Measured in bench/ (docs/concepts/batching.md).
        # A version with concurrency above 1 (a slow, remote backend) keeps takes of one
        # backend batch, N of them in flight, as before: its batches stay concurrent and a
        # rebalance or a crash repeats at most N of them. `inference.take_max` bounds others.
        take = ctx.config.inference.take_of(name.split(".", 1)[1], ctx.settings.batch_max)
        try:
            async for events in stream.noack_take(take, within=ctx.config.inference.batch_wait_s):
                BATCH_EVENTS.labels(agent="inference").observe(len(events))
                await limit.acquire()  # backpressure: no more than N batches in flight
                finished = asyncio.Event()
                pending.append((events, finished))
                if concurrency == 1:
                    await bounded(events, finished)
                else:
                    future = asyncio.ensure_future(bounded(events, finished))
                    running.add(future)
                    future.add_done_callback(running.discard)
        except asyncio.CancelledError:  # the worker stops: its batches stop too, unacked
            for future in running:
                future.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            raise
        except Exception:
            # The task restarts and reads its unacked events again: let the batches still
            # running finish first, so no request runs twice at once.
            if running:
                await asyncio.wait(set(running))
            raise

    # Read through the hops' own consumer (streams/topic_streams.py), not a Faust agent.
    stream = ctx.hops.stream(topic.get_topic_name())

    @ctx.task(name=name)
    async def run_agent() -> None:
        stream.rewind()  # a restart reads again what the last run did not ack
        await infer(stream)


def install(ctx: AppContext, version_id: str) -> None:
    """The agent `inference.<version_id>` on its version's topic."""
    agent(ctx, ctx.topics.inference[version_id], f"inference.{version_id}",
          ctx.config.inference.concurrency_of(version_id))


def install_pool(ctx: AppContext) -> None:
    """The agent `inference._pool` on the shared topic of the versions registered since the
    start (streams/flows/router.py `inference_topic_of` routes them there). Each version keeps
    its own concurrency limit, breaker, spec and backend; they share one agent, so a slow one
    delays the others of the pool (never a version with a topic of its own) until the next
    start gives each its own topic."""
    limits: dict[str, asyncio.Semaphore] = {}

    async def run(ctx: AppContext, version_id: str, pairs: list) -> None:
        limit = limits.get(version_id)
        if limit is None:
            limit = limits[version_id] = asyncio.Semaphore(
                ctx.config.inference.concurrency_of(version_id))
        async with limit:
            await serve(ctx, version_id, pairs)

    # In flight: `inference.concurrency._pool` takes, else max_concurrency as any version.
    agent(ctx, ctx.topics.pool, f"inference.{names.POOL}",
          ctx.config.inference.concurrency_of(names.POOL), run)


def register(ctx: AppContext) -> None:
    """One agent per version served at start (create_app's serving specs: each has a topic),
    and the pool's, for the versions registered since."""
    for version_id in ctx.topics.inference:
        install(ctx, version_id)
    install_pool(ctx)
    ctx.registry.listeners.append(lambda event: release_backend(ctx, event))


__all__ = ["backend_for", "by_version", "current_spec", "handle_batch", "outputs_for",
           "post_filter", "register", "serve"]
