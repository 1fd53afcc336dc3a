"""Single-process ownership of an embedded chDB directory: a file lock beside it."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class StoreLock:
    """Exclusive non-blocking flock on `<dir>.lock`: one process owns a chDB directory.

    The kernel drops a flock when its process dies, so a crash never leaves a stale lock.
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.path = self.directory.with_name(self.directory.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> bool:
        """True when this process now holds the lock, False when another process does."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # only for messages: who holds it
        self._fd = fd
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
