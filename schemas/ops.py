"""Operational events: failures, quarantine, healing, lifecycle, feedback, dead letters."""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import Field

from .base import Event
from .inference import InferenceRequest


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


class LifecycleEvent(Event):
    """A change of one version's state or traffic. The registry is the fold of these."""

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


class Feedback(Event):
    fingerprint: str
    verdict: str = Field(pattern="^(true_positive|false_positive)$")
    version_id: str | None = None
    request_id: str | None = None
    actor: str = "user"
    note: str = ""


class DeadLetter(Event):
    """The raw bytes of a rejected message (base64 when not UTF-8), why, and where from."""

    source_topic: str
    partition: int
    offset: int
    key: str | None = None
    error: str
    payload: str
    payload_encoding: str = "utf-8"  # utf-8 | base64
    payload_size: int = 0
    payload_truncated: bool = False  # payloads over 1 MiB keep their first 1 MiB only
