"""A configurable fake backend for tests and benchmarks: ok, raise, sleep, or invalid output."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from schemas import ChangeType, Dimension, Finding, NormalizedChange, Risk, Severity, VersionSpec

from ..errors import BackendError, InvalidOutput
from .base import Prediction


class FakeBackend:
    """params: mode (ok|raise|invalid), sleep_ms, label, findings (count per change);
    scripted: finding_list [{path, line, dimension, severity, confidence, rule_id, message,
    fingerprint}], scores {label: score}, risk (score), suggested_message."""

    def __init__(self, spec: VersionSpec) -> None:
        p = spec.params
        self.mode = str(p.get("mode", "ok"))
        self.sleep_s = float(p.get("sleep_ms", 0)) / 1000.0
        self.label = p.get("label")
        self.findings = int(p.get("findings", 0))
        self.source = f"fake:{spec.id}"
        # Scripted answers (consensus tests): explicit findings, change-type scores, a risk
        # score and a suggested message, the same for every change.
        self.finding_list = [dict(f) for f in p.get("finding_list") or []]
        self.scores = {str(k): float(v) for k, v in (p.get("scores") or {}).items()}
        self.risk = p.get("risk")
        self.suggested_message = p.get("suggested_message")
        # label_by_path {path prefix: label}: the label of the first changed file under a
        # prefix wins over `label` (lifecycle tests: a version that is right on some traffic).
        self.label_by_path = {str(k): str(v) for k, v in (p.get("label_by_path") or {}).items()}
        # Fault modes (reliability tests, issue 4): mode "exit" kills the whole worker process
        # like a crash in native code (exit_code); error_rate fails that share of changes,
        # chosen by a hash of the sha (the same ones on every run); fail_while_file fails
        # every batch while that file exists (a version that gets fixed).
        self.exit_code = int(p.get("exit_code", 137))
        self.error_rate = float(p.get("error_rate", 0.0))
        self.fail_while_file = Path(p["fail_while_file"]) if p.get("fail_while_file") else None

    async def infer(self, batch: list[NormalizedChange]) -> list[Prediction]:
        if self.sleep_s:
            await asyncio.sleep(self.sleep_s)
        if self.mode == "raise":
            raise BackendError("fake backend configured to raise")
        if self.mode == "invalid":
            raise InvalidOutput("fake backend configured to return invalid output")
        self._faults(batch)
        return [self._predict(change) for change in batch]

    def _faults(self, batch: list[NormalizedChange]) -> None:
        if self.mode == "exit":
            os._exit(self.exit_code)  # no cleanup, no flush: what a segfault looks like
        if self.fail_while_file is not None and self.fail_while_file.exists():
            raise BackendError(f"fake backend failing while {self.fail_while_file} exists")
        if self.error_rate > 0:
            for change in batch:
                h = int.from_bytes(hashlib.sha256(change.sha.encode()).digest()[:4], "big")
                if h / 2**32 < self.error_rate:
                    raise BackendError(f"fake backend failed on {change.sha} "
                                       f"(error_rate {self.error_rate:g})")

    def _predict(self, change: NormalizedChange) -> Prediction:
        if self.finding_list or self.scores or self.risk is not None or self.suggested_message:
            return self._scripted(change)
        label = self._path_label(change) or self.label or "chore"
        findings = [
            Finding(
                fingerprint=hashlib.sha256(f"{change.sha}:{i}".encode()).hexdigest()[:16],
                dimension=Dimension.maintainability, severity=Severity.low, confidence=0.5,
                path=change.files[0].path if change.files else "-", line=i + 1,
                rule_id=f"FAKE{i}", message="fake finding", source=self.source,
            )
            for i in range(self.findings)
        ]
        return Prediction(
            change_type=ChangeType(label=label, confidence=1.0, scores={label: 1.0}),
            risk=Risk(score=0.1, level="low"),
            findings=findings,
        )

    def _scripted(self, change: NormalizedChange) -> Prediction:
        scores = self.scores or {self.label or "chore": 1.0}
        label = self.label or max(scores, key=lambda k: (scores[k], k))
        findings = []
        for f in self.finding_list:
            rule_id = str(f.get("rule_id", "FAKE"))
            path, line = str(f.get("path", "-")), int(f.get("line", 1))
            findings.append(Finding(
                fingerprint=str(f.get("fingerprint") or hashlib.sha256(
                    f"{rule_id}:{path}:{line}".encode()).hexdigest()[:16]),
                dimension=f.get("dimension", "maintainability"),
                severity=f.get("severity", "low"), confidence=float(f.get("confidence", 0.5)),
                path=path, line=line, rule_id=rule_id,
                message=str(f.get("message", "fake finding")), source=self.source,
            ))
        score = float(self.risk) if self.risk is not None else 0.1
        level = "high" if score >= 0.67 else "medium" if score >= 0.34 else "low"
        return Prediction(
            change_type=ChangeType(label=label, confidence=scores.get(label, 1.0), scores=scores),
            risk=Risk(score=score, level=level), findings=findings,
            suggested_message=self.suggested_message,
        )

    def _path_label(self, change: NormalizedChange) -> str | None:
        for f in change.files:
            for prefix, label in self.label_by_path.items():
                if f.path.startswith(prefix):
                    return label
        return None

    async def close(self) -> None:
        return None
