"""Base of every event: frozen, versioned, identified, timestamped. Stdlib and pydantic only."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class Model(BaseModel):
    """Frozen value object; unknown fields are rejected so typos never pass silently."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Event(Model):
    """Every message on the bus is one Event, serialized as JSON."""

    # Events from newer producers may carry fields we do not know yet; ignore, never crash.
    model_config = ConfigDict(frozen=True, extra="ignore")
    SUPPORTED_SCHEMA_VERSIONS: ClassVar[frozenset[int]] = frozenset({1})

    schema_version: int = SCHEMA_VERSION
    event_id: str = Field(default_factory=new_id, min_length=1, max_length=128)
    occurred_at: datetime = Field(default_factory=utcnow)
