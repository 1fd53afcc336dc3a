"""ruff and mypy are part of the test run (`make test`, CI): lint on every package, mypy
--strict on the events and the domain logic ([tool.mypy] in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str) -> str:
    """The tool next to this interpreter (the venv's), else on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[dev]'")
    return found


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_check_is_clean():
    done = _run(_tool("ruff"), "check", "schemas", "agents", "streams", "infra", "tests", "bench")
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_strict_on_schemas_and_agents_is_clean():
    done = _run(_tool("mypy"), "schemas", "agents")
    assert done.returncode == 0, done.stdout + done.stderr
