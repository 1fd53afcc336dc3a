"""A person's verdict on one finding: true or false positive."""

from __future__ import annotations

from pydantic import Field

from .base import Event


class Feedback(Event):
    fingerprint: str
    verdict: str = Field(pattern="^(true_positive|false_positive)$")
    version_id: str | None = None
    request_id: str | None = None
    actor: str = "user"
    note: str = ""
