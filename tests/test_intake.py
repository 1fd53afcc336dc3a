"""Intake (pure): what is accepted, what is rejected and why, and what models get to see."""

from __future__ import annotations

import base64
import json

import pytest

from agents.errors import InvalidEvent
from agents.intake import accept_input, dead_letter
from agents.settings import Limits
from schemas import CommitEvent

LIMITS = Limits()


def commit(**kw) -> bytes:
    base = {"repo": "acme/app", "sha": "a1b2c3d4", "message": "fix(api): handle None\n\nbody"}
    base.update(kw)
    return json.dumps(base).encode()


def accept(raw: bytes, limits: Limits = LIMITS, kind: str = "commit"):
    return accept_input(raw, source_topic="t.commits", kind=kind, task="code-review",
                        limits=limits)


def test_label_is_read_and_the_prefix_masked():
    a = accept(commit(message="fix(api)!: handle None\n\n* feat: sneaky squash line\nrest"))
    assert a.label == "bug_fix" and a.raw_type == "fix"
    assert a.change.message.startswith("handle None")
    assert "feat:" not in a.change.message and "sneaky squash line" in a.change.message
    assert json.loads(a.raw)["message"].startswith("fix(api)!:")  # archive keeps the original


def test_no_prefix_means_no_label():
    a = accept(commit(message="Update the readme"))
    assert a.label is None and a.change.message == "Update the readme"


def test_request_id_is_the_event_id():
    raw = commit(event_id="evt-1")
    assert accept(raw).request_id == "evt-1"


@pytest.mark.parametrize("raw, reason", [
    (b"", "empty message"),
    (b"{nope", "not valid JSON"),
    (b"[1, 2]", "expected a JSON object"),
    (commit(sha=12), "sha"),
    (commit(sha="zzzz"), "hexadecimal"),
    (commit(schema_version=99), "unsupported schema_version 99"),
    (commit(files=[{"path": "a.py", "added": "many"}]), "files.0.added"),
    (json.dumps({"sha": "abcd"}).encode(), "repo"),
])
def test_invalid_input_is_rejected_with_a_reason(raw, reason):
    with pytest.raises(InvalidEvent) as err:
        accept(raw)
    assert reason in str(err.value)


def test_limits_are_enforced_and_named():
    small = Limits(max_message_bytes=100)
    with pytest.raises(InvalidEvent, match="MAX_MESSAGE_BYTES"):
        accept(commit(diff="x" * 200), small)
    with pytest.raises(InvalidEvent, match="MAX_FILES"):
        accept(commit(files=[{"path": f"f{i}.py"} for i in range(5)]), Limits(max_files=3))
    with pytest.raises(InvalidEvent, match="MAX_FILE_BYTES"):
        accept(commit(files=[{"path": "a.py", "content": "x" * 50}]), Limits(max_file_bytes=10))
    with pytest.raises(InvalidEvent, match="MAX_DIFF_CHARS"):
        accept(commit(diff="y" * 50), Limits(max_diff_chars=10))


def test_unknown_fields_are_ignored_for_forward_compatibility():
    a = accept(commit(new_field_from_v2={"x": 1}))
    assert a.change.repo == "acme/app"


def test_review_requests_parse_as_such():
    a = accept(commit(shas=["a1b2c3d4"], base_sha="ffff0000"), kind="review_request")
    assert a.kind == "review_request"
    assert json.loads(a.raw)["base_sha"] == "ffff0000"


def test_dead_letter_keeps_text_or_base64_bytes():
    text = dead_letter(b"{bad", error="not valid JSON", topic="t", partition=1, offset=7,
                       key=b"k")
    assert (text.payload, text.payload_encoding, text.offset, text.key) == ("{bad", "utf-8", 7, "k")
    junk = b"\xff\x00\xfe"
    binary = dead_letter(junk, error="e", topic="t", partition=0, offset=0, key=None)
    assert binary.payload_encoding == "base64" and base64.b64decode(binary.payload) == junk
    huge = dead_letter(b"a" * (2 << 20), error="e", topic="t", partition=0, offset=0, key=None)
    assert huge.payload_truncated and huge.payload_size == 2 << 20 and len(huge.payload) == 1 << 20


def test_commit_event_round_trips():
    e = CommitEvent(repo="r", sha="ABCDEF12")
    assert e.sha == "abcdef12"
    assert CommitEvent.model_validate_json(e.model_dump_json()) == e
