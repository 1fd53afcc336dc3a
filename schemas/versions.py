"""A version is a spec: backend, parameters, filters. Registry entries are folded from events."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from .base import Model
from .ops import VersionState

VERSION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"


class VersionSpec(Model):
    id: str = Field(pattern=VERSION_ID_PATTERN)
    task: str = "code-review"
    backend: str  # analyzers | fake | transformers | litellm | ensemble
    params: dict[str, Any] = Field(default_factory=dict)
    filters: list[dict[str, Any]] = Field(default_factory=list)
    timeout_s: float = Field(default=30.0, gt=0)
    initial_state: VersionState = VersionState.shadow
    initial_traffic_percent: float = Field(default=0.0, ge=0, le=100)
    description: str = ""


class VersionEntry(Model):
    spec: VersionSpec
    state: VersionState
    traffic_percent: float = 0.0
    last_event_id: str | None = None
    previous_state: VersionState | None = None


class Registry(Model):
    """The derived state of every version of one task; never edited in place."""

    task: str
    versions: dict[str, VersionEntry] = Field(default_factory=dict)
    applied: int = 0  # how many lifecycle events were folded
    seen_event_ids: list[str] = Field(default_factory=list)
