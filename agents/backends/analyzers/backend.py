"""The default offline model: ruff and bandit over the changed Python files, in a sandbox
(see sandbox.py for what the analysed code can and cannot reach)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas import Dimension, Finding, NormalizedChange, Severity, VersionSpec

from ...changetype import classify_by_message, classify_by_paths, combine, risk_score, suggest_message
from ...diffparse import added_lines
from ...errors import ConfigError
from ...fingerprint import fingerprint, normalize_path
from ..base import Prediction
from ..filters import apply_filters, validate_filters
from . import bandit, ruff
from .raw import Raw
from .sandbox import safe_relpath, stage_files
from .warm_pool import WarmPool

CONCURRENT_CHANGES = 2
_RULE_CODE = re.compile(r"^[A-Z]{1,6}[0-9]{0,4}$")
_CHANGE_TYPE_MODES = ("paths", "message", "combined")


@dataclass(frozen=True)
class AnalyzerParams:
    ruff_select: tuple[str, ...] = ruff.DEFAULT_SELECT
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


def _line_text(content: str, line: int) -> str:
    # Same line breaks as the tools count: \r\n, \r and \n (not str.splitlines' extra ones).
    lines = content.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return lines[line - 1] if 1 <= line <= len(lines) else ""


class AnalyzerBackend:
    """params: ruff_select, bandit, change_type (paths|message|combined), only_changed_lines,
    tool_timeout_s, max_file_bytes, honor_noqa, severity_overrides {rule_id: severity}."""

    def __init__(self, spec: VersionSpec) -> None:
        self.spec = spec
        self.params = AnalyzerParams.parse(spec.id, dict(spec.params))
        self.filters = validate_filters(spec.id, list(spec.filters))
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._bandit = WarmPool()
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
        p = self.params
        raws = await ruff.run_ruff(targets, src, home, to_rel, select=p.ruff_select,
                                   honor_noqa=p.honor_noqa, timeout_s=p.tool_timeout_s)
        if p.bandit:
            raws += await bandit.run_bandit(self._bandit, targets, src, home, to_rel,
                                            timeout_s=p.tool_timeout_s)
        return self._to_findings(change, staged, raws)

    def _to_findings(self, change: NormalizedChange, staged: dict[str, str],
                     raws: list[Raw]) -> list[Finding]:
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
                dimension=Dimension(r.dimension), severity=Severity(overrides.get(rule_id, r.severity)),
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
