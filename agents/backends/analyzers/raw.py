"""What the tool modules hand the backend: a tool's finding before it becomes a Finding."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ...errors import BackendError
from .sandbox import ToolRun


@dataclass
class Raw:
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


def tool_error(name: str, run: ToolRun) -> BackendError:
    tail = run.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
    return BackendError(f"{name} failed with exit status {run.returncode}: {' | '.join(tail)}")


def parse_json(name: str, run: ToolRun) -> Any:
    try:
        return json.loads(run.stdout.decode("utf-8", "replace"))
    except ValueError as exc:
        raise BackendError(f"{name}: output is not JSON: {exc}") from exc
