"""Conventional Commits: read the `type:` prefix as a free ground-truth label, then mask it.

Pure functions, stdlib only. A subject `type(scope)!: description` whose type is one of
LABEL_MAP's keys (case-insensitive) gives the label; every such prefix is then removed from the
start of any line of the message (also after list bullets), so no version can read the label
back out of the text it is evaluated on. Unknown types (`wip:`, `Merge ...`, `Revert "..."`)
are no label and are left as written.
"""

from __future__ import annotations

import re

LABEL_MAP: dict[str, str] = {
    "fix": "bug_fix",
    "feat": "feature",
    "refactor": "refactor",
    "style": "refactor",
    "docs": "docs",
    "test": "test",
    "tests": "test",
    "perf": "performance",
    "build": "build_ci",
    "ci": "build_ci",
    "chore": "chore",
    "deps": "chore",
    "revert": "revert",
}

# Longest first so that `tests` is tried before `test`; the type must be followed directly by
# `(`, `!` or `:`, so `testing:` or `fixup:` never match `test` / `fix`.
_TYPES = "|".join(sorted((re.escape(t) for t in LABEL_MAP), key=len, reverse=True))
_PREFIX = rf"(?:{_TYPES})(?:\([^()\r\n]*\))?!?:[ \t]*"

# The subject: optional indentation, then one prefix (any word as type, so we can tell an
# unknown type from no prefix at all; only mapped types produce a label).
_SUBJECT_RE = re.compile(r"[ \t]*(?P<type>[A-Za-z]+)(?:\([^()\r\n]*\))?!?:[ \t]*")

# Any line: indentation, an optional bullet (`*`, `-`, `+`, `1.`, `1)`), then one or more
# mapped prefixes (`fix: feat: x` loses both).
_LINE_RE = re.compile(
    rf"^(?P<lead>[ \t]*(?:[-*+\u2022][ \t]+|\d{{1,3}}[.)][ \t]+)?)(?:{_PREFIX})+",
    re.IGNORECASE | re.MULTILINE,
)


def parse_prefix(message: str) -> tuple[str | None, str | None, str]:
    """(raw_type, label, message without the prefix) for a `type(scope)!: description` subject.

    raw_type is the type as written, lower-cased (`Fix` -> `fix`), so `style` and `refactor`
    stay distinguishable although both label `refactor`. The rest keeps the description and
    the whole body. An unknown or absent type gives (None, None, message) unchanged.
    """
    m = _SUBJECT_RE.match(message)
    if m is None:
        return None, None, message
    raw_type = m.group("type").lower()
    label = LABEL_MAP.get(raw_type)
    if label is None:
        return None, None, message
    return raw_type, label, message[m.end():]


def mask_prefixes(text: str) -> str:
    """Remove every mapped Conventional Commits prefix at the start of a line or after a bullet.

    `* fix: x` -> `* x`, `- feat(api)!: y` -> `- y`, `docs: z` -> `z`. Prefixes in the middle
    of a line, unknown types and all other text are left intact.
    """
    return _LINE_RE.sub(lambda m: m.group("lead"), text)


def mask_message(message: str) -> tuple[str | None, str | None, str]:
    """parse_prefix, then mask_prefixes on what is left: (raw_type, label, masked message)."""
    raw_type, label, rest = parse_prefix(message)
    return raw_type, label, mask_prefixes(rest)
