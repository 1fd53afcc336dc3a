"""What CI sends: commits and review requests, and the normalized change every model sees."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field, field_validator

from .base import Event, Model


class ChangedFile(Model):
    path: str = Field(min_length=1, max_length=1024)
    status: str = "modified"  # added, modified, deleted, renamed
    added: int | None = None  # None for binary files
    deleted: int | None = None
    # Post-image contents, bounded at the producer and again at intake; None when
    # deleted, binary, or over the limit.
    content: str | None = None
    content_truncated: bool = False


class CIRun(Model):
    provider: str | None = None
    run_id: str | None = None
    url: str | None = None
    job: str | None = None


class CommitEvent(Event):
    """One commit from CI. `message` is the full message as written (subject + body)."""

    repo: str = Field(min_length=1, max_length=512)
    sha: str = Field(min_length=4, max_length=64)
    branch: str | None = Field(default=None, max_length=512)
    pull_request: int | None = Field(default=None, ge=0)
    author: str | None = Field(default=None, max_length=512)
    # The commit's author date. `occurred_at` is when the event was sent; training data
    # ordered by time (temporal splits) needs when the change was written.
    authored_at: datetime | None = None
    message: str = Field(default="", max_length=200_000)
    diff: str = ""
    diff_truncated: bool = False
    files: list[ChangedFile] = Field(default_factory=list)
    ci: CIRun | None = None

    @field_validator("sha")
    @classmethod
    def _hex_sha(cls, v: str) -> str:
        if not all(c in "0123456789abcdefABCDEF" for c in v):
            raise ValueError("sha must be hexadecimal")
        return v.lower()


class ReviewRequest(CommitEvent):
    """A pull-request review: the head commit plus the range it covers."""

    base_sha: str | None = Field(default=None, max_length=64)
    shas: list[str] = Field(default_factory=list)


class NormalizedChange(Model):
    """The change as every version sees it: the Conventional Commits prefix is masked away."""

    repo: str
    sha: str
    pull_request: int | None = None
    branch: str | None = None
    author: str | None = None
    authored_at: datetime | None = None
    message: str  # prefix-masked
    diff: str
    diff_truncated: bool = False
    files: list[ChangedFile] = Field(default_factory=list)


class AcceptedChange(Event):
    """Intake's output: a validated request, its ground-truth label, and the masked change."""

    request_id: str
    task: str
    source_topic: str
    kind: str  # commit | review_request
    label: str | None = None  # from the Conventional Commits type, when present
    raw_type: str | None = None
    change: NormalizedChange
    # The original event as received (JSON), archived for replay beyond Kafka retention.
    raw: str
