"""Requests to one version, and what that version answered."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

from pydantic import Field

from .base import Event, Model
from .change import NormalizedChange

CHANGE_TYPES = (
    "bug_fix", "feature", "refactor", "docs", "test",
    "performance", "build_ci", "chore", "revert",
)


class Role(str, Enum):
    primary = "primary"
    canary = "canary"
    shadow = "shadow"
    fallback = "fallback"
    replay = "replay"

    @property
    def serves_users(self) -> bool:
        return self in (Role.primary, Role.canary, Role.fallback)


class Status(str, Enum):
    ok = "ok"
    error = "error"
    timeout = "timeout"
    invalid_output = "invalid_output"


class Dimension(str, Enum):
    correctness = "correctness"
    security = "security"
    performance = "performance"
    maintainability = "maintainability"
    architecture = "architecture"
    testing = "testing"
    documentation = "documentation"


class Severity(str, Enum):
    critical = "critical"
    high = "high"
    medium = "medium"
    low = "low"
    info = "info"


SEVERITY_ORDER = {s: i for i, s in enumerate(Severity)}  # critical=0 ... info=4


class Finding(Model):
    fingerprint: str
    dimension: Dimension
    severity: Severity
    confidence: float = Field(ge=0.0, le=1.0)
    path: str
    line: int = Field(ge=0)
    end_line: int | None = None
    rule_id: str
    message: str
    source: str  # which tool or model produced it
    suggestion: str | None = None


class ChangeType(Model):
    label: str
    confidence: float = Field(ge=0.0, le=1.0)
    scores: dict[str, float] = Field(default_factory=dict)


class Risk(Model):
    score: float = Field(ge=0.0, le=1.0)
    level: str  # low | medium | high


class Usage(Model):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    model: str | None = None  # the model that answered (LLM backends), e.g. "ollama/qwen2.5-coder"
    prompt_hash: str | None = None  # sha256 (16 hex) of the exact prompt sent, for audit and grouping


class InferenceRequest(Event):
    request_id: str
    task: str
    version_id: str
    role: Role
    run_id: str | None = None  # set for replays
    deadline: datetime | None = None
    label: str | None = None  # ground truth, never shown to the model
    fallback_from: str | None = None  # the version whose failure caused this request
    attempt: int = 1
    tried: list[str] = Field(default_factory=list)  # versions that already failed this request
    change: NormalizedChange
    # When intake accepted the request (its AcceptedChange's occurred_at): the same on every
    # re-run of any stage, so the store can sort by it (infra/migrations/013_time_in_sort_keys.sql).
    accepted_at: datetime | None = None


class InferenceResult(Event):
    request_id: str
    task: str
    version_id: str
    role: Role
    run_id: str | None = None
    status: Status
    latency_ms: float = Field(ge=0.0)
    label: str | None = None
    fallback_from: str | None = None
    attempt: int = 1
    change_type: ChangeType | None = None
    risk: Risk | None = None
    findings: list[Finding] = Field(default_factory=list)
    suggested_message: str | None = None
    usage: Usage = Field(default_factory=Usage)
    error: str | None = None
    repo: str = ""
    sha: str = ""
    pull_request: int | None = None
    accepted_at: datetime | None = None  # the request's (InferenceRequest.accepted_at)
