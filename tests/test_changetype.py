import math

import pytest

from agents.changetype import (
    classify_by_message,
    classify_by_paths,
    combine,
    from_scores,
    path_kind,
    risk_score,
    suggest_message,
)
from schemas import CHANGE_TYPES, ChangedFile, Finding, NormalizedChange


def change(paths=(), message="", diff="", files=None, truncated=False):
    files = files if files is not None else [ChangedFile(path=p) for p in paths]
    return NormalizedChange(repo="org/repo", sha="abcdef12", message=message, diff=diff,
                            diff_truncated=truncated, files=files)


def hunk(path, added=(), removed=()):
    body = "".join(f"-{t}\n" for t in removed) + "".join(f"+{t}\n" for t in added)
    return (f"--- a/{path}\n+++ b/{path}\n"
            f"@@ -1,{len(removed)} +1,{len(added)} @@\n{body}")


def assert_distribution(ct):
    assert set(ct.scores) == set(CHANGE_TYPES)
    assert math.isclose(sum(ct.scores.values()), 1.0, abs_tol=1e-9)
    assert ct.confidence == pytest.approx(ct.scores[ct.label])
    assert ct.label == max(ct.scores, key=ct.scores.get)


@pytest.mark.parametrize(("paths", "label"), [
    (["docs/guide.md", "README.rst"], "docs"),
    (["tests/test_x.py", "pkg/test_y.py", "conftest.py"], "test"),
    ([".github/workflows/ci.yml", "pyproject.toml", "requirements-dev.txt", "Dockerfile",
      "Makefile", "setup.cfg", "tox.ini", "noxfile.py", "setup.py"], "build_ci"),
    (["pkg/module.py"], "chore"),  # code, but the diff says nothing
])
def test_paths_alone(paths, label):
    ct = classify_by_paths(change(paths))
    assert ct.label == label
    assert_distribution(ct)


def test_path_kind():
    assert path_kind("docs/api/index.py") == "docs"
    assert path_kind("src/tests/helpers.py") == "test"
    assert path_kind("requirements.txt") == "build_ci"
    assert path_kind("src/app.py") == "code"


def test_new_def_is_feature():
    diff = hunk("pkg/a.py", added=["def new_thing(x):", "    return x"])
    assert classify_by_paths(change(["pkg/a.py"], diff=diff)).label == "feature"


def test_balanced_edit_with_fix_words_is_bug_fix_else_refactor():
    fix = hunk("pkg/a.py", removed=["    if x is None:", "        return x[0]"],
               added=["    if not x:", "        raise ValueError('empty')", "    return x[0]"])
    ref = hunk("pkg/a.py", removed=["    total = a + b", "    return total"],
               added=["    return a + b"])
    assert classify_by_paths(change(["pkg/a.py"], diff=fix)).label == "bug_fix"
    assert classify_by_paths(change(["pkg/a.py"], diff=ref)).label == "refactor"
    # Mostly additions, no new def or class: nothing to go on.
    grow = hunk("pkg/a.py", removed=["x = 1"], added=["x = 1", "y = 2", "z = 3"])
    assert classify_by_paths(change(["pkg/a.py"], diff=grow)).label == "chore"


def test_revert_wins():
    ct = classify_by_paths(change(["pkg/a.py"], message='Revert "add x"\n\nThis reverts commit 1.'))
    assert ct.label == "revert"


def test_paths_fall_back_to_the_diff_when_files_are_missing():
    ct = classify_by_paths(change(files=[], diff=hunk("docs/x.md", added=["hello"])))
    assert ct.label == "docs"


@pytest.mark.parametrize(("message", "label"), [
    ("Fix crash when the config is empty", "bug_fix"),
    ("Add support for YAML configs", "feature"),
    ("Rename helpers and simplify the loader", "refactor"),
    ("Typo in README", "docs"),
    ("Increase test coverage of the parser", "test"),
    ("Make tokenizer 3x faster", "performance"),
    ("Update CI workflow", "build_ci"),
    ("Bump dependency versions", "chore"),
    ('Revert "something"', "revert"),
    ("misc", "chore"),
    ("", "chore"),
    ("address review comments on docker setup", "docs"),  # "comment", not "add"/"doc"
])
def test_message_keywords(message, label):
    ct = classify_by_message(change(message=message))
    assert ct.label == label
    assert_distribution(ct)


def test_message_confidence_grows_with_hits_and_subject_counts_double():
    one = classify_by_message(change(message="fix it"))
    three = classify_by_message(change(message="fix bug crash"))
    assert three.confidence > one.confidence
    # Subject says feature (x2), body says fix once: feature wins.
    assert classify_by_message(change(message="add parser\n\nfix later")).label == "feature"
    # No keyword: chore by prior, with low confidence.
    assert classify_by_message(change(message="misc")).confidence < 0.2


def test_combine_averages_scores():
    a = from_scores({"docs": 1.0})
    b = from_scores({"docs": 1.0, "test": 3.0})
    c = combine(a, b)
    assert c.scores["docs"] == pytest.approx((1.0 + 0.25) / 2)
    assert c.scores["test"] == pytest.approx(0.75 / 2)
    assert c.label == "docs"
    assert_distribution(c)


def finding(severity):
    return Finding(fingerprint="0" * 16, dimension="security", severity=severity, confidence=0.9,
                   path="a.py", line=1, rule_id="bandit:B602", message="m", source="bandit")


def test_risk_levels_follow_size_findings_and_sensitive_paths():
    small = change(files=[ChangedFile(path="docs/x.md", added=1, deleted=0)])
    low = risk_score(small, [])
    assert low.level == "low" and low.score < 0.34
    big = change(files=[ChangedFile(path=f"auth/m{i}.py", added=60, deleted=40) for i in range(20)])
    high = risk_score(big, [finding("high"), finding("high")])
    assert high.level == "high" and high.score >= 0.67
    # Same change, findings only raise the score.
    assert risk_score(small, [finding("critical")]).score == pytest.approx(low.score + 0.35)


def test_risk_counts_diff_lines_when_files_carry_no_counts():
    diff = hunk("a.py", added=["x"] * 999, removed=["y"])
    assert risk_score(change(files=[], diff=diff), []).score == pytest.approx(0.35 + 0.15 / 20)


@pytest.mark.parametrize(("label", "prefix"), [
    ("bug_fix", "fix"), ("feature", "feat"), ("build_ci", "build"), ("performance", "perf"),
    ("docs", "docs"), ("refactor", "refactor"), ("test", "test"), ("chore", "chore"),
    ("revert", "revert"),
])
def test_suggest_message_prefix(label, prefix):
    assert suggest_message(label, change(message="  do the thing\n\nbody")) == f"{prefix}: do the thing"


def test_suggest_message_trims_to_72_and_never_doubles_the_prefix():
    long = suggest_message("feature", change(message="word " * 40))
    assert len(long) == 72 and long.startswith("feat: word") and long.endswith("...")
    assert suggest_message("bug_fix", change(message="fix(core): crash")) == "fix: crash"
    assert suggest_message("docs", change(["README.md"], message="")) == "docs: update README.md"
