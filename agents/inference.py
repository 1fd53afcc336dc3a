"""Run one version's backend on a batch of requests: timeout, breaker, poison isolation."""

from __future__ import annotations

import asyncio
import time

from schemas import InferenceRequest, InferenceResult, Status, VersionSpec

from .backends.base import Backend, Prediction
from .breaker import CircuitBreaker
from .errors import InvalidOutput


async def run_batch(spec: VersionSpec, backend: Backend, requests: list[InferenceRequest],
                    breaker: CircuitBreaker) -> list[InferenceResult]:
    """One result per request, in order. Never raises for backend failures."""
    if not requests:
        return []
    if not breaker.allow():
        return [_result(r, Status.error, 0.0, error="circuit open: version is failing")
                for r in requests]
    started = time.perf_counter()
    status, preds, error = await _call(spec, backend, requests)
    elapsed_ms = (time.perf_counter() - started) * 1000
    if status != Status.ok and len(requests) > 1:
        # One poison input must not fail its neighbours: retry each alone.
        out = []
        for r in requests:
            out.extend(await run_batch(spec, backend, [r], breaker))
        return out
    if status == Status.ok:
        breaker.record_success()
        return [_result(r, Status.ok, elapsed_ms, p) for r, p in zip(requests, preds)]
    breaker.record_failure()
    return [_result(r, status, elapsed_ms, error=error) for r in requests]


async def _call(spec: VersionSpec, backend: Backend, requests: list[InferenceRequest]
                ) -> tuple[Status, list[Prediction], str | None]:
    try:
        preds = await asyncio.wait_for(backend.infer([r.change for r in requests]),
                                       timeout=spec.timeout_s)
    except TimeoutError as exc:  # a backend's own timeout says more than the outer one
        return Status.timeout, [], str(exc)[:1000] or f"no answer within {spec.timeout_s:g} s"
    except InvalidOutput as exc:
        return Status.invalid_output, [], str(exc)[:1000]
    except Exception as exc:  # any backend failure becomes a result, never a crash
        return Status.error, [], f"{type(exc).__name__}: {exc}"[:1000]
    if len(preds) != len(requests) or not all(isinstance(p, Prediction) for p in preds):
        return Status.invalid_output, [], (
            f"backend returned {len(preds)} predictions for {len(requests)} requests")
    return Status.ok, preds, None


def _result(req: InferenceRequest, status: Status, latency_ms: float,
            pred: Prediction | None = None, error: str | None = None) -> InferenceResult:
    pred = pred or Prediction()
    return InferenceResult(
        request_id=req.request_id, task=req.task, version_id=req.version_id, role=req.role,
        run_id=req.run_id, status=status, latency_ms=round(latency_ms, 3), label=req.label,
        fallback_from=req.fallback_from, attempt=req.attempt,
        change_type=pred.change_type, risk=pred.risk, findings=pred.findings,
        suggested_message=pred.suggested_message, usage=pred.usage, error=error,
        repo=req.change.repo, sha=req.change.sha, pull_request=req.change.pull_request,
        accepted_at=req.accepted_at,
    )


__all__ = ["InvalidOutput", "run_batch"]
