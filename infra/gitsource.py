"""Build `CommitEvent`s from a local git repository, with `git` as a subprocess.

Every call runs `git` with a list of arguments (never a shell), an isolated configuration
(no system or global config, so a user's aliases, pagers, external diff drivers or textconv
filters cannot change the output) and the C locale. Failures become one-line
`ReviewbusError`s: "not a git repository: PATH", "unknown revision: X".

Bounds come from `agents.settings.Limits`: the diff is cut at a line end after
`max_diff_chars`; post-image contents are kept per file up to `max_file_bytes`, for at most
`max_files` files and `max_total_content_bytes` in total. Large outputs are never read whole.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from agents.errors import ReviewbusError
from agents.settings import Limits
from schemas import ChangedFile, CommitEvent

__all__ = [
    "GitError",
    "GitUnavailable",
    "NotAGitRepository",
    "UnknownRevision",
    "commit_event",
    "commit_events",
    "repo_name_for",
    "resolve_revisions",
]

GIT_TIMEOUT_S = 120.0
_MAX_MESSAGE_CHARS = 200_000  # CommitEvent.message max_length
_MAX_REPO_CHARS = 512
_STATUS = {"A": "added", "C": "added", "D": "deleted", "M": "modified", "R": "renamed",
           "T": "modified"}
_GITLINK_MODE = "160000"
_SYMLINK_MODE = "120000"


class GitError(ReviewbusError):
    """git failed on a repository, or was asked something it cannot answer."""


class GitUnavailable(GitError):
    """No `git` executable on PATH."""


class NotAGitRepository(GitError):
    """The path is not inside a git work tree or repository."""


class UnknownRevision(GitError):
    """A revision (sha, ref, `HEAD~3`, range end) that the repository does not have."""


# --- running git --------------------------------------------------------------------------

# Variables that would point git at another repository or inject configuration (set, for
# example, when running inside a git hook). Everything GIT_* is dropped, then these are set.
_ENV_OVERRIDES = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_PAGER": "cat",
    "PAGER": "cat",
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_OPTIONAL_LOCKS": "0",  # read-only: never take the index lock
    "GIT_LITERAL_PATHSPECS": "1",
    "LC_ALL": "C",
    "LANGUAGE": "C",
}


def _git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(_ENV_OVERRIDES)
    return env


@functools.lru_cache(maxsize=1)
def _user_safe_directories() -> tuple[str, ...]:
    """`safe.directory` entries from the user's own protected (system, global) config.

    Our calls ignore those files, so git's ownership check would otherwise refuse
    repositories the user has already declared safe (typical in CI containers).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_CONFIG")}
    env.update(LC_ALL="C", GIT_TERMINAL_PROMPT="0")
    found: list[str] = []
    for scope in ("--system", "--global"):
        try:
            proc = subprocess.run(
                ["git", "config", scope, "--get-all", "safe.directory"],
                capture_output=True, env=env, timeout=30, check=False, cwd=tempfile.gettempdir(),
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if proc.returncode == 0:
            found.extend(line for line in proc.stdout.decode("utf-8", "replace").splitlines()
                         if line)
    return tuple(found)


@dataclass
class _Result:
    returncode: int
    stdout: bytes
    stderr: str
    complete: bool = True  # False when stdout was cut at `limit`


def _base_args(repo: Path, safe_dirs: Sequence[str]) -> list[str]:
    args = ["git", "--no-pager", "-C", str(repo), "-c", "core.quotepath=off"]
    for d in safe_dirs:
        args += ["-c", f"safe.directory={d}"]
    return args


def _exec(args: list[str], *, input: bytes | None, limit: int | None) -> _Result:
    env = _git_env()
    if limit is None:
        proc = subprocess.run(args, input=input, capture_output=True, env=env,
                              timeout=GIT_TIMEOUT_S, check=False)
        return _Result(proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "replace"))
    # Bounded read: stop after `limit` bytes and end the process instead of buffering it all.
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=err, env=env)
        timer = threading.Timer(GIT_TIMEOUT_S, proc.kill)
        timer.start()
        try:
            assert proc.stdout is not None
            chunks: list[bytes] = []
            size = 0
            while size <= limit:
                chunk = proc.stdout.read(min(1 << 16, limit + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            complete = size <= limit
            if not complete:
                proc.kill()
            proc.stdout.close()
            rc = proc.wait()
        finally:
            timer.cancel()
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    out = b"".join(chunks)
    if not complete:
        return _Result(0, out[:limit], stderr, complete=False)
    return _Result(rc, out, stderr)


def _run(repo: Path, *args: str, input: bytes | None = None, limit: int | None = None,
         ok: Sequence[int] = (0,)) -> _Result:
    """Run `git ARGS` in `repo`; raise a one-line GitError unless the exit code is in `ok`."""
    try:
        res = _exec(_base_args(repo, ()) + list(args), input=input, limit=limit)
        if res.returncode != 0 and "dubious ownership" in res.stderr:
            safe = _user_safe_directories()
            if safe:
                res = _exec(_base_args(repo, safe) + list(args), input=input, limit=limit)
    except FileNotFoundError as exc:
        raise GitUnavailable("git is not installed or not on PATH") from exc
    except subprocess.TimeoutExpired as exc:
        raise GitError(f"git {args[0]} timed out after {GIT_TIMEOUT_S:.0f}s in {repo}") from exc
    except OSError as exc:
        raise GitError(f"cannot run git in {repo}: {exc}") from exc
    if res.returncode in ok:
        return res
    stderr = res.stderr
    if "not a git repository" in stderr or "cannot change to" in stderr:
        raise NotAGitRepository(f"not a git repository: {repo}")
    if "dubious ownership" in stderr:
        raise GitError(f"git refuses {repo}: it is owned by another user "
                       f"(run: git config --global --add safe.directory {repo})")
    detail = next((ln.strip() for ln in stderr.splitlines() if ln.strip()),
                  f"exit status {res.returncode}")
    detail = re.sub(r"^(fatal|error):\s*", "", detail)
    raise GitError(f"git {args[0]} failed in {repo}: {detail}")


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


# --- revisions ----------------------------------------------------------------------------


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


# --- one commit ---------------------------------------------------------------------------


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
        entry = by_path.get(path)
        if entry is None:
            continue
        if added == "-" or deleted == "-":
            entry.binary = True
        else:
            entry.added, entry.deleted = int(added), int(deleted)
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
