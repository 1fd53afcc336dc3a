"""The lifecycle of a version: its states, the actions that move it, and the event of one move."""

from __future__ import annotations

from enum import Enum
from typing import Any, ClassVar

from pydantic import Field

from .base import Event


class VersionState(str, Enum):
    registered = "registered"
    shadow = "shadow"
    canary = "canary"
    stable = "stable"
    deprecated = "deprecated"
    quarantined = "quarantined"
    archived = "archived"


class LifecycleAction(str, Enum):
    register = "register"
    promote = "promote"
    demote = "demote"
    rollback = "rollback"
    quarantine = "quarantine"
    restore = "restore"
    traffic = "traffic"
    archive = "archive"
    # No state change: the rotation agent and the rotation/blocklist controls (issue 3).
    pause = "pause"  # the rotation agent never moves a paused version
    resume = "resume"
    hold = "hold"  # a recorded decision to leave a version where it is (with evidence)
    block = "block"  # add the version's backend/parameters to the blocklist
    unblock = "unblock"
    # No state change: new post-processing filters in the version's spec (`spec` carries the
    # whole spec; backend and params must stay). The false-positive filter (issue 4).
    update_spec = "update_spec"



# 2: one stable version per repository scope (agents/registry.py). The fold reads an event of
# schema version 1 (written before) by the rule it was decided on: one stable version per task.
LIFECYCLE_SCHEMA_VERSION = 2


class LifecycleEvent(Event):
    """A change of one version's state or traffic. The registry is the fold of these."""

    SUPPORTED_SCHEMA_VERSIONS: ClassVar[frozenset[int]] = frozenset({1, 2})
    schema_version: int = LIFECYCLE_SCHEMA_VERSION

    task: str
    version_id: str
    action: LifecycleAction
    from_state: VersionState | None = None
    to_state: VersionState
    traffic_percent: float = Field(default=0.0, ge=0.0, le=100.0)
    actor: str  # "rotation", "quarantine", "config", "user:<name>"
    reason: str = ""
    evidence: dict[str, Any] = Field(default_factory=dict)
    spec: dict[str, Any] | None = None  # the VersionSpec, on register
    # The registry position (state-changing events folded) this event was decided on. When
    # set, the fold skips the event if the registry has moved on since (optimistic
    # concurrency: a decision taken on a stale view never applies). None: no check.
    position: int | None = Field(default=None, ge=0)
