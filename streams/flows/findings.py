"""findings: publish the served result of each request to the topic users subscribe to."""

from __future__ import annotations

from schemas import InferenceResult, ReviewFindings, Status

from ..context import AppContext, emit, log
from ..metrics import EVENTS


def review_findings(r: InferenceResult) -> ReviewFindings:
    return ReviewFindings(
        request_id=r.request_id, task=r.task, repo=r.repo, sha=r.sha,
        pull_request=r.pull_request, version_id=r.version_id, role=r.role, status=r.status,
        fallback_from=r.fallback_from, change_type=r.change_type, risk=r.risk,
        findings=r.findings, suggested_message=r.suggested_message, latency_ms=r.latency_ms,
        error=r.error)


def register(ctx: AppContext) -> None:
    @ctx.agent(ctx.topics.results, name="findings")
    async def findings(stream):
        async for event in stream.events():
            try:
                result = InferenceResult.model_validate_json(event.value)
                # Failed served results are healing's business: it falls back or reports.
                if result.role.serves_users and result.status == Status.ok:
                    await emit([(ctx.topics.findings, result.repo, review_findings(result))])
                    EVENTS.labels(agent="findings", outcome="published").inc()
            except Exception as exc:
                log.exception("findings failed on one event")
                await ctx.send_to_dlq(event, repr(exc), "findings")
