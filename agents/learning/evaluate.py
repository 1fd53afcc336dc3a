"""`reviewbus eval`: run a version over a labelled dataset through the pipeline's own code
(intake's masking, `agents.inference.run_batch` with the backend the worker would build) and
measure it.

Protocols:
- static: the version as it is, on every row.
- temporal: per repository, sort by author date, fine-tune a new adapter from the version's
  base on the oldest `train_fraction`, evaluate on the newer rest; report each repository
  and the means (top-level `accuracy`, `macro_f1`). With `pool_other_repos`, each fold also
  trains on the other repositories' commits authored before its first test commit: the
  project's own history plus what its neighbours did up to then, nothing from its future.
- loro (leave one repository out): per repository, fine-tune on all the other repositories,
  evaluate on this one; report each and the means.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from schemas import InferenceRequest, Role, Status, VersionSpec

from ..backends.base import build_backend
from ..breaker import CircuitBreaker
from ..errors import ConfigError
from ..inference import run_batch
from .data import Example, authored_before, by_repo, temporal_split, validation_split
from .metrics import classification_report, latency_report, mean_report

PROTOCOLS = ("static", "temporal", "loro")
Log = Callable[[str], None]


async def _run(spec: VersionSpec, backend, examples: Sequence[Example], batch_size: int,
               progress=None) -> tuple[list[str | None], list[float], float, int]:
    breaker = CircuitBreaker(failure_threshold=10**9, cooldown_s=0)
    predicted: list[str | None] = []
    latencies: list[float] = []
    errors = 0
    bar = progress(len(examples), f"eval {spec.id}") if progress else None
    started = time.perf_counter()
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        requests = [InferenceRequest(request_id=ex.id, task=spec.task, version_id=spec.id,
                                     role=Role.replay, run_id="eval", change=ex.change)
                    for ex in chunk]
        for result in await run_batch(spec, backend, requests, breaker):
            ok = result.status == Status.ok and result.change_type is not None
            predicted.append(result.change_type.label if ok and result.change_type else None)
            errors += 0 if ok else 1
            latencies.append(result.latency_ms)
        if bar:
            bar.update(len(chunk))
    wall = time.perf_counter() - started
    if bar:
        bar.close()
    return predicted, latencies, wall, errors


def evaluate_static(spec: VersionSpec, examples: Sequence[Example], batch_size: int = 4,
                    progress=None) -> dict[str, Any]:
    """accuracy, macro_f1, per_class, confusion, n, errors, p50_ms, p95_ms, throughput_per_s."""
    if not examples:
        raise ConfigError("no examples to evaluate")
    backend = build_backend(spec)

    async def go():
        try:
            return await _run(spec, backend, examples, batch_size, progress)
        finally:
            await backend.close()

    predicted, latencies, wall, errors = asyncio.run(go())
    report = classification_report([ex.label for ex in examples],
                                   [p if p is not None else "(error)" for p in predicted])
    report.update(latency_report(latencies, wall), errors=errors, version=spec.id)
    return report


def _trainable(spec: VersionSpec) -> None:
    if spec.backend != "transformers":
        raise ConfigError(f"version {spec.id}: protocols that fine-tune need a transformers "
                          f"version, not {spec.backend!r}")


def _with_adapter(spec: VersionSpec, adapter: Path, suffix: str) -> VersionSpec:
    params = {k: v for k, v in spec.params.items() if k != "train"}
    params["adapter"] = str(adapter)
    return spec.model_copy(update={"id": f"{spec.id}.{suffix}"[:63], "params": params})


def evaluate_protocol(spec: VersionSpec, examples: Sequence[Example], protocol: str,
                      train_fraction: float = 0.7, batch_size: int = 4,
                      train_overrides: dict[str, Any] | None = None,
                      progress=None, log: Log | None = None,
                      keep_dir: Path | None = None,
                      pool_other_repos: bool = False,
                      fold_repos: Sequence[str] | None = None) -> dict[str, Any]:
    """temporal or loro: one fine-tune from the base per repository (those of `fold_repos`
    when given), then a static eval."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; one of {PROTOCOLS}")
    if pool_other_repos and protocol != "temporal":
        raise ConfigError("pooling other repositories' older commits applies to the temporal "
                          f"protocol only, not {protocol!r}")
    if protocol == "static":
        return evaluate_static(spec, examples, batch_size, progress)
    _trainable(spec)
    from ..backends.transformers import parse_params
    from .modeling import default_base_dir, pick_device
    from .train import LowerCache, TrainParams, train_adapter

    p = parse_params(spec)
    params = TrainParams.from_dict({**p["train"], **(train_overrides or {})})
    base = Path(p["model_dir"]).expanduser() if p["model_dir"] else default_base_dir()
    repos = by_repo(examples)
    if protocol == "loro" and len(repos) < 2:
        raise ConfigError("leave-one-repository-out needs at least two repositories")
    from transformers import AutoConfig

    n_layers = AutoConfig.from_pretrained(str(base), local_files_only=True).num_hidden_layers
    cache = LowerCache(base, n_layers - params.trainable_layers, params.max_length,
                       pick_device(params.device), progress)
    cache.ensure(examples)  # every fold reuses these frozen-layer outputs
    per_repo: dict[str, dict[str, Any]] = {}
    workdir = Path(keep_dir) if keep_dir else Path(tempfile.mkdtemp(prefix="reviewbus-eval-"))
    folds = sorted(r for r in repos if not fold_repos or r in fold_repos)
    if not folds:
        raise ConfigError(f"none of {list(fold_repos or [])} in the data")
    for n, repo in enumerate(folds):
        others = [ex for r in sorted(repos) if r != repo for ex in repos[r]]
        pooled: list[Example] = []
        if protocol == "temporal":
            older, newer = temporal_split(repos[repo], train_fraction)
            train, val = validation_split(older, 0.15, seed=params.seed, temporal=True)
            test = newer
            if pool_other_repos:  # validation stays the repository's own newest commits
                pooled = authored_before(others, newer[0])
                train = train + pooled
        else:
            train, val = validation_split(others, 0.1, seed=params.seed)
            test = repos[repo]
        if log:
            log(f"[{n + 1}/{len(folds)}] {repo}: train {len(train)}, val {len(val)}, test {len(test)}")
        adapter = workdir / f"{protocol}-{n}"
        result = train_adapter(train, val, adapter, params, base_dir=base, cache=cache,
                               progress=progress, log=log,
                               card={"data": f"{protocol} fold for {repo}"})
        report = evaluate_static(_with_adapter(spec, adapter, f"{protocol}{n}"), test, batch_size,
                                 progress)
        if pool_other_repos:
            report["pooled_rows"] = len(pooled)
        report.update(train_rows=len(train), val_rows=len(val), best_epoch=result.best_epoch,
                      train_seconds=result.seconds, refit=result.refit)
        per_repo[repo] = report
        if log:
            log(f"  {repo}: accuracy {report['accuracy']}, macro-F1 {report['macro_f1']}")
    out = mean_report(per_repo)
    out.update(protocol=protocol, version=spec.id, per_repo=per_repo,
               train_params=params.__dict__ | {"lora_targets": list(params.lora_targets)})
    if protocol == "temporal":
        out.update(train_fraction=train_fraction, pool_other_repos=pool_other_repos)
    return out
