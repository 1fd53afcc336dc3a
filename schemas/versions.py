"""A version is a spec: backend, parameters, filters. Registry entries are folded from events."""

from __future__ import annotations

from datetime import datetime
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
    # Per-repository scope: a version with repositories listed serves (and shadows) only
    # requests of those repositories; empty means every repository.
    repos: list[str] = Field(default_factory=list)


class VersionEntry(Model):
    spec: VersionSpec
    state: VersionState
    traffic_percent: float = 0.0
    last_event_id: str | None = None
    previous_state: VersionState | None = None
    paused: bool = False  # set by a pause event: the rotation agent leaves the version alone
    since: datetime | None = None  # when the version entered its current state (or step)


class BlockEntry(Model):
    """A blocked backend/parameter combination: registering a matching spec is refused."""

    id: str  # the block event's id (or `config:N` for the versions file's blocklist)
    backend: str | None = None  # None: any backend
    params: dict[str, Any] = Field(default_factory=dict)  # matches specs with these values
    reason: str = ""
    actor: str = ""
    source_version: str | None = None  # the version whose failure put it here
    added_at: datetime | None = None


class Registry(Model):
    """The derived state of every version of one task; never edited in place."""

    task: str
    versions: dict[str, VersionEntry] = Field(default_factory=dict)
    applied: int = 0  # how many lifecycle events were folded
    seen_event_ids: list[str] = Field(default_factory=list)
    blocklist: list[BlockEntry] = Field(default_factory=list)
