"""What a change-type model reads: one text and a few numbers per change (pure, stdlib only).

Training and inference build their input with the same function from the same
NormalizedChange, so a model never sees at serving time anything it did not see in training.
Every Conventional Commits prefix is masked again here (the message is masked at intake
already; the diff's changed lines are masked too, so a squash merge's `* fix: ...` lines or
a commit template can never hand the label to the model).
"""

from __future__ import annotations

import math
import re

from schemas import NormalizedChange

from ..changetype import path_kind
from ..conventional import mask_prefixes

MESSAGE_CHARS = 600
MAX_PATHS = 12
DIFF_CHARS = 4000
PATH_KINDS = ("docs", "test", "build_ci", "code")
_RELEASE_NAMES = re.compile(r"(^|/)(changelog|changes|history|news|release[-_]?notes)[^/]*$|"
                            r"(^|/)(version\.py|_version\.py|__version__\.py|version\.txt)$",
                            re.IGNORECASE)
_DEP_NAMES = re.compile(r"(^|/)(requirements[^/]*\.(txt|in)|pyproject\.toml|setup\.py|setup\.cfg|"
                        r"poetry\.lock|uv\.lock|pipfile(\.lock)?|package(-lock)?\.json|"
                        r"constraints[^/]*\.txt|noxfile\.py)$", re.IGNORECASE)
# Numeric features: fractions of files per kind, sizes (log), shape of the change.
FEATURE_NAMES = (
    "frac_docs", "frac_test", "frac_build_ci", "frac_code", "log_files", "log_added",
    "log_deleted", "added_share", "frac_release_files", "frac_dep_files", "frac_new_files",
    "log_message_chars",
)


def _paths(change: NormalizedChange) -> list[str]:
    if change.files:
        return [f.path for f in change.files]
    return re.findall(r"^\+\+\+ b/(.+)$", change.diff, re.MULTILINE)


def _counts(change: NormalizedChange) -> tuple[int, int]:
    added = sum(f.added or 0 for f in change.files)
    deleted = sum(f.deleted or 0 for f in change.files)
    if not change.files:
        lines = change.diff.split("\n")
        added = sum(1 for ln in lines if ln.startswith("+") and not ln.startswith("+++"))
        deleted = sum(1 for ln in lines if ln.startswith("-") and not ln.startswith("---"))
    return added, deleted


def features(change: NormalizedChange) -> list[float]:
    """FEATURE_NAMES, in order: all in [0, ~1.5], so a linear head needs no scaling."""
    paths = _paths(change)
    n = max(len(paths), 1)
    kinds = [path_kind(p) for p in paths]
    added, deleted = _counts(change)
    new_files = sum(1 for f in change.files if f.status == "added") if change.files else \
        change.diff.count("\nnew file mode")
    return [
        *(kinds.count(k) / n for k in PATH_KINDS),
        math.log1p(len(paths)) / math.log1p(200),
        math.log1p(added) / math.log1p(10_000),
        math.log1p(deleted) / math.log1p(10_000),
        added / (added + deleted) if added + deleted else 0.5,
        sum(1 for p in paths if _RELEASE_NAMES.search(p)) / n,
        sum(1 for p in paths if _DEP_NAMES.search(p)) / n,
        min(new_files / n, 1.0),
        math.log1p(len(change.message)) / math.log1p(10_000),
    ]


def _short_path(path: str) -> str:
    parts = path.split("/")
    return path if len(parts) <= 3 else "/".join([parts[0], "...", *parts[-2:]])


def changed_lines(diff: str, limit: int = DIFF_CHARS) -> str:
    """The diff reduced to what changed: a `file:` line per file, then its +/- lines (stripped),
    at most `limit` characters. Headers, context lines and hunk markers carry little signal
    per token."""
    out: list[str] = []
    size = 0
    for line in diff.split("\n"):
        if line.startswith("+++ ") or line.startswith("--- "):
            if line.startswith("+++ "):
                path = line[6:] if line.startswith("+++ b/") else line[4:]
                text = f"file: {_short_path(path.strip())}"
            else:
                continue
        elif line.startswith(("+", "-")):
            body = " ".join(line[1:].split())
            if not body:
                continue
            text = f"{line[0]} {mask_prefixes(body)}"  # `+* fix: x` -> `+ * x`
        else:
            continue
        out.append(text)
        size += len(text) + 1
        if size >= limit:
            break
    return "\n".join(out)[:limit]


def stats_line(change: NormalizedChange) -> str:
    paths = _paths(change)
    kinds = [path_kind(p) for p in paths]
    added, deleted = _counts(change)
    mix = ", ".join(f"{kinds.count(k)} {k}" for k in PATH_KINDS if kinds.count(k))
    return f"{len(paths)} files ({mix or 'none'}), +{added} -{deleted}"


def text_fields(change: NormalizedChange) -> tuple[str, str, str]:
    """(masked message, stats and changed paths, changed lines of the diff)."""
    message = mask_prefixes(change.message).strip()[:MESSAGE_CHARS]
    paths = _paths(change)
    shown = ", ".join(_short_path(p) for p in paths[:MAX_PATHS])
    if len(paths) > MAX_PATHS:
        shown += f", ... ({len(paths) - MAX_PATHS} more)"
    summary = f"stats: {stats_line(change)}\npaths: {shown or '(none)'}"
    return message or "(no message)", summary, changed_lines(change.diff)


def join_fields(fields: tuple[str, str, str]) -> str:
    """The encoder's text from `text_fields` (callers that hold the fields already)."""
    return "\n".join(fields)


def build_text(change: NormalizedChange) -> str:
    """Message (masked), diff stats, changed paths, then the changed lines of the diff.

    The most informative parts come first: a tokenizer cuts from the end.
    """
    return join_fields(text_fields(change))


_TOKEN = re.compile(r"[a-z0-9]+")
LEXICAL_DIM = 1 << 14
# "text": one bag of n-grams over build_text (the default, and the shipped adapter's);
# "fields": one bag per field (message, stats + paths, diff lines), hashed apart, so that
# `update` in a message and `update` in a diff are different features. It helped unseen
# projects on frozen embeddings but not with the LoRA encoder (README, Quality).
LEXICAL_SCHEMES = ("text", "fields")
_FIELD_NAMES = ("m", "p", "d")


def _grams(text: str) -> list[str]:
    words = _TOKEN.findall(text.lower())
    return words + [f"{a} {b}" for a, b in zip(words, words[1:])]


def _hashed(grams: list[str], dim: int, namespace: str = "") -> dict[int, float]:
    """crc32 buckets, sublinear counts, L2 norm 1. Deterministic across processes."""
    import zlib

    counts: dict[int, float] = {}
    for g in grams:
        k = zlib.crc32((namespace + g).encode()) % dim
        counts[k] = counts.get(k, 0.0) + 1.0
    if not counts:
        return {}
    weighted = {k: 1.0 + math.log(v) for k, v in counts.items()}
    norm = math.sqrt(sum(v * v for v in weighted.values()))
    return {k: v / norm for k, v in weighted.items()}


def lexical(text: str, dim: int = LEXICAL_DIM) -> dict[int, float]:
    """Hashed word unigrams and bigrams of `text`: the sparse input of the model's wide
    linear part (scheme "text")."""
    return _hashed(_grams(text), dim)


def lexical_fields(fields: tuple[str, str, str], dim: int = LEXICAL_DIM) -> dict[int, float]:
    """Scheme "fields" over `text_fields(change)`: each field's n-grams hashed in its own
    namespace, each field's vector scaled to norm 1/sqrt(3) (so the whole has norm <= 1)."""
    out: dict[int, float] = {}
    scale = 1.0 / math.sqrt(len(_FIELD_NAMES))
    for name, text in zip(_FIELD_NAMES, fields):
        for k, v in _hashed(_grams(text), dim, name + ":").items():
            out[k] = out.get(k, 0.0) + v * scale
    return out


def lexical_input(fields: tuple[str, str, str], dim: int, scheme: str) -> dict[int, float]:
    """The wide part's input from `text_fields(change)`, which the caller has built already
    for the encoder's text (build_text joins the same fields)."""
    if scheme == "fields":
        return lexical_fields(fields, dim)
    if scheme == "text":
        return lexical(join_fields(fields), dim)
    raise ValueError(f"unknown lexical scheme {scheme!r}; known: {LEXICAL_SCHEMES}")
