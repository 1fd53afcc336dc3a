"""Property-based fuzzing of intake (pure), for both input topics: whatever the bytes, intake
answers an AcceptedChange or an InvalidEvent with a one-line reason -- never another error --
and every rejected message makes a dead letter that gives the exact bytes back.

A few thousand cases in all (derandomized, so CI is repeatable); the real worker gets a
smaller batch of the same families in tests/test_fuzz_worker.py."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.errors import InvalidEvent
from agents.intake import MAX_PULL_REQUEST, accept_input, dead_letter
from agents.settings import Limits
from infra.rows import rows_for
from schemas import AcceptedChange

from .fuzzgen import FAMILIES

LIMITS = Limits(max_message_bytes=400_000, max_diff_chars=100_000, max_files=20,
                max_file_bytes=50_000, max_total_content_bytes=200_000)
KINDS = {"commit": "t.commits", "review_request": "t.review-requests"}
PROFILE = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                          HealthCheck.large_base_example])


def check(raw: bytes, kind: str) -> AcceptedChange | str:
    """The property: accepted and storable, or rejected with a reason and a faithful letter."""
    try:
        accepted = accept_input(raw, source_topic=KINDS[kind], kind=kind, task="code-review",
                                limits=LIMITS)
    except InvalidEvent as exc:
        reason = str(exc)
        assert reason and "\n" not in reason and len(reason) <= 2000
        letter = dead_letter(raw, error=f"intake: {reason}", topic=KINDS[kind], partition=0,
                             offset=7, key=b"k")
        body = (base64.b64decode(letter.payload) if letter.payload_encoding == "base64"
                else letter.payload.encode("utf-8"))
        assert body == raw and letter.payload_size == len(raw)
        assert letter.error.endswith(reason[:100]) or reason[:100] in letter.error
        rows_for(letter)  # the DLQ row can be written
        return reason
    # Accepted: within every limit, serializable, storable, and it round-trips.
    assert len(raw) <= LIMITS.max_message_bytes
    assert len(accepted.change.diff) <= LIMITS.max_diff_chars
    assert len(accepted.change.files) <= LIMITS.max_files
    assert all(len((f.content or "").encode("utf-8", "surrogatepass")) <= LIMITS.max_file_bytes
               for f in accepted.change.files)
    assert accepted.change.pull_request is None or 0 <= accepted.change.pull_request <= (
        MAX_PULL_REQUEST)
    text = accepted.model_dump_json()
    assert AcceptedChange.model_validate_json(text) == accepted
    json.loads(accepted.raw)
    rows_for(accepted)
    return accepted


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_intake_never_crashes(family, kind):
    outcomes = {"accepted": 0, "rejected": 0}

    @PROFILE
    @given(raw=FAMILIES[family])
    def run(raw: bytes) -> None:
        result = check(raw, kind)
        outcomes["accepted" if isinstance(result, AcceptedChange) else "rejected"] += 1

    run()
    assert sum(outcomes.values()) >= 100
    if family == "valid":
        assert outcomes["rejected"] == 0
    elif family in ("random_bytes", "truncated", "deep_nesting", "invalid_utf8"):
        assert outcomes["accepted"] == 0 or family == "deep_nesting"


@PROFILE
@given(raw=st.one_of(*FAMILIES.values()), kind=st.sampled_from(sorted(KINDS)))
def test_intake_never_crashes_on_a_mix(raw, kind):
    check(raw, kind)


@pytest.mark.parametrize("raw, reason", [
    (json.dumps({"repo": "r", "sha": "abcd", "schema_version": [1]}).encode(),
     "unsupported schema_version [1]"),
    (json.dumps({"repo": "r", "sha": "abcd", "schema_version": {"v": 1}}).encode(),
     "unsupported schema_version"),
    (json.dumps({"repo": "r", "sha": "abcd", "schema_version": True}).encode(),
     "unsupported schema_version True"),
    (json.dumps({"repo": "r", "sha": "abcd", "pull_request": 2**63}).encode(), "out of range"),
    (json.dumps({"repo": "r", "sha": "abcd", "event_id": "a\nb"}).encode(), "event_id"),
    (b'{"repo": "r", "sha": "abcd", "message": "\\ud800"}', "not valid JSON"),
    (b"[" * 5000, "not valid JSON"),
    (json.dumps({"repo": "r", "sha": "abcd", "diff": "d" * 100_001}).encode(),
     "REVIEWBUS_LIMIT_MAX_DIFF_CHARS"),
])
def test_what_fuzzing_found(raw, reason):
    """Cases the fuzzer found or that guard its findings: each a clean, named rejection."""
    with pytest.raises(InvalidEvent) as err:
        accept_input(raw, source_topic="t.commits", kind="commit", task="code-review",
                     limits=LIMITS)
    assert reason in str(err.value)
