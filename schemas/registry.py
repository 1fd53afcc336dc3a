"""The registry: every version of one task as folded from lifecycle events, and the blocklist."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from .base import Model
from .lifecycle import VersionState
from .versions import VersionSpec


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
    # Set when the fold met an event written by a newer reviewbus (a schema version it does
    # not know): it stops there rather than fold it, or anything after it, by the wrong rule.
    behind: str | None = None
