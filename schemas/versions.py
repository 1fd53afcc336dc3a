"""A version is a spec: backend, parameters, filters, scope."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from .base import Model
from .lifecycle import VersionState

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
