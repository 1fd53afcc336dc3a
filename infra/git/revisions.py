"""Revisions: which commits a spec (`sha`, `A..B`, `--last N`) names, oldest first."""

from __future__ import annotations

import re
from pathlib import Path

from .runner import GitError, NotAGitRepository, UnknownRevision, _run, _text


def _check_repo(repo: Path | str) -> Path:
    path = Path(repo).expanduser()
    if not path.is_dir():
        raise NotAGitRepository(f"not a git repository: {path}")
    _run(path, "rev-parse", "--git-dir")
    return path


def _check_rev_text(rev: str) -> None:
    if not rev or rev.startswith("-") or any(c in rev for c in "\0\n\r"):
        raise UnknownRevision(f"unknown revision: {rev!r}")


def _resolve_commit(repo: Path, rev: str) -> str:
    """The full sha of the commit `rev` names (tags peeled), or UnknownRevision."""
    _check_rev_text(rev)
    res = _run(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", ok=(0, 1, 128))
    sha = _text(res.stdout).strip()
    if res.returncode != 0 or not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", sha):
        if rev == "HEAD" and _run(repo, "rev-parse", "--verify", "--quiet", "HEAD",
                                  ok=(0, 1, 128)).returncode != 0:
            raise UnknownRevision(f"unknown revision: HEAD (no commits yet in {repo})")
        raise UnknownRevision(f"unknown revision: {rev}")
    return sha


def _rev_list(repo: Path, *args: str) -> list[str]:
    res = _run(repo, "rev-list", "--first-parent", "--no-merges", *args)
    return _text(res.stdout).split()[::-1]  # oldest first


def resolve_revisions(repo: Path, spec: str | None, last: int | None = None) -> list[str]:
    """Full shas of the commits `spec` names, oldest first.

    - `A..B` (either end may be empty, meaning HEAD): the commits reachable from B and not
      from A, following first parents only, merges skipped.
    - a single revision (`HEAD`, a sha, `HEAD~3`, a tag): that one commit; with `last=N`, the
      last N non-merge first-parent commits ending at it.
    - None: HEAD; with `last=N`, the last N non-merge commits of HEAD (fewer if the history
      is shorter).

    `last` also caps a range to its newest N commits.
    """
    repo = _check_repo(repo)
    if last is not None and last < 1:
        raise GitError(f"last must be at least 1, got {last}")
    spec = spec.strip() if spec is not None else None
    if spec is not None and "..." in spec:
        raise GitError(f"symmetric ranges are not supported, use A..B: {spec}")
    if spec and ".." in spec:
        left, right = spec.split("..", 1)
        base = _resolve_commit(repo, left or "HEAD")
        tip = _resolve_commit(repo, right or "HEAD")
        shas = _rev_list(repo, f"{tip}", f"^{base}")
        return shas[-last:] if last is not None else shas
    tip = _resolve_commit(repo, spec or "HEAD")
    if last is None:
        return [tip]
    return _rev_list(repo, f"--max-count={last}", tip)


