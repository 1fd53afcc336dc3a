"""A configurable fake backend for tests and benchmarks: ok, raise, sleep, or invalid output."""

from __future__ import annotations

import asyncio
import hashlib

from schemas import ChangeType, Finding, NormalizedChange, Risk, VersionSpec

from ..errors import BackendError, InvalidOutput
from .base import Prediction


class FakeBackend:
    """params: mode (ok|raise|invalid), sleep_ms, label, findings (count per change)."""

    def __init__(self, spec: VersionSpec) -> None:
        p = spec.params
        self.mode = str(p.get("mode", "ok"))
        self.sleep_s = float(p.get("sleep_ms", 0)) / 1000.0
        self.label = p.get("label")
        self.findings = int(p.get("findings", 0))
        self.source = f"fake:{spec.id}"

    async def infer(self, batch: list[NormalizedChange]) -> list[Prediction]:
        if self.sleep_s:
            await asyncio.sleep(self.sleep_s)
        if self.mode == "raise":
            raise BackendError("fake backend configured to raise")
        if self.mode == "invalid":
            raise InvalidOutput("fake backend configured to return invalid output")
        return [self._predict(change) for change in batch]

    def _predict(self, change: NormalizedChange) -> Prediction:
        label = self.label or "chore"
        findings = [
            Finding(
                fingerprint=hashlib.sha256(f"{change.sha}:{i}".encode()).hexdigest()[:16],
                dimension="maintainability", severity="low", confidence=0.5,
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

    async def close(self) -> None:
        return None
