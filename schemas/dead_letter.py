"""A message the bus could not accept, kept with why and where it came from."""

from __future__ import annotations

from .base import Event


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
