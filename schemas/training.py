"""Training jobs of the learning loop: one event per state change, stored in ClickHouse."""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import Field

from .base import Event


class JobState(str, Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


class TrainingJobEvent(Event):
    """A fine-tune job moved to `state`. The latest event of a job_id is its current state."""

    job_id: str = Field(min_length=1, max_length=128)
    task: str
    kind: str = "change_type"  # what is trained
    state: JobState
    data: str = ""  # the training data (a JSONL path or an export query)
    base: str = ""  # the base model directory
    out: str = ""  # where the adapter is written
    repos: list[str] = Field(default_factory=list)  # the scope; empty: every repository
    version_id: str | None = None  # the version the adapter is registered as
    params: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    actor: str = "cli"
