"""Intake: validate raw input bytes into an AcceptedChange, or say exactly why not (pure)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson
from pydantic import ValidationError

from schemas import (
    AcceptedChange,
    CommitEvent,
    DeadLetter,
    Event,
    NormalizedChange,
    ReviewRequest,
)

from .conventional import mask_message
from .errors import InvalidEvent
from .routing import cohort_key
from .settings import Limits

DLQ_PAYLOAD_LIMIT = 1 << 20


def record_time(timestamp: float | None) -> datetime | None:
    """A Kafka record's timestamp (seconds) as a UTC datetime, None when it has none."""
    if timestamp is None or timestamp <= 0:
        return None
    return datetime.fromtimestamp(timestamp, UTC)
MAX_PULL_REQUEST = 2**63 - 1  # stored as UInt64; anything above is no pull request number


def accept_input(raw: bytes | None, *, source_topic: str, kind: str, task: str,
                 limits: Limits, accepted_at: datetime | None = None) -> AcceptedChange:
    """Parse and check one input message. Raises InvalidEvent with a one-line reason.

    `accepted_at` (the input record's broker timestamp) becomes the AcceptedChange's
    occurred_at, so a redelivered record is accepted at the same time again: the store sorts
    results by it (infra/migrations/013_time_in_sort_keys.sql). None: now.

    Total: for any bytes at all this returns an AcceptedChange or raises InvalidEvent (the
    property tests/test_fuzz_intake.py checks), so one message can never stop the stream.
    """
    try:
        event = parse_input(raw, kind=kind, limits=limits)
        check_limits(event, limits)
    except InvalidEvent as exc:
        raise InvalidEvent(" ".join(str(exc).split())[:2000]) from exc.__cause__
    raw_type, label, message = mask_message(event.message)
    change = NormalizedChange(
        repo=event.repo, sha=event.sha, pull_request=event.pull_request, branch=event.branch,
        author=event.author, authored_at=event.authored_at, message=message, diff=event.diff,
        diff_truncated=event.diff_truncated, files=event.files,
    )
    return AcceptedChange(
        request_id=event.event_id, task=task, source_topic=source_topic, kind=kind,
        label=label, raw_type=raw_type, change=change,
        raw=event.model_dump_json(),
        **({"occurred_at": accepted_at} if accepted_at is not None else {}),
    )


def parse_input(raw: bytes | None, *, kind: str, limits: Limits) -> CommitEvent:
    if raw is None or not raw:
        raise InvalidEvent("empty message")
    if len(raw) > limits.max_message_bytes:
        raise InvalidEvent(f"message of {len(raw)} bytes exceeds the limit of "
                           f"{limits.max_message_bytes} bytes (REVIEWBUS_LIMIT_MAX_MESSAGE_BYTES)")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidEvent(f"expected a JSON object, got {type(data).__name__}")
    version = data.get("schema_version", 1)
    if (not isinstance(version, int) or isinstance(version, bool)
            or version not in Event.SUPPORTED_SCHEMA_VERSIONS):
        raise InvalidEvent(f"unsupported schema_version {version!r}; this worker reads "
                           f"{sorted(Event.SUPPORTED_SCHEMA_VERSIONS)}")
    model = ReviewRequest if kind == "review_request" else CommitEvent
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidEvent(f"invalid {model.__name__}: {_first_error(exc)}") from exc


def check_limits(event: CommitEvent, limits: Limits) -> None:
    if not all(c.isprintable() and not c.isspace() for c in event.event_id):
        raise InvalidEvent("event_id must be printable characters without spaces")
    if event.pull_request is not None and event.pull_request > MAX_PULL_REQUEST:
        raise InvalidEvent(f"pull_request {event.pull_request} is out of range "
                           f"(at most {MAX_PULL_REQUEST})")
    if len(event.diff) > limits.max_diff_chars:
        raise InvalidEvent(f"diff of {len(event.diff)} characters exceeds the limit of "
                           f"{limits.max_diff_chars} (REVIEWBUS_LIMIT_MAX_DIFF_CHARS)")
    if len(event.files) > limits.max_files:
        raise InvalidEvent(f"{len(event.files)} changed files exceed the limit of "
                           f"{limits.max_files} (REVIEWBUS_LIMIT_MAX_FILES)")
    total = 0
    for f in event.files:
        size = len(f.content.encode("utf-8", "surrogatepass")) if f.content else 0
        if size > limits.max_file_bytes:
            raise InvalidEvent(f"file {f.path!r} has {size} bytes of content, over the limit of "
                               f"{limits.max_file_bytes} (REVIEWBUS_LIMIT_MAX_FILE_BYTES)")
        total += size
    if total > limits.max_total_content_bytes:
        raise InvalidEvent(f"{total} bytes of file contents exceed the limit of "
                           f"{limits.max_total_content_bytes} "
                           "(REVIEWBUS_LIMIT_MAX_TOTAL_CONTENT_BYTES)")


def cohort_of(accepted: AcceptedChange) -> str:
    c = accepted.change
    return cohort_key(c.repo, c.pull_request, c.sha)


def dead_letter(raw: bytes | None, *, error: str, topic: str, partition: int, offset: int,
                key: bytes | None) -> DeadLetter:
    """The rejected message as it came (UTF-8 text, or base64 when it is not text)."""
    raw = raw or b""
    kept = raw[:DLQ_PAYLOAD_LIMIT]
    try:
        payload, encoding = kept.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        payload, encoding = base64.b64encode(kept).decode("ascii"), "base64"
    return DeadLetter(
        source_topic=topic, partition=partition, offset=offset,
        key=key.decode("utf-8", "replace") if key else None,
        error=error[:2000], payload=payload, payload_encoding=encoding,
        payload_size=len(raw), payload_truncated=len(raw) > DLQ_PAYLOAD_LIMIT,
    )


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or "(root)"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"
