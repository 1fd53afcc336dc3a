"""The consensus backend with fake members: agreement rules, confidence, change type, failures,
and how member ids in the versions file are resolved into the consensus version's spec."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest
import yaml

from agents.backends.base import build_backend
from agents.backends.consensus import ConsensusBackend, group_findings, merge_change_type
from agents.breaker import CircuitBreaker
from agents.errors import ConfigError
from agents.inference import run_batch
from infra.config_file import load_config
from schemas import (
    ChangedFile,
    ChangeType,
    Finding,
    InferenceRequest,
    NormalizedChange,
    Role,
    Status,
    VersionSpec,
)

CHANGE = NormalizedChange(repo="org/demo", sha="abc1", message="add a runner", diff="",
                          files=[ChangedFile(path="app/runner.py", status="added")])


def finding(**kw) -> dict:
    return {"path": "app/runner.py", "line": 3, "dimension": "correctness", "severity": "low",
            "confidence": 0.6, "rule_id": "R", **kw}


def member(vid: str, findings: list[dict] | None = None, scores: dict | None = None,
           **params) -> dict:
    p = {"finding_list": findings or [], "scores": scores or {"feature": 1.0},
         "suggested_message": f"feat: from {vid}", **params}
    return {"id": vid, "backend": "fake", "params": p, "timeout_s": 5}


def consensus(*members: dict, **params) -> VersionSpec:
    """A consensus version resolved the way the versions file resolves it."""
    versions = [{"id": "base", "backend": "fake", "initial_state": "stable"}, *members,
                {"id": "duo", "backend": "consensus", "timeout_s": 10,
                 "params": {"members": [m["id"] for m in members], **params}}]
    return load_config_from({"versions": versions}).spec("duo")


def load_config_from(data: dict):
    path = Path(tempfile.mkdtemp()) / "versions.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path)


def infer(spec: VersionSpec):
    backend = build_backend(spec)
    assert isinstance(backend, ConsensusBackend)
    req = InferenceRequest(request_id="r1", task="code-review", version_id=spec.id,
                           role=Role.shadow, change=CHANGE)
    [result] = asyncio.run(run_batch(spec, backend, [req], CircuitBreaker(failure_threshold=100)))
    return result


def test_security_and_critical_findings_need_every_member():
    sec_a = finding(dimension="security", severity="high", rule_id="bandit:B602", confidence=0.9)
    sec_b = finding(dimension="security", severity="medium", rule_id="llm:shell", confidence=0.7)
    crit = finding(line=9, severity="critical", rule_id="llm:data-loss", confidence=0.8)
    r = infer(consensus(member("a", [sec_a, crit]), member("b", [sec_b])))
    assert r.status == Status.ok, r.error
    by_rule = {f.rule_id: f for f in r.findings}
    assert set(by_rule) == {"bandit:B602", "llm:data-loss#needs-review"}
    agreed = by_rule["bandit:B602"]  # same path + line + dimension: both members
    assert agreed.severity.value == "medium"  # the severity both support
    assert agreed.confidence == pytest.approx((0.9 + 0.7) / 2 * 1.0)
    assert agreed.source == "consensus:a+b"
    flagged = by_rule["llm:data-loss#needs-review"]  # one member only: manual review
    assert flagged.severity.value == "info"
    assert flagged.confidence == pytest.approx(0.8 * 0.7)
    assert flagged.message.startswith("[needs review: critical correctness finding reported by "
                                      "1 of 2 members (a)]")
    assert flagged.source == "consensus:a"

    dropped = infer(consensus(member("a", [sec_a, crit]), member("b", [sec_b]),
                              on_disagreement="drop"))
    assert [f.rule_id for f in dropped.findings] == ["bandit:B602"]


def test_high_priority_findings_need_one_member_at_reduced_confidence():
    high = finding(severity="high", rule_id="ruff:F821", confidence=0.8, line=4)
    low_a = finding(rule_id="ruff:F401", confidence=0.5, line=1)
    low_b = finding(rule_id="ruff:F401", confidence=0.7, line=1)
    r = infer(consensus(member("a", [high, low_a]), member("b", [low_b])))
    by_rule = {f.rule_id: f for f in r.findings}
    assert set(by_rule) == {"ruff:F821", "ruff:F401"}
    assert by_rule["ruff:F821"].severity.value == "high"
    assert by_rule["ruff:F821"].confidence == pytest.approx(0.8 * 0.7)
    assert by_rule["ruff:F401"].confidence == pytest.approx(0.6)  # agreed: mean x 1.0


def test_fingerprints_match_across_line_moves_and_matching_is_one_to_one():
    same_fp = {"fingerprint": "f" * 16, "dimension": "security", "severity": "critical"}
    a = [Finding(**{**finding(line=10, rule_id="S1"), **same_fp, "source": "a", "message": "m",
                    "confidence": 0.5}),
         Finding(**finding(line=20, rule_id="S2"), source="a", message="m", fingerprint="1" * 16)]
    b = [Finding(**{**finding(line=12, rule_id="S1"), **same_fp, "source": "b", "message": "m",
                    "confidence": 0.5})]
    groups = group_findings([a, b])
    assert [sorted(g) for g in groups] == [[0, 1], [0]]
    # Two findings of one member on the same spot stay two findings.
    twins = [Finding(**finding(rule_id=r), source="a", message="m", fingerprint=r * 16)
             for r in ("x", "y")]
    assert len(group_findings([twins, []])) == 2


def test_change_type_is_the_average_of_member_scores():
    r = infer(consensus(member("a", scores={"bug_fix": 0.6, "feature": 0.4}),
                        member("b", scores={"feature": 0.9, "bug_fix": 0.1},
                               suggested_message="fix: nope"),
                        member("c", scores={"feature": 0.5, "docs": 0.5},
                               suggested_message="feat(cli): from c")))
    ct = r.change_type
    assert ct.label == "feature"
    assert ct.scores == pytest.approx({"feature": 0.6, "bug_fix": 0.2333, "docs": 0.1667},
                                      abs=1e-4)
    assert ct.confidence == pytest.approx(0.6)
    # the first member whose type matches the consensus label
    assert r.suggested_message == "feat: from a"
    assert merge_change_type([ChangeType(label="docs", confidence=0.8)]).scores == {"docs": 0.8}
    assert r.risk.score == pytest.approx(0.1)


def test_a_failing_member_fails_the_version_unless_a_quorum_is_allowed():
    r = infer(consensus(member("a", [finding(severity="high")]), member("b", mode="raise")))
    assert r.status == Status.error
    assert "consensus needs 2 member answers, got 1" in r.error and "b: BackendError" in r.error

    r = infer(consensus(member("a", [finding(severity="high", dimension="security")]),
                        member("b", mode="raise"), member("c"), min_members=2))
    assert r.status == Status.ok
    [f] = r.findings  # a security finding from one of the two that answered: flagged
    assert f.rule_id.endswith("#needs-review") and "1 of 2 members (a)" in f.message

    r = infer(consensus(member("a"), member("b", mode="invalid")))
    assert r.status == Status.invalid_output

    slow = member("b", sleep_ms=3000)
    slow["timeout_s"] = 0.2
    r = infer(consensus(member("a"), slow))
    assert r.status == Status.timeout and "no answer within 0.2 s" in r.error


def test_filters_of_the_consensus_version_apply_after_merging():
    spec = consensus(member("a", [finding(rule_id="ruff:F401")]),
                     member("b", [finding(rule_id="ruff:F401")]))
    spec = spec.model_copy(update={"filters": [{"suppress_rule": "ruff:F401"}]})
    assert infer(spec).findings == []


def test_members_are_resolved_from_the_versions_file():
    spec = consensus(member("a"), member("b"))
    assert spec.params["members"] == ["a", "b"]
    specs = [VersionSpec.model_validate(s) for s in spec.params["member_specs"]]
    assert [(s.id, s.backend, s.timeout_s) for s in specs] == [("a", "fake", 5), ("b", "fake", 5)]
    assert specs[0].params["suggested_message"] == "feat: from a"

    base = {"id": "base", "backend": "fake", "initial_state": "stable"}
    bad = [
        ({"members": ["base", "nope"]}, "'nope' is not a version of this file"),
        ({"members": ["base"]}, "2 or more"),
        ({"members": ["base", "duo"]}, "cannot be itself"),
    ]
    for params, message in bad:
        with pytest.raises(ConfigError, match=message):
            load_config_from({"versions": [base, {"id": "duo", "backend": "consensus",
                                                  "params": params}]})
    inline = load_config_from({"versions": [base, {"id": "duo", "backend": "consensus", "params": {
        "members": ["base", {"id": "side", "backend": "fake", "params": {"label": "docs"}}]}}]})
    assert [s["id"] for s in inline.spec("duo").params["member_specs"]] == ["base", "side"]
    again = type(inline).model_validate(inline.model_dump(mode="json"))  # resolving is idempotent
    assert again.spec("duo") == inline.spec("duo")
    with pytest.raises(ConfigError, match="not resolved"):
        build_backend(VersionSpec(id="duo", backend="consensus", params={"members": ["a", "b"]}))


def test_the_llm_example_file_loads():
    config = load_config(Path(__file__).resolve().parents[1] / "examples" / "versions-llm.yaml")
    duo = config.spec("duo")
    assert [s["id"] for s in duo.params["member_specs"]] == ["qwen-ollama", "analyzers-v1"]
    assert {v.backend for v in config.versions} == {"analyzers", "litellm", "consensus"}
