"""The versions file (YAML): versions, gates, quarantine and breaker settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas import VersionSpec, VersionState

from .blocklist import BlockRule
from .errors import ConfigError
from .feedback import FeedbackFilterConfig
from .gates import GateConfig
from .learning.live import LearnerAgentConfig
from .slo import SloConfig

DEFAULT_CONFIG = Path(__file__).with_name("default_versions.yaml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RotationConfig(_Strict):
    """The rotation agent: when it runs, its windows, gates per transition and policies
    (issue 3; see agents/rotation.py and the README's Lifecycle section)."""

    interval_s: float = 30.0
    window_s: float = 24 * 3600.0  # sliding window, never before the stage began
    max_window_s: float = 7 * 24 * 3600.0  # how far `extend` lets it grow
    # The window ends this long before the tick: rows still on their way to ClickHouse then
    # count in neither the decision nor its re-run (`reviewbus explain`).
    settle_s: float = Field(default=5.0, ge=0)
    canary_steps: tuple[float, ...] = Field(default=(5, 25, 50, 75), min_length=1)
    shadow_to_canary: GateConfig = GateConfig()
    canary_step: GateConfig = GateConfig()
    canary_to_stable: GateConfig = GateConfig()
    replace_stable: GateConfig | None = None  # a canary clearly better: straight to stable
    on_inconclusive: Literal["hold", "extend", "rollback_after_timeout"] = "hold"
    inconclusive_timeout_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    on_fail: Literal["rollback", "quarantine"] = "rollback"
    record_holds: bool = False  # also record decisions that leave a version where it is
    record_every_s: float = Field(default=3600.0, gt=0)  # re-record an unchanged hold

    @field_validator("on_inconclusive", mode="before")
    @classmethod
    def _dashes(cls, value: object) -> object:
        return value.replace("-", "_") if isinstance(value, str) else value

    @field_validator("canary_steps")
    @classmethod
    def _steps(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < s <= 100 for s in value) or list(value) != sorted(set(value)):
            raise ValueError("canary steps must be increasing percentages in (0, 100]")
        return value


class QuarantineConfig(_Strict):
    """When a version is quarantined, and how it leaves (issue 4; see agents/health.py).

    The five triggers of the design: error rate over a window (with consecutive failures as
    its fast path), latency SLO breach, invalid outputs, accuracy regression against stable on
    labelled traffic, crash loop; plus `error_budget` (agents/slo.py) for candidates.
    """

    triggers: tuple[str, ...] = ("consecutive_failures", "error_rate", "invalid_output",
                                 "latency_slo", "accuracy_regression", "crash_loop",
                                 "error_budget")
    consecutive_failures: int = Field(default=5, ge=1)
    window: int = Field(default=50, ge=1)
    max_error_rate: float = Field(default=0.5, ge=0, le=1)
    min_samples: int = Field(default=20, ge=1)
    invalid_outputs: int = Field(default=5, ge=1)  # in the window
    latency_quantile: float = Field(default=0.95, gt=0, lt=1)  # vs the SLO's latency_ms
    latency_min_samples: int = Field(default=20, ge=1)
    accuracy_window: int = Field(default=200, ge=1)
    accuracy_min_samples: int = Field(default=30, ge=1)
    accuracy_max_drop: float = Field(default=0.2, ge=0, le=1)
    accuracy_confidence: float = Field(default=0.95, gt=0, lt=1)
    crash_loop_restarts: int = Field(default=3, ge=1)
    crash_loop_window_s: float = Field(default=600.0, gt=0)
    poison_after_crashes: int = Field(default=2, ge=1)  # a request in flight at N deaths
    # Half-open re-test: replay a sample of archived traffic, restore to shadow if it passes.
    retest: bool = True
    retest_after_s: float = Field(default=300.0, ge=0)  # first re-test; doubles on failure
    retest_max_backoff_s: float = Field(default=6 * 3600.0, gt=0)
    retest_sample: int = Field(default=20, ge=1)
    retest_min_success_rate: float = Field(default=0.95, ge=0, le=1)
    retest_timeout_s: float = Field(default=120.0, gt=0)
    check_interval_s: float = Field(default=5.0, gt=0)  # the leader's re-test/budget timer

    @field_validator("triggers")
    @classmethod
    def _known_triggers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from .health import TRIGGERS

        unknown = sorted(set(value) - set(TRIGGERS))
        if unknown:
            raise ValueError(f"unknown triggers {unknown}; known: {list(TRIGGERS)}")
        return value


class BreakerSettings(_Strict):
    failure_threshold: int | None = Field(default=None, ge=1)
    cooldown_s: float | None = Field(default=None, ge=0)
    window_s: float | None = Field(default=None, gt=0)


class BreakerConfig(_Strict):
    """Circuit breaker per version (agents/breaker.py); `per_version` overrides by id."""

    failure_threshold: int = Field(default=5, ge=1)
    cooldown_s: float = Field(default=30.0, ge=0)
    window_s: float | None = Field(default=None, gt=0)  # None: consecutive failures
    per_version: dict[str, BreakerSettings] = Field(default_factory=dict)

    def overrides(self) -> dict[str, dict[str, float | int]]:
        return {v: {k: x for k, x in o.model_dump().items() if x is not None}
                for v, o in self.per_version.items()}


class InferenceConfig(_Strict):
    batch_size: int = 4
    batch_wait_s: float = 0.05
    max_fallback_attempts: int = 2
    # Batches of one version in flight at once per worker (bounded concurrency), and per
    # version overrides; each batch is bounded in time by the version's timeout_s.
    max_concurrency: int = Field(default=1, ge=1)
    concurrency: dict[str, int] = Field(default_factory=dict)
    # End-to-end repair (streams/flows/healing.py): an accepted request (events_archive) with
    # no served result after `reconcile_after_s`, while the bus has no backlog, is routed again.
    reconcile: bool = True
    reconcile_after_s: float = Field(default=120.0, gt=0)
    reconcile_interval_s: float = Field(default=30.0, gt=0)
    reconcile_window_s: float = Field(default=3600.0, gt=0)

    # Events one take of a version's agent may hold (default REVIEWBUS_BATCH_MAX, for a
    # version with concurrency 1): lower it for a slow in-process backend, so that a rebalance
    # or a crash, which repeats the unacked take, repeats less (docs/concepts/batching.md).
    take_max: dict[str, int] = Field(default_factory=dict)

    def concurrency_of(self, version_id: str) -> int:
        return max(1, int(self.concurrency.get(version_id, self.max_concurrency)))

    def take_of(self, version_id: str, batch_max: int) -> int:
        """Events one take of the version's agent holds: up to `batch_max` (or its
        `take_max`) with concurrency 1; one backend batch with more (N takes in flight)."""
        if self.concurrency_of(version_id) > 1:
            return self.batch_size
        return max(self.batch_size, int(self.take_max.get(version_id, batch_max)))


class ShadowConfig(_Strict):
    """The shadow join (agents/shadow_join.py): how long, and how many, results of a request
    wait for the others before the comparison is given up."""

    join_ttl_s: float = Field(default=900.0, gt=0)
    max_pending: int = Field(default=20_000, ge=1)
    expire_interval_s: float = Field(default=60.0, gt=0)  # expiry also runs on every result


class ReviewbusConfig(_Strict):
    task: str = "code-review"
    versions: list[VersionSpec] = Field(min_length=1)
    rotation: RotationConfig = RotationConfig()
    quarantine: QuarantineConfig = QuarantineConfig()
    breaker: BreakerConfig = BreakerConfig()
    inference: InferenceConfig = InferenceConfig()
    shadow: ShadowConfig = ShadowConfig()
    slo: SloConfig = SloConfig()
    feedback: FeedbackFilterConfig = FeedbackFilterConfig()
    learner: LearnerAgentConfig = LearnerAgentConfig()  # the live learner agent (issue 22)
    blocklist: list[BlockRule] = Field(default_factory=list)  # never register these

    @model_validator(mode="before")
    @classmethod
    def _consensus_members(cls, data: Any) -> Any:
        # A consensus version names its members by id; embed their specs so that the version
        # is self-contained (agents/backends/consensus.py). litellm params are checked here, so
        # that a key written in the file is refused before the spec is ever registered.
        if isinstance(data, dict) and isinstance(data.get("versions"), list):
            from .backends.consensus import resolve_members

            def backend(v: Any) -> Any:
                return v.get("backend") if isinstance(v, dict) else getattr(v, "backend", None)

            versions = resolve_members(data["versions"])
            # A consensus version's inline members are versions too: their params are checked
            # like the file's own (a key written inline is refused as well).
            members = [m for v in versions if isinstance(v, dict)
                       for m in (v.get("params") or {}).get("member_specs") or []]
            # Imported only when needed: the litellm package costs ~0.35 s of every CLI start.
            if any(backend(v) == "litellm" for v in [*versions, *members]):
                from .backends.litellm import check_litellm_versions

                check_litellm_versions([*versions, *members])
            data = {**data, "versions": versions}
        return data

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


def parse_config(text: str, source: str = "<versions file>") -> ReviewbusConfig:
    """A versions file's text -> the validated config (pure: infra/config_file.py reads files)."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"versions file {source} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"versions file {source}: expected a mapping at the top level")
    task = data.get("task", "code-review")
    for version in data.get("versions") or []:
        if isinstance(version, dict):
            version.setdefault("task", task)
    try:
        return ReviewbusConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"versions file {source}: {where}: {first['msg']}") from exc
