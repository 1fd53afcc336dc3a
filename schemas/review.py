"""What users subscribe to, and how candidates compare with the stable version."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from .base import Event
from .inference import ChangeType, Finding, Risk, Role, Status


class ReviewFindings(Event):
    """The served result for one request, with the version that served it."""

    request_id: str
    task: str
    repo: str
    sha: str
    pull_request: int | None = None
    version_id: str
    role: Role
    status: Status
    fallback_from: str | None = None  # set when healing served it from another version
    change_type: ChangeType | None = None
    risk: Risk | None = None
    findings: list[Finding] = Field(default_factory=list)
    suggested_message: str | None = None
    latency_ms: float = 0.0
    error: str | None = None


class ShadowComparison(Event):
    request_id: str
    task: str
    stable_version: str
    candidate_version: str
    stable_status: Status
    candidate_status: Status
    label: str | None = None
    stable_label: str | None = None
    candidate_label: str | None = None
    change_type_agree: bool | None = None
    stable_findings: int = 0
    candidate_findings: int = 0
    overlap: int = 0
    precision: float | None = None  # candidate findings also found by stable
    recall: float | None = None  # stable findings also found by candidate
    latency_delta_ms: float = 0.0  # candidate - stable
    accepted_at: datetime | None = None  # the request's (InferenceRequest.accepted_at)
