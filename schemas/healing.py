"""When a version fails: the failure, the quarantine it may lead to, and how requests were healed."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from .base import Event
from .inference import InferenceRequest


class FailureEvent(Event):
    request_id: str
    task: str
    version_id: str
    role: str
    status: str  # error | timeout | invalid_output
    error: str
    latency_ms: float = 0.0
    # The failed request, when it served users, so healing can re-send it elsewhere.
    request: InferenceRequest | None = None


class QuarantineEvent(Event):
    task: str
    version_id: str
    trigger: str  # consecutive_failures | error_rate | ...
    root_cause: str
    evidence: dict[str, Any] = Field(default_factory=dict)


class HealingAction(Event):
    task: str
    action: str  # fallback | rollback | filter
    version_id: str  # the version healed around
    target_version: str | None = None  # the version that took over
    request_id: str | None = None
    reason: str = ""
