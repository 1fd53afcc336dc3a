"""Why the registry's fold skipped an event (agents/registry.py): a code callers can test and
the reason in words; and how an event written by a newer reviewbus is recognised, so that the
fold stops at it instead of folding it by older rules."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum

from schemas import LifecycleEvent


class SkipCode(str, Enum):
    """Why the fold skipped an event, as a code callers can test."""

    wrong_task = "wrong_task"  # the event is for another task
    duplicate = "duplicate"  # its event id was applied already
    stale = "stale"  # decided on a registry position that has moved on since
    unknown_version = "unknown_version"
    state_mismatch = "state_mismatch"  # from_state is not the version's current state
    wrong_target = "wrong_target"  # the action cannot name that target state
    illegal_transition = "illegal_transition"  # the state machine forbids the move
    canary_share = "canary_share"  # no traffic share, or the canary shares above 100 %
    nothing_to_restore = "nothing_to_restore"  # a rollback with no deprecated version
    already_registered = "already_registered"
    invalid_spec = "invalid_spec"  # missing, invalid, or not this version's or task's spec
    blocklisted = "blocklisted"
    second_stable = "second_stable"  # registering a stable version next to another
    no_change = "no_change"  # an in-place action that would change nothing
    newer_schema = "newer_schema"  # written by a newer reviewbus: the fold stops at it
    behind = "behind"  # after such an event: not folded either


@dataclass(frozen=True)
class Skip:
    """An event the fold did not apply: the code, the reason in words, and the event.

    str() is the one-line log form `<action> <version> (<event id>): <text>`; `text` is the
    reason alone, for messages that already name the action and version."""

    code: SkipCode
    text: str
    action: str
    version_id: str
    event_id: str

    def __str__(self) -> str:
        return f"{self.action} {self.version_id} ({self.event_id}): {self.text}"


def newer_schema_text(schema_version: object, event_id: str) -> str:
    known = ", ".join(str(v) for v in sorted(LifecycleEvent.SUPPORTED_SCHEMA_VERSIONS))
    return (f"lifecycle event {event_id} has schema version {schema_version}, this worker "
            f"folds {known}: a newer reviewbus wrote it; upgrade this worker")


def newer_schema_of(raw: bytes | str | None) -> int | None:
    """The schema version of a raw lifecycle event when it is one this code does not know (a
    newer reviewbus wrote it; it may not even validate here), else None (also for garbage,
    which readers skip as before)."""
    try:
        version = json.loads(raw or b"").get("schema_version")
    except (ValueError, AttributeError):
        return None
    if isinstance(version, int) and version not in LifecycleEvent.SUPPORTED_SCHEMA_VERSIONS:
        return version
    return None


__all__ = ["Skip", "SkipCode", "newer_schema_of", "newer_schema_text"]
