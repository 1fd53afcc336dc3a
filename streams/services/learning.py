"""The learning loop: export labelled rows, fine-tune jobs (recorded in the store), register
an adapter in shadow, evaluate a version. torch, transformers and peft are imported only when
a use case needs them."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from agents.errors import BrokerUnavailable, ConfigError, ReviewbusError
from agents.settings import Settings
from schemas import JobState, LifecycleEvent, VersionSpec, new_id

from .common import Quiet, bootstrap, store_for

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever fetched at run time
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TASKS = ("change_type",)
Log = Callable[[str], None]


def json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError as exc:
        raise ConfigError(f"{what} must be a JSON object: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be a JSON object")
    return value


def export(settings: Settings, out: Path, since: datetime | None) -> dict[str, Any]:
    """Labelled interactions as training JSONL; returns the counts written."""
    from agents.learning.data import write_rows
    from infra.config_file import load_config
    from infra.training_data import export_rows

    task = load_config(settings.config).task
    with store_for(settings) as store:
        rows = export_rows(store, task, since=since)
    return {"n": write_rows(out, rows), "repos": len({r["repo"] for r in rows}),
            **{s: sum(1 for r in rows if r["split"] == s) for s in ("train", "val")}}


def record(settings: Settings, event) -> None:
    """Write one job event to ClickHouse (the worker's store through its web port if it runs)."""
    with store_for(settings) as store:
        store.insert_events([event])


def jobs(settings: Settings) -> list[dict[str, Any]]:
    from infra.config_file import load_config
    from infra.queries import training_jobs

    task = load_config(settings.config).task
    with store_for(settings) as store:
        query = training_jobs(task)
        rows = store.query(query.sql, query.params).as_dicts()
    for r in rows:
        metrics = json.loads(r.pop("metrics") or "{}")
        r["val_macro_f1"] = (metrics.get("val") or {}).get("macro_f1")
        r["repos"] = ",".join(r.get("repos") or []) or "*"
    return rows


def train(settings: Settings, *, data: Path, out: Path, base: Path | None = None,
          repos: list[str] = (), version_id: str | None = None, register: bool = True,
          pool_other_repos: bool = False, val_fraction: float = 0.15,
          overrides: dict[str, Any] | None = None, limit: int | None = None, kind: str = "change_type",
          log: Log = lambda _: None, progress: Callable[[int, str], Any] = Quiet) -> dict[str, Any]:
    """A LoRA fine-tune job, recorded queued -> running -> succeeded|failed; the adapter is
    registered in shadow unless `register` is false."""
    from agents.learning.data import load_examples, validation_split
    from agents.learning.jobs import adapter_spec, default_version_id, job_event
    from agents.learning.train import TrainParams
    from infra.config_file import load_config

    config = load_config(settings.config)
    overrides = dict(overrides or {})
    params = TrainParams.from_dict(overrides)  # fail on bad parameters before any job exists
    if not 0 < val_fraction < 1:
        raise ConfigError(f"--val-fraction must be in (0, 1), got {val_fraction}")
    if pool_other_repos and not repos:
        raise ConfigError("--pool-other-repos needs --repo: the scope the other rows are added to")
    job_id = new_id()
    repos = sorted(set(repos))
    version_id = (version_id or default_version_id(job_id, repos)) if register else None
    common = dict(task=config.task, kind=kind, data=str(data), base=str(base or ""),
                  out=str(out), repos=repos, version_id=version_id, params=overrides)
    record(settings, job_event(job_id, JobState.queued, **common))
    log(f"job {job_id} queued")
    try:
        examples = load_examples(data, repos=None if pool_other_repos else repos or None,
                                 limit=limit)
        scoped = [e for e in examples if not repos or e.repo in repos]
        if not scoped:
            raise ConfigError(f"no labelled rows of {', '.join(repos)} in {data}")
        train_rows, val = validation_split(scoped, val_fraction, seed=params.seed)
        pooled = [e for e in examples if e.repo not in repos] if pool_other_repos else []
        train_rows += pooled
        record(settings, job_event(job_id, JobState.running, **common))
        log(f"job {job_id} running: {len(train_rows)} train ({len(pooled)} pooled from other "
            f"repositories) / {len(val)} val rows from {len({e.repo for e in examples})} "
            "repositories")
        from agents.learning.train import train_adapter

        result = train_adapter(train_rows, val, out, params, base_dir=base,
                               progress=progress, log=log,
                               card={"data": str(data), "job_id": job_id, "repos": repos,
                                     "pooled_rows": len(pooled)})
        metrics = {"best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                   "seconds": result.seconds, "n_train": result.n_train, "n_val": result.n_val,
                   "val": {k: v for k, v in (result.val or {}).items() if k != "confusion"}}
        registered = None
        if version_id is not None:
            spec = adapter_spec(version_id, out, task=config.task, base=base, repos=repos,
                                train_params=overrides, job_id=job_id)
            registered = register_version(settings, config, spec, job_id)
    except (ReviewbusError, OSError, RuntimeError, ValueError) as exc:
        record(settings, job_event(job_id, JobState.failed, **common, error=str(exc)[:2000]))
        raise ReviewbusError(f"job {job_id} failed: {exc}") from exc
    record(settings, job_event(job_id, JobState.succeeded, **common, metrics=metrics))
    return {"job_id": job_id, "result": result, "registered": registered}


def register_version(settings: Settings, config, spec: VersionSpec, job_id: str) -> str:
    """Register the adapter's version in shadow: on the lifecycle topic when a broker runs,
    else (embedded broker down) straight into the store's lifecycle history, which the next
    `reviewbus up` folds. Running workers serve it at once, through their shared pool topic,
    and on its own topic from their next start (streams/registered.py)."""
    from agents.lifecycle_commands import register_request
    from agents.registry import fold

    from .lifecycle import publish_and_confirm, read_registry

    reason, actor = f"fine-tune job {job_id}", f"train:{job_id}"
    try:
        try:
            registry, address = read_registry(settings, config.task)
        except BrokerUnavailable:
            raise
        except ReviewbusError:  # a broker without lifecycle history yet
            registry, address = fold(config.task, []), bootstrap(settings)
        event = register_request(registry, spec, actor=actor, reason=reason,
                                 static_blocklist=config.blocklist)
        _after, outcome = publish_and_confirm(settings, address, config.task, [event])
        skipped = outcome.get(event.event_id, "not found on the lifecycle topic")
        if skipped:
            raise ReviewbusError(f"register {spec.id}: not applied: {skipped}")
        where = "on the lifecycle topic (running workers serve it at once)"
    except BrokerUnavailable:
        if settings.kafka:
            raise
        event = _register_in_store(settings, config, spec, actor, reason)
        where = "in the store (the broker is down; `reviewbus up` picks it up)"
    return (f"registered {spec.id} in shadow{' for ' + ', '.join(spec.repos) if spec.repos else ''} "
            f"{where} (event {event.event_id})")


def _register_in_store(settings: Settings, config, spec: VersionSpec, actor: str,
                       reason: str) -> LifecycleEvent:
    from agents.lifecycle_commands import register_request
    from infra.readback import registry_from_store

    with store_for(settings) as store:
        registry = registry_from_store(store, config.task)
        event = register_request(registry, spec, actor=actor, reason=reason,
                                 static_blocklist=config.blocklist)
        store.insert_events([event])
    return event


def find_spec(settings: Settings, version: str) -> VersionSpec:
    """A version of the versions file, of the registry (store), or an adapter directory."""
    from infra.config_file import load_config

    config = load_config(settings.config)
    spec = config.spec(version)
    if spec is not None:
        return spec
    path = Path(version)
    if path.is_dir() and (path / "reviewbus.json").is_file():
        name = "".join(c if c.isalnum() or c in "._-" else "-" for c in path.resolve().name)
        return VersionSpec(id=(name or "adapter")[:63], task=config.task, backend="transformers",
                           params={"adapter": str(path.resolve())}, timeout_s=120)
    try:
        from infra.readback import registry_from_store

        with store_for(settings) as store:
            registered = registry_from_store(store, config.task).versions
    except ReviewbusError:
        registered = {}
    if version in registered:
        return registered[version].spec
    known = ", ".join(v.id for v in config.versions)
    others = sorted(set(registered) - {v.id for v in config.versions})
    also = f"; registered: {', '.join(others)}" if others else ""
    raise ConfigError(f"unknown version {version!r} (versions file: {known}{also}; or give an "
                      "adapter directory)")


def evaluate(settings: Settings, version: str, dataset: Path, *, protocol: str = "static",
             train_fraction: float = 0.7, batch_size: int | None = None,
             repos: list[str] = (), pool_other_repos: bool = False, limit: int | None = None,
             overrides: dict[str, Any] | None = None, log: Log = lambda _: None,
             progress: Callable[[int, str], Any] = Quiet) -> dict[str, Any]:
    """A version on a labelled dataset under a protocol (static, temporal, loro): the report."""
    from agents.learning.data import load_examples
    from agents.learning.evaluate import evaluate_protocol
    from infra.config_file import load_config

    spec = find_spec(settings, version)
    batch = batch_size if batch_size is not None else load_config(settings.config).inference.batch_size
    if batch < 1:
        raise ConfigError("--batch-size must be at least 1")
    # pooling reads every repository; --repo then names the ones evaluated
    examples = load_examples(dataset, repos=None if pool_other_repos else list(repos) or None,
                             limit=limit)
    report = evaluate_protocol(spec, examples, protocol, train_fraction=train_fraction,
                               batch_size=batch, train_overrides=overrides or {},
                               progress=progress, log=log, pool_other_repos=pool_other_repos,
                               fold_repos=list(repos) or None)
    report["dataset"] = str(dataset)
    return report
