import hashlib

import pytest

from agents.shadow import compare_results
from schemas import ChangeType, Finding, InferenceResult, Role, Status


def finding(fp):
    return Finding(fingerprint=fp, dimension="correctness", severity="medium", confidence=0.8,
                   path="a.py", line=1, rule_id="R1", message="m", source="t")


def result(vid, fps=(), label=None, status=Status.ok, latency=100.0, rid="req-1", **kw):
    return InferenceResult(
        request_id=rid, task="code-review", version_id=vid, role=Role.shadow, status=status,
        latency_ms=latency,
        change_type=ChangeType(label=label, confidence=0.9) if label else None,
        findings=[finding(f) for f in fps], **kw)


def test_agreement_overlap_precision_recall_latency():
    s = result("v1", ["a", "b", "c", "d"], "bug_fix", latency=120.0)
    c = result("v2", ["b", "c", "x"], "bug_fix", latency=150.5)
    cmp = compare_results(s, c, label="bug_fix")
    assert cmp.request_id == "req-1" and cmp.task == "code-review"
    assert (cmp.stable_version, cmp.candidate_version) == ("v1", "v2")
    assert cmp.change_type_agree is True
    assert (cmp.stable_label, cmp.candidate_label, cmp.label) == ("bug_fix", "bug_fix", "bug_fix")
    assert (cmp.stable_findings, cmp.candidate_findings, cmp.overlap) == (4, 3, 2)
    assert cmp.precision == pytest.approx(2 / 3)
    assert cmp.recall == pytest.approx(0.5)
    assert cmp.latency_delta_ms == pytest.approx(30.5)
    assert (cmp.stable_status, cmp.candidate_status) == (Status.ok, Status.ok)


def test_disagreement_and_missing_change_type():
    s, c = result("v1", label="feature"), result("v2", label="docs")
    assert compare_results(s, c).change_type_agree is False
    assert compare_results(s, result("v2")).change_type_agree is None
    assert compare_results(result("v1"), c).change_type_agree is None


def test_both_empty_is_full_agreement():
    cmp = compare_results(result("v1"), result("v2"))
    assert (cmp.precision, cmp.recall, cmp.overlap) == (1.0, 1.0, 0)


def test_candidate_empty_stable_not():
    cmp = compare_results(result("v1", ["a"]), result("v2"))
    assert cmp.precision is None and cmp.recall == 0.0


def test_stable_empty_candidate_not():
    cmp = compare_results(result("v1"), result("v2", ["a", "b"]))
    assert cmp.precision == 0.0 and cmp.recall is None


def test_duplicate_fingerprints_count_once():
    cmp = compare_results(result("v1", ["a", "a", "b"]), result("v2", ["a", "a"]))
    assert (cmp.stable_findings, cmp.candidate_findings, cmp.overlap) == (2, 1, 1)
    assert cmp.precision == 1.0 and cmp.recall == 0.5


def test_failed_side_has_no_precision_or_recall():
    cmp = compare_results(result("v1", ["a"]), result("v2", status=Status.timeout, latency=0))
    assert cmp.candidate_status == Status.timeout
    assert cmp.precision is None and cmp.recall is None
    assert cmp.stable_findings == 1 and cmp.candidate_findings == 0


def test_label_defaults_to_the_results_label():
    s = InferenceResult(request_id="r", task="t", version_id="v1", role=Role.primary,
                        status=Status.ok, latency_ms=1.0, label="docs")
    c = InferenceResult(request_id="r", task="t", version_id="v2", role=Role.shadow,
                        status=Status.ok, latency_ms=1.0, label="docs")
    assert compare_results(s, c).label == "docs"
    assert compare_results(s, c, label="test").label == "test"


def test_event_id_is_deterministic_for_redeliveries():
    s, c = result("v1", ["a"]), result("v2", ["a"])
    a, b = compare_results(s, c), compare_results(s, c)
    assert a.event_id == b.event_id
    assert a.event_id == hashlib.sha256(b"req-1|v1|v2").hexdigest()[:32]
    other = compare_results(result("v1", rid="req-2"), result("v2", rid="req-2"))
    assert other.event_id != a.event_id
    replay = compare_results(result("v1", run_id="run-9"), result("v2", run_id="run-9"))
    assert replay.event_id not in (a.event_id, other.event_id)


def test_results_of_different_requests_are_rejected():
    with pytest.raises(ValueError):
        compare_results(result("v1", rid="a"), result("v2", rid="b"))
