"""Training jobs as events, and the spec a finished job registers (pure; the query that reads
the jobs back is infra.queries.training_jobs)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from schemas import JobState, TrainingJobEvent, VersionSpec, VersionState

from ..errors import ConfigError

TASKS = ("change_type",)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def job_event(job_id: str, state: JobState, *, task: str, **fields: Any) -> TrainingJobEvent:
    """One state of a job; the id is deterministic, so recording it twice stores one row."""
    event_id = hashlib.sha256(f"{job_id}|{JobState(state).value}".encode()).hexdigest()[:32]
    return TrainingJobEvent(event_id=event_id, job_id=job_id, task=task, state=state, **fields)


def default_version_id(job_id: str, repos: list[str]) -> str:
    scope = ""
    if len(repos) == 1:
        scope = "-" + _UNSAFE.sub("-", repos[0].rsplit("/", 1)[-1]).strip("-.")[:24]
    return f"ct-lora{scope}-{job_id[:8]}"


def adapter_spec(version_id: str, adapter: Path, *, task: str, base: Path | None,
                 repos: list[str], train_params: dict[str, Any], job_id: str,
                 timeout_s: float = 60.0) -> VersionSpec:
    """The version a succeeded job registers: transformers backend with the new adapter,
    scoped to the job's repositories, starting in shadow."""
    params: dict[str, Any] = {"adapter": str(Path(adapter).resolve())}
    if base is not None:
        params["model_dir"] = str(Path(base).resolve())
    if train_params:
        params["train"] = dict(train_params)
    scope = f" for {', '.join(repos)}" if repos else ""
    try:
        return VersionSpec(id=version_id, task=task, backend="transformers", params=params,
                           timeout_s=timeout_s, initial_state=VersionState.shadow, repos=list(repos),
                           description=f"LoRA change-type adapter of job {job_id}{scope}")
    except ValueError as exc:
        raise ConfigError(f"invalid version id {version_id!r}: letters, digits, '.', '_' "
                          "and '-' only, at most 63 characters") from exc
