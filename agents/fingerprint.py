"""Finding fingerprints: stable across line moves and reruns (rule + path + line content)."""

from __future__ import annotations

import hashlib
import posixpath

FINGERPRINT_CHARS = 16


def normalize_line(s: str) -> str:
    """Strip and collapse internal whitespace, so re-indenting or re-spacing keeps the identity."""
    return " ".join(s.split())


def normalize_path(path: str) -> str:
    """A posix, relative, `.`-free spelling, so `./a/b.py`, `a//b.py` and `a\\b.py` agree."""
    p = posixpath.normpath(path.replace("\\", "/")).lstrip("/")
    return "" if p == "." else p


def fingerprint(rule_id: str, path: str, line_content: str) -> str:
    """16 hex chars of sha256(rule, path, line). The line number is left out on purpose."""
    # NUL separators: no field can contain one after normalization of real inputs, so
    # ("ab", "c") and ("a", "bc") never collide.
    key = "\0".join((rule_id.strip(), normalize_path(path), normalize_line(line_content)))
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:FINGERPRINT_CHARS]
