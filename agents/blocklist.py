"""The blocklist: backend/parameter combinations that failed (the original design's archive of
failed technology). Registering a spec that matches an entry is refused with its reason.

Entries come from two places: the `blocklist:` section of the versions file (static rules,
e.g. a model that must never be used again) and the lifecycle topic (a quarantine blocks the
quarantined version's combination until it is restored; `reviewbus versions block` blocks one
by hand). Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas import VersionSpec
from schemas.registry import BlockEntry


class BlockRule(BaseModel):
    """One entry of the versions file's `blocklist:` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: str | None = None  # None: any backend
    params: dict[str, Any] = Field(default_factory=dict)  # a spec matches when it has these
    reason: str = Field(min_length=1)


def matches(entry: BlockEntry | BlockRule, spec: VersionSpec) -> bool:
    """True when the spec uses the entry's backend (if any) and has every one of its params
    with the same value; an entry with neither blocks nothing."""
    if entry.backend is None and not entry.params:
        return False
    if entry.backend is not None and entry.backend != spec.backend:
        return False
    return all(k in spec.params and spec.params[k] == v for k, v in entry.params.items())


def blocked_by(entries: Iterable[BlockEntry | BlockRule], spec: VersionSpec
               ) -> BlockEntry | BlockRule | None:
    return next((e for e in entries if matches(e, spec)), None)


def describe(entry: BlockEntry | BlockRule) -> str:
    """One line: what is blocked and why, for refusals and listings."""
    what = entry.backend or "any backend"
    if entry.params:
        what += " with " + ", ".join(f"{k}={v!r}" for k, v in sorted(entry.params.items()))
    source = getattr(entry, "source_version", None)
    origin = f" (from version {source})" if source else ""
    return f"{what}{origin}: {entry.reason or 'no reason recorded'}"


def entry_for(spec: VersionSpec, *, entry_id: str, reason: str, actor: str,
              added_at: datetime | None) -> BlockEntry:
    """The entry that blocks exactly this spec's backend and parameters."""
    return BlockEntry(id=entry_id, backend=spec.backend, params=dict(spec.params),
                      reason=reason, actor=actor, source_version=spec.id, added_at=added_at)


def static_entries(rules: Iterable[BlockRule]) -> list[BlockEntry]:
    return [BlockEntry(id=f"config:{i}", backend=r.backend, params=dict(r.params),
                       reason=r.reason, actor="config")
            for i, r in enumerate(rules)]
