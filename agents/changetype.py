"""Change-type classifiers, risk and suggested messages (pure, deterministic, no I/O).

Each classifier turns evidence into per-label votes on top of a small prior, then normalizes:
`scores` always covers every label in CHANGE_TYPES and sums to 1, so two classifiers can be
averaged and the confidence is simply the winning label's share.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

from schemas import CHANGE_TYPES, ChangeType, Finding, NormalizedChange, Risk

from .diffparse import changed_paths, parse_diff

# ---------------------------------------------------------------- scores -> ChangeType


def from_scores(votes: Mapping[str, float]) -> ChangeType:
    """Normalize votes over all labels; ties go to the label listed first in CHANGE_TYPES."""
    raw = {label: max(0.0, float(votes.get(label, 0.0))) for label in CHANGE_TYPES}
    total = sum(raw.values())
    if total <= 0:
        raw, total = {"chore": 1.0}, 1.0
    scores = {label: raw.get(label, 0.0) / total for label in CHANGE_TYPES}
    label = max(CHANGE_TYPES, key=lambda lbl: (scores[lbl], -CHANGE_TYPES.index(lbl)))
    return ChangeType(label=label, confidence=min(1.0, scores[label]), scores=scores)


def combine(*types: ChangeType) -> ChangeType:
    """Average the score vectors of several classifiers."""
    return from_scores({lbl: sum(t.scores.get(lbl, 0.0) for t in types) for lbl in CHANGE_TYPES})


# ---------------------------------------------------------------- by paths and diff

_DOC_SUFFIXES = (".md", ".rst", ".adoc", ".txt")
_DOC_NAMES = {"license", "license.txt", "changelog", "authors", "notice", "copying"}
_BUILD_NAMES = {
    "pyproject.toml", "setup.py", "setup.cfg", "tox.ini", "noxfile.py", "dockerfile",
    "makefile", "manifest.in", ".pre-commit-config.yaml", ".gitlab-ci.yml", "jenkinsfile",
    "poetry.lock", "uv.lock", "pipfile", "pipfile.lock", ".dockerignore", "docker-compose.yml",
    "docker-compose.yaml",
}
_BUILD_DIRS = (".github/workflows/", ".circleci/", ".gitlab/", "ci/")
_DEF = re.compile(r"^\s*(?:async\s+def|def|class)\s+\w")
_FIX_WORDS = re.compile(r"\b(fix\w*|bug\w*|error\w*|raise|except\w*|crash\w*|wrong)\b", re.IGNORECASE)


def path_kind(path: str) -> str:
    """One of docs, test, build_ci, code for a single path."""
    p = path.lower()
    name = p.rsplit("/", 1)[-1]
    parts = p.split("/")
    requirements = name.startswith("requirements") and name.endswith((".txt", ".in"))
    if (name in _BUILD_NAMES or p.startswith(_BUILD_DIRS) or requirements
            or name.startswith("dockerfile") or name.endswith(".cfg")):
        return "build_ci"
    if ("tests" in parts[:-1] or "test" in parts[:-1] or name.startswith("test_")
            or name.endswith("_test.py") or name == "conftest.py"):
        return "test"
    if "docs" in parts[:-1] or "doc" in parts[:-1] or name.endswith(_DOC_SUFFIXES) or name in _DOC_NAMES:
        return "docs"
    return "code"


def _change_paths(change: NormalizedChange) -> list[str]:
    return [f.path for f in change.files] or changed_paths(change.diff)


def _is_revert(message: str) -> bool:
    return message.lstrip().startswith("Revert") or "This reverts commit" in message


def classify_by_paths(change: NormalizedChange) -> ChangeType:
    """Heuristic on which files changed and what the diff adds or removes."""
    votes = dict.fromkeys(CHANGE_TYPES, 0.1)  # prior
    votes["chore"] = 0.15  # the fallback wins when there is no evidence at all
    kinds = [path_kind(p) for p in _change_paths(change)]
    # Some evidence from the mix of files, whatever the decision below.
    for kind in ("docs", "test", "build_ci"):
        if kinds:
            votes[kind] += 0.5 * kinds.count(kind) / len(kinds)
    diff = parse_diff(change.diff)
    added = [t for f in diff for t in f.added.values()]
    removed = [t for f in diff for t in f.removed]
    decided = _decide_by_paths(change, kinds, added, removed)
    votes[decided] += 1.0
    return from_scores(votes)


def _decide_by_paths(change: NormalizedChange, kinds: list[str], added: list[str],
                     removed: list[str]) -> str:
    if _is_revert(change.message):
        return "revert"
    non_code = [k for k in kinds if k != "code"]
    if kinds and len(non_code) == len(kinds):
        # Only docs, tests or build files: the most frequent kind (ties: docs, test, build_ci).
        return max(("docs", "test", "build_ci"), key=lambda k: non_code.count(k))
    new_defs = sum(1 for t in added if _DEF.match(t)) - sum(1 for t in removed if _DEF.match(t))
    if new_defs > 0:
        return "feature"
    if added and removed and min(len(added), len(removed)) / max(len(added), len(removed)) >= 0.5:
        return "bug_fix" if any(_FIX_WORDS.search(t) for t in added + removed) else "refactor"
    return "chore"


# ---------------------------------------------------------------- by message

# A keyword ending in "*" matches any word it begins; others match whole words only, so
# "add" does not fire on "address" and "doc" does not fire on "docker".
_KEYWORDS: dict[str, tuple[str, ...]] = {
    "bug_fix": ("fix*", "bug*", "error*", "crash*", "issue*", "broken", "wrong", "incorrect",
                "regression*", "hotfix*", "patch"),
    "feature": ("add", "adds", "added", "adding", "implement*", "support*", "new",
                "introduc*", "feature*", "allow*", "enable*"),
    "refactor": ("refactor*", "renam*", "cleanup", "clean", "simplif*", "move", "moves",
                 "moved", "moving", "restructur*", "reorganiz*", "extract*"),
    "docs": ("doc", "docs", "documentation", "docstring*", "readme*", "typo*", "comment*"),
    "test": ("test*", "coverage", "pytest", "unittest*"),
    "performance": ("perf", "performance", "speed*", "faster", "fast", "optimi*", "latency"),
    "build_ci": ("ci", "build*", "workflow*", "pipeline*", "dockerfile", "makefile"),
    "chore": ("chore*", "release*", "bump*", "deps", "dependency", "dependencies", "version*",
              "upgrade*", "update*"),
    "revert": ("revert*",),
}
_WORD = re.compile(r"[a-z0-9]+")


def _matches(word: str, keyword: str) -> bool:
    return word.startswith(keyword[:-1]) if keyword.endswith("*") else word == keyword


def _keyword_hits(text: str) -> dict[str, int]:
    hits = dict.fromkeys(CHANGE_TYPES, 0)
    for word in _WORD.findall(text.lower()):
        for label, keywords in _KEYWORDS.items():
            if any(_matches(word, k) for k in keywords):
                hits[label] += 1
    return hits


def classify_by_message(change: NormalizedChange) -> ChangeType:
    """Keyword votes from the (prefix-masked) message; the subject line counts double."""
    subject, _, body = change.message.strip().partition("\n")
    votes = dict.fromkeys(CHANGE_TYPES, 0.2)  # prior
    votes["chore"] = 0.25  # fallback when no keyword fires
    for label, n in _keyword_hits(subject).items():
        votes[label] += 2.0 * n
    for label, n in _keyword_hits(body).items():
        votes[label] += 1.0 * n
    if _is_revert(change.message):
        votes["revert"] += 5.0  # git's own revert message is unambiguous
    return from_scores(votes)


# ---------------------------------------------------------------- risk

_SEVERITY_WEIGHT = {"critical": 1.0, "high": 0.5, "medium": 0.2, "low": 0.05, "info": 0.0}
_SENSITIVE = re.compile(
    r"auth|security|crypt|passw|secret|token|login|permission|session|oauth|jwt|ssl|tls|"
    r"\.github/workflows|dockerfile|requirements|setup\.py|pyproject\.toml|migration",
    re.IGNORECASE,
)


def _lines_changed(change: NormalizedChange) -> int:
    counted = [(f.added or 0) + (f.deleted or 0) for f in change.files
               if f.added is not None or f.deleted is not None]
    if counted:
        return sum(counted)
    return sum(len(f.added) + len(f.removed) for f in parse_diff(change.diff))


def risk_score(change: NormalizedChange, findings: Iterable[Finding]) -> Risk:
    """Weighted: size 0.35 (log scale, 1000 lines = 1), files 0.15 (20 = 1), findings 0.35
    (severity-weighted, saturating), sensitive paths 0.15."""
    size = min(1.0, math.log1p(_lines_changed(change)) / math.log1p(1000))
    paths = _change_paths(change)
    spread = min(1.0, len(paths) / 20)
    severity = min(1.0, sum(_SEVERITY_WEIGHT.get(_sev(f), 0.0) for f in findings))
    sensitive = 1.0 if any(_SENSITIVE.search(p) for p in paths) else 0.0
    score = round(min(1.0, 0.35 * size + 0.15 * spread + 0.35 * severity + 0.15 * sensitive), 4)
    level = "high" if score >= 0.67 else "medium" if score >= 0.34 else "low"
    return Risk(score=score, level=level)


def _sev(f: Finding) -> str:
    return getattr(f.severity, "value", str(f.severity))


# ---------------------------------------------------------------- suggested message

CONVENTIONAL_TYPES = {
    "bug_fix": "fix", "feature": "feat", "refactor": "refactor", "docs": "docs", "test": "test",
    "performance": "perf", "build_ci": "build", "chore": "chore", "revert": "revert",
}
_EXISTING_PREFIX = re.compile(r"^[A-Za-z]+(?:\([^)]*\))?!?:\s*")
SUBJECT_MAX = 72


def suggest_message(label: str, change: NormalizedChange) -> str:
    """`<type>: <first line of the message>`, the whole subject at most 72 characters."""
    ctype = CONVENTIONAL_TYPES.get(label, "chore")
    first = next((ln.strip() for ln in change.message.splitlines() if ln.strip()), "")
    first = _EXISTING_PREFIX.sub("", first)  # never "fix: fix: ..."
    if not first:
        paths = _change_paths(change)
        first = f"update {paths[0]}" if paths else "update"
    subject = f"{ctype}: {first}"
    if len(subject) > SUBJECT_MAX:
        subject = subject[: SUBJECT_MAX - 3].rstrip() + "..."
    return subject
