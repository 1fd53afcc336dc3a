"""Unified diff parsing (pure): which lines of the post-image each hunk added, per path."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .fingerprint import normalize_path

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


@dataclass
class FileDiff:
    path: str | None  # post-image path; None when the file was deleted
    old_path: str | None  # pre-image path; None when the file was added
    added: dict[int, str] = field(default_factory=dict)  # new line number -> text
    removed: list[str] = field(default_factory=list)


_QUOTED = re.compile(r'^"((?:[^"\\]|\\.)*)"')


def _unquote(body: str) -> str:
    """Undo git's C quoting ("b/caf\\303\\251.py"); octal escapes are UTF-8 bytes."""
    try:
        inner = body.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError:  # a malformed escape such as "\\x4": keep the text as written
        return body
    return inner.encode("latin-1", "replace").decode("utf-8", "replace")


def _header_path(rest: str, prefix: str) -> str | None:
    rest = rest.rstrip("\r")
    # `diff -u` appends "\t<timestamp>"; git quotes any name containing a tab.
    m = _QUOTED.match(rest)
    name = _unquote(m.group(1)) if m else rest.split("\t")[0]
    if name == "/dev/null":
        return None
    return normalize_path(name.removeprefix(prefix)) or None


def parse_diff(diff: str) -> list[FileDiff]:
    """Every file section of a unified diff, in order. Malformed or truncated input never raises."""
    files: list[FileDiff] = []
    current: FileDiff | None = None
    old_path: str | None = None
    old_left = new_left = 0  # lines still expected in the current hunk
    new_line = 0
    # split("\n"), not splitlines(): form feeds and U+2028 inside a line must not split it.
    for line in diff.split("\n"):
        if old_left > 0 or new_left > 0:
            tag = line[:1]
            if tag == "+":
                if current is not None:
                    current.added[new_line] = line[1:].rstrip("\r")
                new_line += 1
                new_left -= 1
                continue
            if tag == "-":
                if current is not None:
                    current.removed.append(line[1:].rstrip("\r"))
                old_left -= 1
                continue
            if tag == "\\":  # "\ No newline at end of file"
                continue
            if tag in (" ", ""):  # some tools strip the space of empty context lines
                new_line += 1
                old_left -= 1
                new_left -= 1
                continue
            old_left = new_left = 0  # not a hunk line: the hunk was truncated; fall through
        if line.startswith("--- "):
            old_path = _header_path(line[4:], "a/")
        elif line.startswith("+++ "):
            current = FileDiff(path=_header_path(line[4:], "b/"), old_path=old_path)
            files.append(current)
        elif m := _HUNK.match(line):
            old_left = int(m.group(2)) if m.group(2) is not None else 1
            new_line = int(m.group(3))
            new_left = int(m.group(4)) if m.group(4) is not None else 1
    return files


def added_lines(diff: str) -> dict[str, set[int]]:
    """Post-image line numbers that the diff added or changed, per (normalized) path."""
    result: dict[str, set[int]] = {}
    for f in parse_diff(diff):
        if f.path is not None:
            result.setdefault(f.path, set()).update(f.added)
    return result


def changed_paths(diff: str) -> list[str]:
    """Every path the diff touches (post-image path, or pre-image path for deletions)."""
    seen: dict[str, None] = {}
    for f in parse_diff(diff):
        p = f.path or f.old_path
        if p:
            seen.setdefault(p, None)
    return list(seen)
