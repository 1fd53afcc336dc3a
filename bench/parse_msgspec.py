"""InferenceResult as a msgspec.Struct, for bench/parse.py only: the same fields, enums,
numeric bounds and defaults, so msgspec's typed decode (with `strict=False`, pydantic's lax
coercions: "3.5" for a float, a number for a datetime) is measured doing the validation
pydantic does. Known difference: msgspec takes `true` for an int, pydantic refuses it.

No `from __future__ import annotations` here: msgspec resolves the annotations at run time.
"""

from datetime import UTC, datetime
from typing import Annotated

import msgspec

from schemas import Role, Status
from schemas.inference import Dimension, Severity

Unit = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class Finding(msgspec.Struct, forbid_unknown_fields=True):
    fingerprint: str
    dimension: Dimension
    severity: Severity
    confidence: Unit
    path: str
    line: Annotated[int, msgspec.Meta(ge=0)]
    rule_id: str
    message: str
    source: str
    end_line: int | None = None
    suggestion: str | None = None


class ChangeType(msgspec.Struct, forbid_unknown_fields=True):
    label: str
    confidence: Unit
    scores: dict[str, float] = {}


class Risk(msgspec.Struct, forbid_unknown_fields=True):
    score: Unit
    level: str


class Usage(msgspec.Struct, forbid_unknown_fields=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    model: str | None = None
    prompt_hash: str | None = None


class Result(msgspec.Struct):
    request_id: str
    task: str
    version_id: str
    role: Role
    status: Status
    latency_ms: Annotated[float, msgspec.Meta(ge=0.0)]
    schema_version: int = 1
    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] = "-"
    occurred_at: datetime = msgspec.field(default_factory=lambda: datetime.now(UTC))
    run_id: str | None = None
    label: str | None = None
    fallback_from: str | None = None
    attempt: int = 1
    change_type: ChangeType | None = None
    risk: Risk | None = None
    findings: list[Finding] = []
    suggested_message: str | None = None
    usage: Usage = msgspec.field(default_factory=Usage)
    error: str | None = None
    repo: str = ""
    sha: str = ""
    pull_request: int | None = None
    accepted_at: datetime | None = None
