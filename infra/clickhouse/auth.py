"""The worker-hosted store's token: `<REVIEWBUS_HOME>/store.token`, mode 0600.

The worker serves its store over HTTP on its web port (served.py). Anyone on the machine can
reach that port, so both endpoints (`/store/query`, `/store/insert`) require
`Authorization: Bearer <token>`; whoever can read the token file (its owner: mode 0600 in the
owner's home) may query and insert, nobody else. The process that owns the store creates the
token once, at random, when it is absent (`ensure_token`); clients read it from the same home
(`read_token`). The server reads the file on each request (cached by its inode and mtime),
so replacing the file rotates the token without a restart. No file, no access: a server whose
token cannot be read or created refuses everything.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from pathlib import Path

TOKEN_FILE = "store.token"
TOKEN_BYTES = 32

_cache: dict[Path, tuple[tuple[int, int, int], str]] = {}


def token_path(home: Path | str) -> Path:
    return Path(home) / TOKEN_FILE


def read_token(home: Path | str) -> str | None:
    """The token in `<home>/store.token`, or None when there is none (or it cannot be read)."""
    try:
        token = token_path(home).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return token or None


def ensure_token(home: Path | str) -> str:
    """The token of this home, created (random, mode 0600) when absent or empty. A token
    file readable by others is tightened to 0600. Safe against a concurrent creator: the
    file appears whole (written aside, then hard-linked into place) or not at all."""
    path = token_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        try:
            info = path.lstat()
        except FileNotFoundError:
            info = None
        if info is not None:
            if not stat.S_ISREG(info.st_mode):
                raise OSError(f"{path} is not a regular file")
            if info.st_mode & 0o077:
                os.chmod(path, 0o600)
            token = read_token(home)
            if token:
                return token
            path.unlink(missing_ok=True)  # empty: write a fresh one
        token = secrets.token_urlsafe(TOKEN_BYTES)
        aside = path.with_name(f".{TOKEN_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (token + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(aside, path)
            return token
        except FileExistsError:
            continue  # another process created it meanwhile: read theirs
        finally:
            aside.unlink(missing_ok=True)
    raise OSError(f"cannot create {path}")


def server_token(home: Path | str) -> str | None:
    """The token the server checks against: the file's content, re-read when it changes,
    created when absent; None when it can be neither read nor created (refuse everything)."""
    path = token_path(home)
    try:
        info = path.stat()
    except FileNotFoundError:
        try:
            ensure_token(home)
            info = path.stat()
        except OSError:
            return None
    except OSError:
        return None
    key = (info.st_ino, info.st_mtime_ns, info.st_size)
    cached = _cache.get(path)
    if cached and cached[0] == key:
        return cached[1]
    token = read_token(home)
    if token is None:
        return None
    _cache[path] = (key, token)
    return token


def check_authorization(header: str | None, home: Path | str) -> tuple[int, str] | None:
    """None when `header` carries this home's token; else (HTTP status, reason):
    401 without a bearer token, 403 with a wrong one (or when the server has no token)."""
    scheme, _, given = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return 401, (f"the store needs 'Authorization: Bearer <token>'; the token is in "
                     f"{token_path(home)}")
    expected = server_token(home)
    if expected is None or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        return 403, "wrong store token"
    return None


def bearer_headers(token: str | None) -> dict[str, str]:
    """The Authorization header for a token, or none."""
    return {"Authorization": f"Bearer {token}"} if token else {}
