"""A reusable fixture git repository with a known, deterministic history.

`make_repo(path)` builds it (fixed author, dates and content, so the shas are the same on every
run and machine) and returns `path`. First-parent history of `main`, oldest first:

    1  chore: initial project layout                 (adds README, app/, scripts/old.sh)
    2  feat(cli): add command runner                 (app/runner.py: unused import, shell=True)
    3  fix(parser): handle empty input               (modifies app/parser.py; has a body)
    4  docs: describe the runner in the guide        (README.md, "docs/guide ü.md")
    5  test(parser): cover empty input               (adds tests/test_parser.py)
    6  chore(assets): add logo                       (binary assets/logo.png with NUL bytes)
    7  refactor: rename helpers module to utils      (app/helpers.py -> app/utils.py)
    8  chore: add generated data fixture             (data/big.txt, over 400 kB)
    9  chore: remove obsolete script                 (deletes scripts/old.sh)
   10  Merge branch 'feature/retry'                  (merge commit: skipped by resolve)
   11  fix(runner): pass the timeout through         (app/runner.py, after the merge)

plus, only on the side branch `feature/retry` (reachable through the merge, not first-parent):

       feat(runner): retry failed commands           (app/retry.py: bare except, eval)
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

AUTHOR_NAME = "Ada Reviewer"
AUTHOR_EMAIL = "ada@example.com"
BIG_FILE_BYTES = 450_000  # over Limits.max_file_bytes (400_000)

SUBJECTS = {
    "initial": "chore: initial project layout",
    "runner": "feat(cli): add command runner",
    "fix": "fix(parser): handle empty input",
    "docs": "docs: describe the runner in the guide",
    "test": "test(parser): cover empty input",
    "binary": "chore(assets): add logo",
    "rename": "refactor: rename helpers module to utils",
    "big": "chore: add generated data fixture",
    "delete": "chore: remove obsolete script",
    "merge": "Merge branch 'feature/retry'",
    "after_merge": "fix(runner): pass the timeout through",
    "side": "feat(runner): retry failed commands",
}
FIX_BODY = "Return an empty list instead of raising IndexError on empty input.\n\nCloses #12"
# Commits on the first-parent history of main that are not merges, oldest first.
MAIN_KEYS = ["initial", "runner", "fix", "docs", "test", "binary", "rename", "big", "delete",
             "after_merge"]

PARSER_V1 = '''"""Parse comma-separated records."""


def parse(text):
    first = text.splitlines()[0]
    return [field.strip() for field in first.split(",")]
'''

PARSER_V2 = '''"""Parse comma-separated records."""


def parse(text):
    lines = text.splitlines()
    if not lines:
        return []
    return [field.strip() for field in lines[0].split(",")]
'''

HELPERS = '''"""Small helpers shared by the app."""


def chunks(items, size):
    """Split items into lists of at most size elements."""
    return [items[i:i + size] for i in range(0, len(items), size)]


def flatten(rows):
    """Concatenate a list of lists."""
    return [x for row in rows for x in row]


def dedupe(items):
    """Remove duplicates, keeping the first occurrence."""
    seen = set()
    out = []
    for x in items:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out
'''

RUNNER_V1 = '''"""Run shell commands for the CLI."""

import os
import subprocess


def run(cmd):
    return subprocess.call(cmd, shell=True)
'''

RUNNER_V2 = '''"""Run shell commands for the CLI."""

import os
import subprocess


def run(cmd, timeout=None):
    return subprocess.call(cmd, shell=True, timeout=timeout)
'''

RETRY = '''"""Retry helpers."""

import time


def retry(fn, attempts=3):
    for _ in range(attempts):
        try:
            return fn()
        except:
            time.sleep(1)


def load_setting(text):
    return eval(text)
'''

TEST_PARSER = '''from app.parser import parse


def test_empty_input():
    assert parse("") == []


def test_fields():
    assert parse("a, b") == ["a", "b"]
'''

# A PNG signature followed by a header with NUL bytes: binary to git and to the NUL check.
LOGO = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x06\x00\x00"
        b"\x00\x1f\xf3\xffa" + bytes(range(256)) * 4)


def _env(seq: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    date = f"2024-01-{seq:02d}T12:00:00+00:00"
    env.update(
        GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, GIT_TERMINAL_PROMPT="0",
        GIT_AUTHOR_NAME=AUTHOR_NAME, GIT_AUTHOR_EMAIL=AUTHOR_EMAIL, GIT_AUTHOR_DATE=date,
        GIT_COMMITTER_NAME=AUTHOR_NAME, GIT_COMMITTER_EMAIL=AUTHOR_EMAIL,
        GIT_COMMITTER_DATE=date, LC_ALL="C",
    )
    return env


def git(repo: Path, *args: str, seq: int = 1) -> str:
    """Run git in `repo` with an isolated config; return stdout (raises on failure)."""
    proc = subprocess.run(
        ["git", "-C", str(repo), "-c", "commit.gpgsign=false", "-c", "core.autocrlf=false",
         "-c", "init.defaultBranch=main", *args],
        capture_output=True, env=_env(seq), check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout.decode("utf-8", errors="replace")


def _write(repo: Path, rel: str, data: str | bytes) -> None:
    target = repo / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        target.write_bytes(data)
    else:
        target.write_text(data, encoding="utf-8", newline="\n")


def _commit(repo: Path, seq: int, message: str) -> None:
    git(repo, "add", "-A", seq=seq)
    git(repo, "commit", "-q", "-m", message, seq=seq)


def big_text(n_bytes: int = BIG_FILE_BYTES) -> str:
    line = "0123456789abcdef" * 6 + "\n"  # 97 bytes
    count = n_bytes // len(line) + 1
    return "".join(f"{i:06d} {line}" for i in range(count))


def make_repo(path: Path) -> Path:
    """Create the fixture repository at `path` (created if missing) and return `path`."""
    repo = Path(path)
    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q", "-b", "main")

    _write(repo, "README.md", "# demo\n\nA small demo project.\n")
    _write(repo, "app/__init__.py", "")
    _write(repo, "app/parser.py", PARSER_V1)
    _write(repo, "app/helpers.py", HELPERS)
    _write(repo, "scripts/old.sh", "#!/bin/sh\necho obsolete\n")
    _commit(repo, 1, SUBJECTS["initial"])

    _write(repo, "app/runner.py", RUNNER_V1)
    _commit(repo, 2, SUBJECTS["runner"] + "\n\nRuns a command line through the shell.")

    _write(repo, "app/parser.py", PARSER_V2)
    _commit(repo, 3, SUBJECTS["fix"] + "\n\n" + FIX_BODY)

    _write(repo, "README.md", "# demo\n\nA small demo project.\n\nSee the guide.\n")
    _write(repo, "docs/guide ü.md", "# Guide\n\n`app.runner.run(cmd)` runs a command.\n")
    _commit(repo, 4, SUBJECTS["docs"])

    _write(repo, "tests/test_parser.py", TEST_PARSER)
    _commit(repo, 5, SUBJECTS["test"])

    _write(repo, "assets/logo.png", LOGO)
    _commit(repo, 6, SUBJECTS["binary"])

    git(repo, "mv", "app/helpers.py", "app/utils.py", seq=7)
    _commit(repo, 7, SUBJECTS["rename"])

    _write(repo, "data/big.txt", big_text())
    _commit(repo, 8, SUBJECTS["big"])

    (repo / "scripts/old.sh").unlink()
    _commit(repo, 9, SUBJECTS["delete"])

    git(repo, "checkout", "-q", "-b", "feature/retry", seq=10)
    _write(repo, "app/retry.py", RETRY)
    _commit(repo, 10, SUBJECTS["side"])
    git(repo, "checkout", "-q", "main", seq=11)
    git(repo, "merge", "-q", "--no-ff", "-m", SUBJECTS["merge"], "feature/retry", seq=11)

    _write(repo, "app/runner.py", RUNNER_V2)
    _commit(repo, 12, SUBJECTS["after_merge"])
    return repo


def shas_by_subject(repo: Path) -> dict[str, str]:
    """Map each commit subject in the repository (all branches) to its full sha."""
    out = git(repo, "log", "--all", "--format=%H %s")
    pairs = (line.split(" ", 1) for line in out.splitlines() if line)
    return {subject: sha for sha, subject in pairs}


def shas_by_key(repo: Path) -> dict[str, str]:
    """Map each key of SUBJECTS to the full sha of that commit."""
    by_subject = shas_by_subject(repo)
    return {key: by_subject[subject] for key, subject in SUBJECTS.items()}
