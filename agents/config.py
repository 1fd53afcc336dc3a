"""The versions file (YAML): versions, gates, quarantine and breaker settings."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas import VersionSpec, VersionState

from .errors import ConfigError
from .gates import GateConfig

DEFAULT_CONFIG = Path(__file__).with_name("default_versions.yaml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RotationConfig(_Strict):
    interval_s: float = 30.0
    window_s: float = 24 * 3600.0
    canary_steps: tuple[float, ...] = Field(default=(5, 25, 50, 75), min_length=1)
    shadow_to_canary: GateConfig = GateConfig()
    canary_step: GateConfig = GateConfig()
    canary_to_stable: GateConfig = GateConfig()


class QuarantineConfig(_Strict):
    consecutive_failures: int = 5
    window: int = 50
    max_error_rate: float = 0.5
    min_samples: int = 20


class BreakerConfig(_Strict):
    failure_threshold: int = 5
    cooldown_s: float = 30.0


class InferenceConfig(_Strict):
    batch_size: int = 4
    batch_wait_s: float = 0.05
    max_fallback_attempts: int = 2


class ReviewbusConfig(_Strict):
    task: str = "code-review"
    versions: list[VersionSpec] = Field(min_length=1)
    rotation: RotationConfig = RotationConfig()
    quarantine: QuarantineConfig = QuarantineConfig()
    breaker: BreakerConfig = BreakerConfig()
    inference: InferenceConfig = InferenceConfig()

    @model_validator(mode="after")
    def _one_stable(self) -> ReviewbusConfig:
        ids = [v.id for v in self.versions]
        if len(ids) != len(set(ids)):
            raise ValueError("version ids must be unique")
        stable = [v.id for v in self.versions if v.initial_state == VersionState.stable]
        if len(stable) != 1:
            raise ValueError(f"exactly one version must start stable, got {stable or 'none'}")
        return self

    def spec(self, version_id: str) -> VersionSpec | None:
        return next((v for v in self.versions if v.id == version_id), None)


def load_config(path: Path | None = None) -> ReviewbusConfig:
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read versions file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"versions file {path} is not valid YAML: {exc}") from exc
    task = data.get("task", "code-review")
    for version in data.get("versions") or []:
        if isinstance(version, dict):
            version.setdefault("task", task)
    try:
        return ReviewbusConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"versions file {path}: {where}: {first['msg']}") from exc
