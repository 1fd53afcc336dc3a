"""ruff: the command line (isolated, our `--select` only) and its JSON output as Raw findings."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from ...errors import BackendError
from .raw import Raw, parse_json, tool_error
from .sandbox import run_tool

DEFAULT_SELECT = ("E9", "F", "B", "S", "PERF", "UP", "SIM")


def ruff_argv() -> list[str]:
    """How to start ruff: the binary beside our interpreter, else `python -I -m ruff`."""
    beside = Path(sys.executable).parent / "ruff"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    return [sys.executable, "-I", "-m", "ruff"]


async def run_ruff(targets: list[str], src: Path, home: Path, to_rel: dict[str, str], *,
                   select: tuple[str, ...], honor_noqa: bool, timeout_s: float) -> list[Raw]:
    """ruff over the staged targets: `--isolated` (no config file from the tree is read)."""
    if not select:
        return []
    argv = [*ruff_argv(), "check", "--isolated", "--no-cache", "--no-fix", "--exit-zero",
            "--output-format", "json", f"--select={','.join(select)}"]
    if not honor_noqa:
        argv.append("--ignore-noqa")
    run = await run_tool("ruff", [*argv, *targets], src, home, timeout_s)
    if run.returncode != 0:
        raise tool_error("ruff", run)
    items = parse_json("ruff", run)
    if not isinstance(items, list):
        raise BackendError("ruff: unexpected JSON output (not a list)")
    return ruff_findings(items, to_rel)


def ruff_dimension(code: str) -> str:
    letters = code.rstrip("0123456789")
    digits = code[len(letters):]
    if letters == "F" or letters == "B" or (letters == "E" and digits.startswith("9")):
        return "correctness"
    by_family = {"S": "security", "PERF": "performance", "D": "documentation", "PT": "testing"}
    return by_family.get(letters, "maintainability")


def ruff_severity(code: str) -> str:
    if code in ("F821", "F811", "invalid-syntax") or code.startswith("E9"):
        return "high"
    return "medium" if code.startswith("F") and code[1:2].isdigit() else "low"


def ruff_findings(items: list[dict[str, Any]], to_rel: dict[str, str]) -> list[Raw]:
    out: list[Raw] = []
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
        out.append(Raw("ruff", code, rel, row, max(row, end), str(item.get("message", "")),
                       ruff_severity(code), 0.8,
                       "correctness" if code == "invalid-syntax" else ruff_dimension(code),
                       fix.get("message")))
    return out
