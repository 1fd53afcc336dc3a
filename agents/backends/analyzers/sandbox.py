"""Where the analysers run: untrusted files staged safely, a clean environment, rlimits, no
network where the kernel allows it, a wall-clock timeout and bounded output.

The code under review is untrusted, and so is everything that came with it. Only `.py` files
are written (never a repository's pyproject.toml, ruff.toml, .bandit, setup.cfg, .pylintrc ...),
without following symlinks; the tools run as `python -I` or a plain binary in a clean
environment, in a new session, under CPU, memory and file-size limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from schemas import ChangedFile

from ...errors import BackendError

MAX_TOOL_OUTPUT = 8 * 1024 * 1024  # bytes of JSON we are willing to parse per tool run
MAX_STDERR = 64 * 1024

# ---------------------------------------------------------------- staging files safely


def safe_relpath(path: str) -> str | None:
    """A normalized relative path, or None for anything that could escape or confuse."""
    if not path or "\0" in path or "\\" in path or any(ord(c) < 32 for c in path):
        return None
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        return None
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or any(len(p.encode()) > 255 for p in parts):
        return None
    return "/".join(parts)


def _write_nofollow(root: Path, rel: str, data: bytes) -> None:
    """Create root/rel without following any symlink (openat-style walk, O_NOFOLLOW|O_EXCL)."""
    parts = rel.split("/")
    dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for part in parts[:-1]:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o700, dir_fd=dir_fd)
            next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = next_fd
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        fd = os.open(parts[-1], flags, 0o600, dir_fd=dir_fd)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    finally:
        os.close(dir_fd)


def stage_files(root: Path, files: list[ChangedFile], max_file_bytes: int) -> dict[str, str]:
    """Write the analysable Python files under root; return {relative path: content}.

    Anything unsafe or unsuitable is skipped, never an error: the rest is still analysed.
    """
    real_root = root.resolve()
    staged: dict[str, str] = {}
    for f in files:
        rel = safe_relpath(f.path)
        if rel is None or not rel.endswith(".py") or f.content is None or "\0" in f.content:
            continue
        data = f.content.encode("utf-8", "replace")  # lone surrogates cannot be written
        if len(data) > max_file_bytes or rel in staged:
            continue
        # Belt and braces: after resolving whatever already exists, still inside root.
        if not (real_root / rel).resolve().is_relative_to(real_root):
            continue
        try:
            _write_nofollow(real_root, rel, data)
        except OSError:  # symlink, a file where a directory should be, name too long ...
            continue
        staged[rel] = data.decode("utf-8")
    return staged


# ---------------------------------------------------------------- the process's surroundings


def limit_resources(cpu_s: int, cpu_hard: int | None = None) -> None:  # child, before exec
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_hard or cpu_s))
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 20, 16 << 20))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def tool_env(home: Path) -> dict[str, str]:
    """The whole environment of an analyser: nothing of the worker's is inherited."""
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "NO_COLOR": "1",
        "RAYON_NUM_THREADS": "2",  # ruff: bounded threads, bounded address space
    }


@functools.cache
def no_network() -> tuple[str, ...]:
    """The prefix that runs an analyser with no network: `unshare --net --`, a new network
    namespace with no interface but a loopback that is down. As root that just works;
    elsewhere unprivileged user namespaces may allow `unshare --map-root-user --net`. Where
    neither can be created, () and the analyser shares the worker's network (README)."""
    unshare = shutil.which("unshare")
    if unshare is None or not sys.platform.startswith("linux"):
        return ()
    for flags in (("--net",), ("--map-root-user", "--net")):
        prefix = (unshare, *flags, "--")
        try:
            probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=10,
                                   check=False)
        except (OSError, subprocess.SubprocessError):
            continue
        if probe.returncode == 0:
            return prefix
    return ()


def kill_group(pid: int) -> None:
    """SIGKILL a child started with start_new_session (its pgid is its pid) and its children."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


# ---------------------------------------------------------------- running a tool, bounded


@dataclass(frozen=True)
class ToolRun:
    returncode: int
    stdout: bytes
    stderr: bytes


async def _read_bounded(stream: asyncio.StreamReader, limit: int) -> tuple[bytes, bool]:
    """Up to `limit` bytes; the flag says there was more (the rest is left unread)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(65536):
        size += len(chunk)
        if size > limit:
            return b"".join(chunks), True
        chunks.append(chunk)
    return b"".join(chunks), False


async def _drain(stream: asyncio.StreamReader, keep: int) -> bytes:
    """Read to EOF so the child never blocks on a full pipe; keep only the first bytes."""
    kept = b""
    while chunk := await stream.read(65536):
        if len(kept) < keep:
            kept += chunk[: keep - len(kept)]
    return kept


async def run_tool(name: str, argv: list[str], cwd: Path, home: Path,
                   timeout_s: float) -> ToolRun:
    """Run one analyser; BackendError on timeout, oversized output, or failure to start."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *no_network(), *argv, cwd=cwd, env=tool_env(home), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            preexec_fn=functools.partial(limit_resources, int(timeout_s) + 5),
        )
    except OSError as exc:
        raise BackendError(f"{name}: cannot start: {exc}") from exc
    stdout, stderr = proc.stdout, proc.stderr
    if stdout is None or stderr is None:  # cannot happen: PIPE was requested; keeps mypy honest
        kill_group(proc.pid)
        raise BackendError(f"{name}: no output pipes")
    err_task = asyncio.ensure_future(_drain(stderr, MAX_STDERR))
    try:
        async with asyncio.timeout(timeout_s):
            out, overflow = await _read_bounded(stdout, MAX_TOOL_OUTPUT)
            if overflow:
                kill_group(proc.pid)  # not waited for yet: the pid is still ours
                raise BackendError(f"{name}: output over {MAX_TOOL_OUTPUT} bytes")
            returncode = await proc.wait()
            err = await err_task
    except TimeoutError as exc:
        raise BackendError(f"{name}: timed out after {timeout_s:g}s") from exc
    finally:  # timeout, overflow, or our caller was cancelled: leave no process behind
        if proc.returncode is None:
            kill_group(proc.pid)
        # asyncio's wait() also waits for EOF on the pipes; an unread, paused stdout never
        # gets there, so keep draining both (the child is dead: EOF comes at once).
        rest = asyncio.ensure_future(_drain(stdout, 0))
        if proc.returncode is None:
            await proc.wait()
        rest.cancel()
        err_task.cancel()
    return ToolRun(returncode, out, err)
