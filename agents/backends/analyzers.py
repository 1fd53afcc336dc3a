"""The default offline model: ruff and bandit over the changed Python files, in a sandbox.

The code under review is untrusted, and so is everything that came with it. Only `.py` files
are written (never a repository's pyproject.toml, ruff.toml, .bandit, setup.cfg, .pylintrc ...),
ruff runs `--isolated` with our `--select`, bandit runs with our own config and ini file and
`--ignore-nosec`, and both run as `python -I` / a plain binary in a clean environment, in a new
session, under CPU, memory and file-size limits, with a wall-clock timeout and bounded output.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import functools
import json
import os
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas import SEVERITY_ORDER, ChangedFile, Finding, NormalizedChange, Severity, VersionSpec

from ..changetype import (
    classify_by_message,
    classify_by_paths,
    combine,
    risk_score,
    suggest_message,
)
from ..diffparse import added_lines
from ..errors import BackendError, ConfigError
from ..fingerprint import fingerprint, normalize_path
from .base import Prediction

DEFAULT_RUFF_SELECT = ("E9", "F", "B", "S", "PERF", "UP", "SIM")
MAX_TOOL_OUTPUT = 8 * 1024 * 1024  # bytes of JSON we are willing to parse per tool run
MAX_STDERR = 64 * 1024
CONCURRENT_CHANGES = 2
_RULE_CODE = re.compile(r"^[A-Z]{1,6}[0-9]{0,4}$")
_CHANGE_TYPE_MODES = ("paths", "message", "combined")

# ---------------------------------------------------------------- parameters and filters


@dataclass(frozen=True)
class AnalyzerParams:
    ruff_select: tuple[str, ...] = DEFAULT_RUFF_SELECT
    bandit: bool = True
    change_type: str = "combined"
    only_changed_lines: bool = True
    tool_timeout_s: float = 20.0
    max_file_bytes: int = 400_000
    # Off by default: suppression comments, like nosec ones, are written by the author reviewed.
    honor_noqa: bool = False
    severity_overrides: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, version_id: str, raw: dict[str, Any]) -> AnalyzerParams:
        """Validate a spec's params; every mistake is a ConfigError naming the version."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"version {version_id}: unknown analyzers params {unknown}; "
                              f"known: {sorted(known)}")
        v = {**{k: f.default for k, f in cls.__dataclass_fields__.items()
                if k != "severity_overrides"}, "severity_overrides": {}, **raw}
        select, overrides = v["ruff_select"], v["severity_overrides"]
        checks = [
            (isinstance(select, list | tuple)
             and all(isinstance(c, str) and _RULE_CODE.match(c) for c in select),
             f"ruff_select must be a list of rule codes like 'F' or 'E501', got {select!r}"),
            (all(isinstance(v[k], bool) for k in ("bandit", "only_changed_lines", "honor_noqa")),
             "bandit, only_changed_lines and honor_noqa must be true or false"),
            (v["change_type"] in _CHANGE_TYPE_MODES,
             f"change_type must be one of {_CHANGE_TYPE_MODES}, got {v['change_type']!r}"),
            (isinstance(v["tool_timeout_s"], int | float) and not isinstance(
                v["tool_timeout_s"], bool) and 0 < v["tool_timeout_s"] <= 600,
             "tool_timeout_s must be a number in (0, 600]"),
            (isinstance(v["max_file_bytes"], int) and v["max_file_bytes"] > 0,
             "max_file_bytes must be a positive integer"),
            (isinstance(overrides, dict) and all(
                isinstance(sev, str) and sev in Severity.__members__ for sev in overrides.values()),
             f"severity_overrides values must be one of {list(Severity.__members__)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"version {version_id}: {message}")
        return cls(**{**v, "ruff_select": tuple(select),
                      "tool_timeout_s": float(v["tool_timeout_s"])})


def _validate_filters(version_id: str, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    checks = {
        "suppress_rule": lambda v: isinstance(v, str) or (
            isinstance(v, list) and all(isinstance(x, str) for x in v)),
        "suppress_path": lambda v: isinstance(v, str),
        "min_severity": lambda v: v in Severity.__members__,
        "min_confidence": lambda v: isinstance(v, int | float) and 0 <= v <= 1,
        "max_findings": lambda v: isinstance(v, int) and v >= 0,
    }
    for f in filters:
        if len(f) != 1 or next(iter(f)) not in checks or not checks[next(iter(f))](*f.values()):
            raise ConfigError(f"version {version_id}: bad filter {f!r}; each filter is one of "
                              f"{sorted(checks)} with a valid value")
    return filters


def apply_filters(findings: list[Finding], filters: list[dict[str, Any]]) -> list[Finding]:
    """Post-processing from the version spec, applied in the order written."""
    out = list(findings)
    for f in filters:
        (key, value), = f.items()
        if key == "suppress_rule":
            rules = {value} if isinstance(value, str) else set(value)
            out = [x for x in out if x.rule_id not in rules]
        elif key == "suppress_path":
            out = [x for x in out if not fnmatch.fnmatchcase(x.path, value)]
        elif key == "min_severity":
            limit = SEVERITY_ORDER[Severity(value)]
            out = [x for x in out if SEVERITY_ORDER[x.severity] <= limit]
        elif key == "min_confidence":
            out = [x for x in out if x.confidence >= value]
        elif key == "max_findings":
            # Keep the most severe, most confident; then restore the reading order.
            ranked = sorted(out, key=lambda x: (SEVERITY_ORDER[x.severity], -x.confidence,
                                                x.path, x.line, x.rule_id))
            keep = {id(x) for x in ranked[:value]}
            out = [x for x in out if id(x) in keep]
    return out


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


# ---------------------------------------------------------------- running a tool, bounded


def _limit_resources(cpu_s: int, cpu_hard: int | None = None) -> None:  # child, before exec
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_hard or cpu_s))
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 20, 16 << 20))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: pgid == pid


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


@dataclass(frozen=True)
class ToolRun:
    returncode: int
    stdout: bytes
    stderr: bytes


async def run_tool(name: str, argv: list[str], cwd: Path, home: Path,
                   timeout_s: float) -> ToolRun:
    """Run one analyser; BackendError on timeout, oversized output, or failure to start."""
    env = _tool_env(home)
    try:
        proc = await asyncio.create_subprocess_exec(
            *_no_network(), *argv, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            preexec_fn=functools.partial(_limit_resources, int(timeout_s) + 5),
        )
    except OSError as exc:
        raise BackendError(f"{name}: cannot start: {exc}") from exc
    stdout, stderr = proc.stdout, proc.stderr
    if stdout is None or stderr is None:  # cannot happen: PIPE was requested; keeps mypy honest
        _kill_group(proc)
        raise BackendError(f"{name}: no output pipes")
    err_task = asyncio.ensure_future(_drain(stderr, MAX_STDERR))
    try:
        async with asyncio.timeout(timeout_s):
            out, overflow = await _read_bounded(stdout, MAX_TOOL_OUTPUT)
            if overflow:
                _kill_group(proc)
                raise BackendError(f"{name}: output over {MAX_TOOL_OUTPUT} bytes")
            returncode = await proc.wait()
            err = await err_task
    except TimeoutError as exc:
        raise BackendError(f"{name}: timed out after {timeout_s:g}s") from exc
    finally:  # timeout, overflow, or our caller was cancelled: leave no process behind
        _kill_group(proc)
        # asyncio's wait() also waits for EOF on the pipes; an unread, paused stdout never
        # gets there, so keep draining both (the child is dead: EOF comes at once).
        rest = asyncio.ensure_future(_drain(stdout, 0))
        if proc.returncode is None:
            await proc.wait()
        rest.cancel()
        err_task.cancel()
    return ToolRun(returncode, out, err)


# ---------------------------------------------------------------- bandit, kept warm

# bandit spends ~300 ms of every run importing itself and its plugins. A warm process does that
# once and then analyses one commit per request, with the same isolation as a fresh run: our
# code (this string), `python -I` (no cwd, PYTHONPATH or user site on sys.path, so files in the
# analysed tree are never imported), a clean environment, our config and ini file, the same
# rlimits (the CPU limit re-armed per request), a wall-clock timeout per request that kills the
# process group, and a fresh process after WARM_MAX_REQUESTS requests or any failure.
WARM_MAX_REQUESTS = 200
_BANDIT_SERVER = r"""
import io, json, os, resource, sys
from bandit.cli import main as bandit_main
class Sink(io.StringIO):
    name = "<stdout>"  # the json formatter compares its file's name with stdout's
os.chdir("/")
reply = sys.stdout
for line in sys.stdin:
    req = json.loads(line)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    soft = int(usage.ru_utime + usage.ru_stime) + int(req["cpu_s"])
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard < 0 else min(soft, hard), hard))
    os.environ["HOME"] = req["home"]
    err = io.StringIO()
    sys.argv = ["bandit", *req["argv"]]
    sys.stdout, sys.stderr = Sink(), err
    code = 0
    try:
        os.chdir(req["cwd"])
        bandit_main.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:
        code = 70
        err.write(repr(exc))
    finally:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        os.chdir("/")
    reply.write(json.dumps({"rc": code, "stderr": err.getvalue()[-65536:]}) + "\n")
    reply.flush()
"""


def _tool_env(home: Path) -> dict[str, str]:
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "NO_COLOR": "1",
        "RAYON_NUM_THREADS": "2",  # ruff: bounded threads, bounded address space
    }


class _WarmBandit:
    """One warm bandit process; used by one thread at a time (the pool hands it out)."""

    def __init__(self, home: Path, timeout_s: float) -> None:
        cpu_hard = (int(timeout_s) + 5) * (WARM_MAX_REQUESTS + 1)
        try:
            self.proc = subprocess.Popen(
                [*_no_network(), sys.executable, "-I", "-c", _BANDIT_SERVER], cwd="/",
                env=_tool_env(home),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=functools.partial(_limit_resources, int(timeout_s) + 5, cpu_hard))
        except OSError as exc:
            raise BackendError(f"bandit: cannot start: {exc}") from exc
        self.requests = 0

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            self.proc.wait(timeout=5)
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()

    def run(self, argv: list[str], cwd: Path, home: Path, timeout_s: float) -> ToolRun:
        """BackendError on timeout, oversized output, or a process that died (then killed)."""
        report = home / "bandit-report.json"
        request = json.dumps({"argv": ["-o", str(report), *argv], "cwd": str(cwd),
                              "home": str(home), "cpu_s": int(timeout_s) + 5})
        self.requests += 1
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        try:
            self.proc.stdin.write(request.encode() + b"\n")
            self.proc.stdin.flush()
            answer = b""
            while not answer.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BackendError(f"bandit: timed out after {timeout_s:g}s")
                ready, _, _ = select.select([fd], [], [], left)
                if ready:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        raise BackendError("bandit: the analyser process died "
                                           f"(exit status {self.proc.wait(timeout=5)})")
                    answer += chunk
                    if len(answer) > 2 * MAX_STDERR + 4096:
                        raise BackendError("bandit: oversized answer")
            reply = json.loads(answer)
            size = report.stat().st_size if report.exists() else 0
            if size > MAX_TOOL_OUTPUT:
                raise BackendError(f"bandit: output over {MAX_TOOL_OUTPUT} bytes")
            out = report.read_bytes() if size else b""
        except (OSError, ValueError, subprocess.SubprocessError, BackendError) as exc:
            self.kill()
            if isinstance(exc, BackendError):
                raise
            raise BackendError(f"bandit: the analyser process failed: {exc}") from exc
        return ToolRun(int(reply.get("rc", 1)), out, str(reply.get("stderr", "")).encode())


class _WarmPool:
    """Idle warm bandit processes of one backend, shared by its threads."""

    def __init__(self) -> None:
        self._idle: list[_WarmBandit] = []
        self._lock = threading.Lock()

    def run(self, argv: list[str], cwd: Path, home: Path, timeout_s: float) -> ToolRun:
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is None or worker.proc.poll() is not None:
            worker = _WarmBandit(home, timeout_s)
        run = worker.run(argv, cwd, home, timeout_s)  # kills the process on any failure
        if worker.requests >= WARM_MAX_REQUESTS:
            worker.kill()
        else:
            with self._lock:
                self._idle.append(worker)
        return run

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()


@functools.cache
def _no_network() -> tuple[str, ...]:
    """The prefix that runs an analyser with no network (issue 4): `unshare --net --`, a new
    network namespace with no interface but a loopback that is down. As root that just works;
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


def _ruff_argv() -> list[str]:
    beside = Path(sys.executable).parent / "ruff"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    return [sys.executable, "-I", "-m", "ruff"]


def _tool_error(name: str, run: ToolRun) -> BackendError:
    tail = run.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
    return BackendError(f"{name} failed with exit status {run.returncode}: {' | '.join(tail)}")


def _parse_json(name: str, run: ToolRun) -> Any:
    try:
        return json.loads(run.stdout.decode("utf-8", "replace"))
    except ValueError as exc:
        raise BackendError(f"{name}: output is not JSON: {exc}") from exc


# ---------------------------------------------------------------- mapping tool output


def _ruff_dimension(code: str) -> str:
    letters = code.rstrip("0123456789")
    digits = code[len(letters):]
    if letters == "F" or letters == "B" or (letters == "E" and digits.startswith("9")):
        return "correctness"
    by_family = {"S": "security", "PERF": "performance", "D": "documentation", "PT": "testing"}
    return by_family.get(letters, "maintainability")


def _ruff_severity(code: str) -> str:
    if code in ("F821", "F811", "invalid-syntax") or code.startswith("E9"):
        return "high"
    return "medium" if code.startswith("F") and code[1:2].isdigit() else "low"


@dataclass
class _Raw:
    """A tool's finding before it becomes a Finding: what the mapping needs, nothing more."""

    source: str
    code: str
    path: str
    line: int
    end_line: int
    message: str
    severity: str
    confidence: float
    dimension: str
    suggestion: str | None


def _ruff_findings(items: list[dict[str, Any]], to_rel: dict[str, str]) -> list[_Raw]:
    out: list[_Raw] = []
    seen_syntax: set[str] = set()
    for item in items:
        rel = to_rel.get(os.path.normpath(str(item.get("filename", ""))))
        if rel is None:
            continue
        code = item.get("code") or "invalid-syntax"  # older ruff: null code for parse errors
        if code in ("invalid-syntax", "E999"):
            if rel in seen_syntax:  # one parse error explains the rest of the file
                continue
            seen_syntax.add(rel)
            code = "invalid-syntax"
        row = int((item.get("location") or {}).get("row") or 0)
        end = int((item.get("end_location") or {}).get("row") or row)
        fix = item.get("fix") or {}
        out.append(_Raw("ruff", code, rel, row, max(row, end), str(item.get("message", "")),
                        _ruff_severity(code), 0.8,
                        "correctness" if code == "invalid-syntax" else _ruff_dimension(code),
                        fix.get("message")))
    return out


_BANDIT_LEVEL = {"HIGH": "high", "MEDIUM": "medium", "LOW": "low"}
_BANDIT_CONFIDENCE = {"HIGH": 0.9, "MEDIUM": 0.6, "LOW": 0.3}


def _bandit_findings(report: dict[str, Any], to_rel: dict[str, str]) -> list[_Raw]:
    out: list[_Raw] = []
    for item in report.get("results") or []:
        rel = to_rel.get(os.path.normpath(str(item.get("filename", ""))))
        if rel is None:
            continue
        line = int(item.get("line_number") or 0)
        span = [int(x) for x in item.get("line_range") or [line]]
        out.append(_Raw("bandit", str(item.get("test_id", "B000")), rel, line,
                        max([line, *span]), str(item.get("issue_text", "")),
                        _BANDIT_LEVEL.get(item.get("issue_severity", ""), "info"),
                        _BANDIT_CONFIDENCE.get(item.get("issue_confidence", ""), 0.3),
                        "security", f"See {item['more_info']}" if item.get("more_info") else None))
    return out


def _line_text(content: str, line: int) -> str:
    # Same line breaks as the tools count: \r\n, \r and \n (not str.splitlines' extra ones).
    lines = content.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return lines[line - 1] if 1 <= line <= len(lines) else ""


# ---------------------------------------------------------------- the backend


class AnalyzerBackend:
    """params: ruff_select, bandit, change_type (paths|message|combined), only_changed_lines,
    tool_timeout_s, max_file_bytes, honor_noqa, severity_overrides {rule_id: severity}."""

    def __init__(self, spec: VersionSpec) -> None:
        self.spec = spec
        self.params = AnalyzerParams.parse(spec.id, dict(spec.params))
        self.filters = _validate_filters(spec.id, list(spec.filters))
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._bandit = _WarmPool()
        weakref.finalize(self, self._bandit.close)

    async def infer(self, batch: list[NormalizedChange]) -> list[Prediction]:
        return list(await asyncio.gather(*(self._predict(change) for change in batch)))

    async def close(self) -> None:
        await asyncio.to_thread(self._bandit.close)

    def _semaphore(self) -> asyncio.Semaphore:
        # One per event loop: a semaphore that ever waited is bound to the loop it waited on.
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, asyncio.Semaphore(CONCURRENT_CHANGES))
        return self._slots[1]

    async def _predict(self, change: NormalizedChange) -> Prediction:
        findings = apply_filters(await self._findings(change), self.filters)
        mode = self.params.change_type
        if mode == "paths":
            change_type = classify_by_paths(change)
        elif mode == "message":
            change_type = classify_by_message(change)
        else:
            change_type = combine(classify_by_paths(change), classify_by_message(change))
        return Prediction(
            change_type=change_type,
            risk=risk_score(change, findings),
            findings=findings,
            suggested_message=suggest_message(change_type.label, change),
        )

    async def _findings(self, change: NormalizedChange) -> list[Finding]:
        if not any(f.content is not None and f.path.endswith(".py") for f in change.files):
            return []  # nothing to analyse: spawn nothing
        async with self._semaphore():
            base = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="reviewbus-analyzers-"))
            try:
                return await self._analyse(change, base)
            finally:
                await asyncio.to_thread(shutil.rmtree, base, True)

    async def _analyse(self, change: NormalizedChange, base: Path) -> list[Finding]:
        src, home = base / "src", base / "home"  # analysed tree; our config lives beside it
        src.mkdir()
        home.mkdir()
        staged = await asyncio.to_thread(
            stage_files, src, list(change.files), self.params.max_file_bytes)
        if not staged:
            return []
        # Map whatever spelling a tool prints back to our relative path.
        to_rel: dict[str, str] = {}
        for rel in staged:
            to_rel[os.path.normpath(rel)] = rel
            to_rel[os.path.normpath(str(src / rel))] = rel
            to_rel[os.path.normpath(str(src.resolve() / rel))] = rel
        # "./" first: a file named "-x.py" must never read as an option.
        targets = [f"./{rel}" for rel in sorted(staged)]
        raws = await self._run_ruff(targets, src, home, to_rel)
        if self.params.bandit:
            raws += await self._run_bandit(targets, src, home, to_rel)
        return self._to_findings(change, staged, raws)

    async def _run_ruff(self, targets: list[str], src: Path, home: Path,
                        to_rel: dict[str, str]) -> list[_Raw]:
        if not self.params.ruff_select:
            return []
        argv = [*_ruff_argv(), "check", "--isolated", "--no-cache", "--no-fix", "--exit-zero",
                "--output-format", "json", f"--select={','.join(self.params.ruff_select)}"]
        if not self.params.honor_noqa:
            argv.append("--ignore-noqa")
        run = await run_tool("ruff", [*argv, *targets], src, home, self.params.tool_timeout_s)
        if run.returncode != 0:
            raise _tool_error("ruff", run)
        items = _parse_json("ruff", run)
        if not isinstance(items, list):
            raise BackendError("ruff: unexpected JSON output (not a list)")
        return _ruff_findings(items, to_rel)

    async def _run_bandit(self, targets: list[str], src: Path, home: Path,
                          to_rel: dict[str, str]) -> list[_Raw]:
        # Our config and an explicit (empty) ini: bandit then never looks for a .bandit file.
        config, ini = home / "bandit.yaml", home / "bandit.ini"
        config.write_text("exclude_dirs: []\n")
        ini.write_text("[bandit]\n")
        argv = ["-f", "json", "-q", "--exit-zero", "--ignore-nosec", "-c", str(config),
                "--ini", str(ini), *targets]
        run = await asyncio.to_thread(self._bandit.run, argv, src, home,
                                      self.params.tool_timeout_s)
        if run.returncode != 0:
            raise _tool_error("bandit", run)
        report = _parse_json("bandit", run)
        if not isinstance(report, dict):
            raise BackendError("bandit: unexpected JSON output (not an object)")
        return _bandit_findings(report, to_rel)

    def _to_findings(self, change: NormalizedChange, staged: dict[str, str],
                     raws: list[_Raw]) -> list[Finding]:
        wanted = self._reportable_lines(change, staged) if self.params.only_changed_lines else None
        overrides = self.params.severity_overrides
        findings = []
        for r in raws:
            if wanted is not None:
                lines = wanted.get(r.path)
                if lines is not None and not lines.intersection(range(r.line, r.end_line + 1)):
                    continue
            rule_id = f"{r.source}:{r.code}"
            findings.append(Finding(
                fingerprint=fingerprint(rule_id, r.path, _line_text(staged[r.path], r.line)),
                dimension=r.dimension, severity=overrides.get(rule_id, r.severity),
                confidence=r.confidence, path=r.path, line=r.line,
                end_line=r.end_line if r.end_line != r.line else None,
                rule_id=rule_id, message=r.message, source=r.source, suggestion=r.suggestion,
            ))
        findings.sort(key=lambda x: (x.path, x.line, x.rule_id))
        return findings

    @staticmethod
    def _reportable_lines(change: NormalizedChange, staged: dict[str, str]) -> dict[str, set[int] | None]:
        """Per path, the added lines; None (= every line) where the diff cannot tell us.

        A file missing from the diff is reported whole when it is new or when the diff was
        truncated (we cannot know better); otherwise nothing in it counts as changed.
        """
        by_path = {normalize_path(p): lines for p, lines in added_lines(change.diff).items()}
        status = {safe_relpath(f.path): f.status for f in change.files}
        out: dict[str, set[int] | None] = {}
        for rel in staged:
            if rel in by_path:
                out[rel] = by_path[rel]
            elif status.get(rel) == "added" or change.diff_truncated:
                out[rel] = None
            else:
                out[rel] = set()
        return out
