"""Running `git`: a list of arguments (never a shell), an isolated configuration (no system or
global config, no GIT_* from the caller), the C locale, bounded output; failures become
one-line `GitError`s."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agents.errors import ReviewbusError

GIT_TIMEOUT_S = 120.0


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
        done = subprocess.run(args, input=input, capture_output=True, env=env,
                              timeout=GIT_TIMEOUT_S, check=False)
        return _Result(done.returncode, done.stdout, done.stderr.decode("utf-8", "replace"))
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

