"""findings: the ReviewFindings users subscribe to, built from a served, ok InferenceResult.

Published by the inference hop that holds the result (it used to be an agent of its own on
`results`: one hop, one parse and one produce-and-ack more per event for nothing)."""

from __future__ import annotations

from schemas import InferenceResult, ReviewFindings

from ..context import AppContext


def review_findings(r: InferenceResult) -> ReviewFindings:
    return ReviewFindings(
        request_id=r.request_id, task=r.task, repo=r.repo, sha=r.sha,
        pull_request=r.pull_request, version_id=r.version_id, role=r.role, status=r.status,
        fallback_from=r.fallback_from, change_type=r.change_type, risk=r.risk,
        findings=r.findings, suggested_message=r.suggested_message, latency_ms=r.latency_ms,
        error=r.error)


def register(ctx: AppContext) -> None:
    """No agent any more: inference publishes the findings of the results it produces
    (streams/flows/inference.py outputs_for), one hop fewer with nothing lost."""
