"""Suggested Conventional Commits subjects (pure, stdlib only): type from the model's label,
scope from the changed paths, summary from the message without its prefix.

`scope_from_paths` is a rule any project gets without training: dependency files -> `deps`,
otherwise the one directory or module every changed code path shares, with the repository's
generic roots (`src`, `lib`, `tests`, `docs`, the package directory of a `google/cloud/x`
layout ...) skipped, or no scope when the paths share none. `scope_from_history` learns a
repository's own scopes: the scope of the earlier commit whose changed paths overlap this
change's most (Jaccard of path tokens), when the overlap is high enough.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from schemas import NormalizedChange

from ..changetype import CONVENTIONAL_TYPES, SUBJECT_MAX
from ..conventional import parse_prefix

_GENERIC = {"src", "lib", "libs", "tests", "test", "docs", "doc", "samples", "sample", "examples",
            "google", "cloud", "pkg", "internal", "unit", "system", "integration", ".github",
            "workflows", "scripts", "tools", "python", "py", "commands", "utils"}
_DEP_FILE = re.compile(r"(^|/)(requirements[^/]*\.(txt|in)|poetry\.lock|uv\.lock|pipfile(\.lock)?|"
                       r"package(-lock)?\.json|constraints[^/]*\.txt|pdm\.lock)$", re.IGNORECASE)
_PREFIX = re.compile(r"^[A-Za-z]+(?:\([^)]*\))?!?:\s*")


def _stem(name: str) -> str:
    stem = name.rsplit(".", 1)[0]
    for pre in ("test_",):
        if stem.startswith(pre):
            stem = stem[len(pre):]
    return stem


def scope_from_paths(paths: Sequence[str]) -> str | None:
    """A scope every path agrees on, or None."""
    if not paths:
        return None
    if all(_DEP_FILE.search(p) for p in paths):
        return "deps"
    if all(p.startswith(".github/workflows/") for p in paths):
        return "ci"
    candidates: list[set[str]] = []
    for p in paths:
        parts = [x for x in p.lower().split("/") if x]
        names = {x for x in parts[:-1] if x not in _GENERIC and not x.startswith(".")}
        stem = _stem(parts[-1]) if parts else ""
        if stem and stem not in _GENERIC and stem not in ("__init__", "conftest", "readme"):
            names.add(stem)
        candidates.append(names)
    shared = set.intersection(*candidates) if candidates else set()
    if not shared:
        return None
    # the deepest shared name of the first path (most specific), in path order
    first = [x for x in paths[0].lower().split("/") if x]
    order = [x for x in first[:-1]] + [_stem(first[-1])]
    for name in reversed(order):
        if name in shared:
            return name
    return sorted(shared)[0]


def _tokens(paths: Sequence[str]) -> set[str]:
    return {p.lower() for p in paths} | {"/".join(p.lower().split("/")[:-1]) for p in paths}


def scope_from_history(paths: Sequence[str], history: Sequence[tuple[Sequence[str], str | None]],
                       min_overlap: float = 0.5) -> tuple[bool, str | None]:
    """(found, scope) from the most similar earlier commit (the newest on ties); found is
    False when none overlaps at least `min_overlap`."""
    mine = _tokens(paths)
    if not mine:
        return False, None
    best, scope = 0.0, None
    for their_paths, their_scope in history:  # oldest first: `>=` keeps the newest on ties
        theirs = _tokens(their_paths)
        if not theirs:
            continue
        j = len(mine & theirs) / len(mine | theirs)
        if j >= best:
            best, scope = j, their_scope
    return (True, scope) if best >= min_overlap else (False, None)


def summary_of(message: str) -> str:
    """The first non-empty line without a Conventional Commits prefix."""
    first = next((ln.strip() for ln in message.splitlines() if ln.strip()), "")
    _raw, _label, rest = parse_prefix(first)
    return _PREFIX.sub("", rest).strip()


def subject(label: str, change: NormalizedChange, scope: str | None) -> str:
    """`type(scope): summary`, at most SUBJECT_MAX characters."""
    ctype = CONVENTIONAL_TYPES.get(label, "chore")
    summary = summary_of(change.message)
    if not summary:
        paths = [f.path for f in change.files]
        summary = f"update {paths[0]}" if paths else "update"
    head = f"{ctype}({scope})" if scope else ctype
    out = f"{head}: {summary}"
    if len(out) > SUBJECT_MAX:
        out = out[: SUBJECT_MAX - 3].rstrip() + "..."
    return out
