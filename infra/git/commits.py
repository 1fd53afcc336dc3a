"""One commit as a `CommitEvent`: its metadata, its bounded diff and post-image contents."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from agents.settings import Limits
from schemas import ChangedFile, CommitEvent

from .revisions import _check_repo, _resolve_commit, resolve_revisions
from .runner import _run, _text

_MAX_MESSAGE_CHARS = 200_000  # CommitEvent.message max_length
_MAX_REPO_CHARS = 512
_STATUS = {"A": "added", "C": "added", "D": "deleted", "M": "modified", "R": "renamed",
           "T": "modified"}
_GITLINK_MODE = "160000"
_SYMLINK_MODE = "120000"


def repo_name_for(repo: Path) -> str:
    """`owner/name` from the `origin` remote URL's last two path parts, else the directory.

    Credentials in the URL (`https://user:token@host/...`) are never part of the result.
    """
    res = _run(repo, "config", "--get", "remote.origin.url", ok=(0, 1))
    url = _text(res.stdout).strip()
    name = _name_from_url(url) if url else ""
    if not name:
        top = _run(repo, "rev-parse", "--show-toplevel", ok=(0, 128))
        top_path = _text(top.stdout).strip() if top.returncode == 0 else ""
        base = Path(top_path) if top_path else Path(repo).resolve()
        name = base.name.removesuffix(".git") or base.name or "repository"
    return name[:_MAX_REPO_CHARS]


def _name_from_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if "://" in url:
        path = urlsplit(url).path
    elif re.match(r"^[^/\\]+:", url) and not re.match(r"^[A-Za-z]:[\\/]", url):
        path = url.split(":", 1)[1]  # scp-like: git@host:owner/name.git
    else:
        path = url  # a local path
    parts = [p for p in re.split(r"[/\\]+", path) if p and p not in (".", "..")]
    if not parts:
        return ""
    parts[-1] = parts[-1].removesuffix(".git")
    return "/".join(p for p in parts[-2:] if p)


def _branch_for(repo: Path, sha: str) -> str | None:
    """The current branch, when it contains `sha` (None when detached or unrelated)."""
    res = _run(repo, "symbolic-ref", "--quiet", "--short", "HEAD", ok=(0, 1, 128))
    branch = _text(res.stdout).strip()
    if res.returncode != 0 or not branch:
        return None
    contained = _run(repo, "merge-base", "--is-ancestor", sha, "HEAD", ok=(0, 1, 128))
    return branch[:512] if contained.returncode == 0 else None


_DIFF_OPTS = (
    "--no-color", "--no-ext-diff", "--no-textconv", "--no-relative", "--find-renames",
    "--diff-merges=first-parent", "--root",
)


def _diff(repo: Path, sha: str, max_chars: int) -> tuple[str, bool]:
    max_chars = max(0, max_chars)
    res = _run(repo, "show", "--format=", *_DIFF_OPTS, "-U3", "--src-prefix=a/",
               "--dst-prefix=b/", sha, "--", limit=4 * max_chars + 4)
    text = _text(res.stdout)
    if res.complete and len(text) <= max_chars:
        return text, False
    cut = text[:max_chars]
    end = cut.rfind("\n")
    return (cut[: end + 1] if end >= 0 else cut), True


@dataclass
class _Entry:
    path: str
    status: str
    mode: str = ""
    blob: str = ""
    added: int | None = None
    deleted: int | None = None
    binary: bool = False


def _changed(repo: Path, sha: str) -> list[_Entry]:
    raw = _run(repo, "show", "--format=", "--raw", "-z", "--no-abbrev", *_DIFF_OPTS, sha, "--")
    entries: list[_Entry] = []
    by_path: dict[str, _Entry] = {}
    tokens = raw.stdout.split(b"\0")
    i = 0
    while i < len(tokens):
        head = _text(tokens[i])
        i += 1
        if not head.startswith(":"):
            continue
        fields = head[1:].split()
        if len(fields) < 5:
            continue
        _old_mode, new_mode, _old_blob, new_blob, status = fields[:5]
        letter = status[:1]
        if letter in ("R", "C"):
            path = _text(tokens[i + 1]) if i + 1 < len(tokens) else ""
            i += 2
        else:
            path = _text(tokens[i]) if i < len(tokens) else ""
            i += 1
        if not path:
            continue
        entry = _Entry(path=path, status=_STATUS.get(letter, "modified"), mode=new_mode,
                       blob=new_blob)
        entries.append(entry)
        by_path[path] = entry

    num = _run(repo, "show", "--format=", "--numstat", "-z", *_DIFF_OPTS, sha, "--")
    tokens = num.stdout.split(b"\0")
    i = 0
    while i < len(tokens):
        tok = _text(tokens[i])
        i += 1
        if tok.count("\t") < 2:
            continue
        added, deleted, path = tok.split("\t", 2)
        if path == "":  # rename: "\0old\0new"
            path = _text(tokens[i + 1]) if i + 1 < len(tokens) else ""
            i += 2
        stat = by_path.get(path)
        if stat is None:
            continue
        if added == "-" or deleted == "-":
            stat.binary = True
        else:
            stat.added, stat.deleted = int(added), int(deleted)
    return entries


def _blob_sizes(repo: Path, blobs: list[str]) -> dict[str, int]:
    if not blobs:
        return {}
    res = _run(repo, "cat-file", "--batch-check", input="".join(f"{b}\n" for b in blobs).encode())
    sizes: dict[str, int] = {}
    for line in _text(res.stdout).splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "blob":
            sizes[parts[0]] = int(parts[2])
    return sizes


def _blob_contents(repo: Path, blobs: list[str]) -> dict[str, bytes]:
    """Contents of the given blobs, through one `git cat-file --batch`."""
    if not blobs:
        return {}
    res = _run(repo, "cat-file", "--batch", input="".join(f"{b}\n" for b in blobs).encode())
    out, pos, contents = res.stdout, 0, {}
    while pos < len(out):
        nl = out.find(b"\n", pos)
        if nl < 0:
            break
        header = _text(out[pos:nl]).split()
        pos = nl + 1
        if len(header) != 3:  # "<sha> missing"
            continue
        size = int(header[2])
        contents[header[0]] = out[pos:pos + size]
        pos += size + 1  # content, then a newline
    return contents


def _files(repo: Path, sha: str, limits: Limits) -> list[ChangedFile]:
    entries = _changed(repo, sha)[: max(0, limits.max_files)]
    regular = [e for e in entries if e.status != "deleted" and not e.binary
               and e.mode not in (_GITLINK_MODE, _SYMLINK_MODE) and e.blob.strip("0")]
    sizes = _blob_sizes(repo, sorted({e.blob for e in regular}))
    wanted: set[str] = set()
    over: set[str] = set()
    budget = max(0, limits.max_total_content_bytes)
    for e in regular:
        size = sizes.get(e.blob)
        if size is None:
            continue
        if e.blob in wanted:
            continue  # same content already counted
        if size > limits.max_file_bytes or size > budget:
            over.add(e.path)
            continue
        wanted.add(e.blob)
        budget -= size
    contents = _blob_contents(repo, sorted(wanted))
    readable = {id(e) for e in regular}
    files: list[ChangedFile] = []
    for e in entries:
        content: str | None = None
        truncated = e.path in over
        data = contents.get(e.blob) if id(e) in readable else None
        if data is not None and b"\0" not in data:
            content = _text(data)
        files.append(ChangedFile(
            path=e.path[:1024], status=e.status,
            added=None if e.binary else e.added,
            deleted=None if e.binary else e.deleted,
            content=content, content_truncated=truncated,
        ))
    return files


def commit_event(repo: Path, sha: str, *, repo_name: str | None = None,
                 pull_request: int | None = None, limits: Limits | None = None,
                 branch: str | None = None) -> CommitEvent:
    """A `CommitEvent` for one commit: message, author, branch, bounded diff and files.

    `branch` overrides the detected one (the current branch, if it contains the commit).
    """
    repo = _check_repo(repo)
    limits = limits or Limits()
    full = _resolve_commit(repo, sha)
    meta = _run(repo, "show", "-s", "--no-color", "--encoding=UTF-8",
                "--format=%an%x00%ae%x00%aI%x00%B", full, "--")
    name, email, date, message = (_text(meta.stdout).split("\0", 3) + ["", "", "", ""])[:4]
    author = f"{name} <{email}>" if email else name
    diff, diff_truncated = _diff(repo, full, limits.max_diff_chars)
    return CommitEvent(
        repo=repo_name or repo_name_for(repo),
        sha=full,
        branch=branch if branch is not None else _branch_for(repo, full),
        pull_request=pull_request,
        author=author[:512] or None,
        authored_at=datetime.fromisoformat(date) if date else None,  # git's strict ISO 8601
        message=message.rstrip("\n")[:_MAX_MESSAGE_CHARS],
        diff=diff,
        diff_truncated=diff_truncated,
        files=_files(repo, full, limits),
    )


def commit_events(repo: Path, spec: str | None, last: int | None = None, *,
                  repo_name: str | None = None, pull_request: int | None = None,
                  limits: Limits | None = None, branch: str | None = None) -> list[CommitEvent]:
    """`commit_event` for every commit `resolve_revisions(repo, spec, last)` names."""
    repo = _check_repo(repo)
    shas = resolve_revisions(repo, spec, last)
    name = repo_name or repo_name_for(repo)
    limits = limits or Limits()
    return [commit_event(repo, s, repo_name=name, pull_request=pull_request, limits=limits,
                         branch=branch) for s in shas]
