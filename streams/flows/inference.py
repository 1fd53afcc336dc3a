"""inference: one agent per version topic, so a slow candidate never delays the stable one."""

from __future__ import annotations

import asyncio

from agents.backends.base import Backend, build_backend
from agents.inference import run_batch
from schemas import FailureEvent, InferenceRequest, InferenceResult, Status, VersionSpec

from .. import topics
from ..app import app
from ..metrics import EVENTS, INFERENCE_SECONDS
from ..runtime import config, emit, log, runtime, send_to_dlq

_backends: dict[str, Backend] = {}
_backend_locks: dict[str, asyncio.Lock] = {}


async def backend_for(spec: VersionSpec) -> Backend:
    """Built once per worker, on first use, off the event loop (model loads can be slow)."""
    lock = _backend_locks.setdefault(spec.id, asyncio.Lock())
    async with lock:
        if spec.id not in _backends:
            _backends[spec.id] = await asyncio.to_thread(build_backend, spec)
    return _backends[spec.id]


def outputs_for(result: InferenceResult, request: InferenceRequest) -> list:
    out = [(topics.results, result.request_id, result)]
    if result.status != Status.ok:
        out.append((topics.failures, result.version_id, FailureEvent(
            request_id=result.request_id, task=result.task, version_id=result.version_id,
            role=result.role.value, status=result.status.value, error=result.error or "",
            latency_ms=result.latency_ms,
            request=request if request.role.serves_users else None)))
    return out


async def handle_batch(spec: VersionSpec, requests: list[InferenceRequest]) -> None:
    try:
        backend = await backend_for(spec)
        results = await run_batch(spec, backend, requests, runtime.breakers.get(spec.id))
    except Exception as exc:  # building the backend failed: every request fails, visibly
        log.exception("backend %s unavailable", spec.id)
        results = [InferenceResult(
            request_id=r.request_id, task=r.task, version_id=r.version_id, role=r.role,
            run_id=r.run_id, status=Status.error, latency_ms=0.0, label=r.label,
            fallback_from=r.fallback_from, attempt=r.attempt, error=f"backend unavailable: {exc}",
            repo=r.change.repo, sha=r.change.sha, pull_request=r.change.pull_request)
            for r in requests]
    outputs = []
    for request, result in zip(requests, results):
        INFERENCE_SECONDS.labels(version=spec.id, status=result.status.value).observe(
            result.latency_ms / 1000)
        outputs += outputs_for(result, request)
    await emit(outputs)
    EVENTS.labels(agent="inference", outcome="ok").inc(len(results))


def install(spec: VersionSpec):
    async def infer(stream):
        async for events in stream.noack_take(config.inference.batch_size,
                                              within=config.inference.batch_wait_s):
            requests, good = [], []
            for event in events:
                try:
                    requests.append(InferenceRequest.model_validate_json(event.value))
                    good.append(event)
                except Exception as exc:
                    await send_to_dlq(event, f"invalid InferenceRequest: {exc}", "inference")
            if requests:
                try:
                    await handle_batch(spec, requests)
                except Exception as exc:  # e.g. the broker refused the results: redeliver
                    log.exception("inference %s: batch failed, dead-lettering", spec.id)
                    for event in good:
                        await send_to_dlq(event, repr(exc), "inference")
            for event in events:
                await stream.ack(event)

    infer.__name__ = f"inference_{spec.id}"
    return app.agent(topics.inference[spec.id], name=f"inference.{spec.id}", concurrency=1)(infer)


agents = {spec.id: install(spec) for spec in config.versions}
