"""bandit, kept warm.

bandit spends ~300 ms of every run importing itself and its plugins. A warm process does that
once and then analyses one commit per request, with the same isolation as a fresh run: our code
(bandit_server.py beside this file, run as `python -I <file>`: no cwd, script directory,
PYTHONPATH or user site on sys.path, so files in the analysed tree are never imported), a clean
environment, our config and ini file, the same rlimits (the CPU limit re-armed per request), a
wall-clock timeout per request that kills the process group, and a fresh process after
WARM_MAX_REQUESTS requests or any failure.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from ...errors import BackendError
from .sandbox import MAX_STDERR, MAX_TOOL_OUTPUT, ToolRun, kill_group, limit_resources, no_network, tool_env

WARM_MAX_REQUESTS = 200
SERVER = Path(__file__).resolve().with_name("bandit_server.py")


class WarmBandit:
    """One warm bandit process; used by one thread at a time (the pool hands it out)."""

    def __init__(self, home: Path, timeout_s: float) -> None:
        cpu_hard = (int(timeout_s) + 5) * (WARM_MAX_REQUESTS + 1)
        try:
            self.proc = subprocess.Popen(
                [*no_network(), sys.executable, "-I", str(SERVER)], cwd="/",
                env=tool_env(home),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=functools.partial(limit_resources, int(timeout_s) + 5, cpu_hard))
        except OSError as exc:
            raise BackendError(f"bandit: cannot start: {exc}") from exc
        self.requests = 0

    def _pipes(self) -> tuple[IO[bytes], IO[bytes]]:
        stdin, stdout = self.proc.stdin, self.proc.stdout
        if stdin is None or stdout is None:  # cannot happen: PIPE was requested
            raise BackendError("bandit: no pipes to the analyser process")
        return stdin, stdout

    def kill(self) -> None:
        if self.proc.poll() is None:
            kill_group(self.proc.pid)
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            self.proc.wait(timeout=5)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def run(self, argv: list[str], cwd: Path, home: Path, timeout_s: float) -> ToolRun:
        """BackendError on timeout, oversized output, or a process that died (then killed)."""
        report = home / "bandit-report.json"
        request = json.dumps({"argv": ["-o", str(report), *argv], "cwd": str(cwd),
                              "home": str(home), "cpu_s": int(timeout_s) + 5})
        self.requests += 1
        deadline = time.monotonic() + timeout_s
        try:
            stdin, stdout = self._pipes()
            stdin.write(request.encode() + b"\n")
            stdin.flush()
            reply = json.loads(self._answer(stdout.fileno(), deadline, timeout_s))
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

    def _answer(self, fd: int, deadline: float, timeout_s: float) -> bytes:
        """One answer line, read before the deadline and within its size bound."""
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
        return answer


class WarmPool:
    """Idle warm bandit processes of one backend, shared by its threads."""

    def __init__(self) -> None:
        self._idle: list[WarmBandit] = []
        self._lock = threading.Lock()

    def run(self, argv: list[str], cwd: Path, home: Path, timeout_s: float) -> ToolRun:
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is None or worker.proc.poll() is not None:
            worker = WarmBandit(home, timeout_s)
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
