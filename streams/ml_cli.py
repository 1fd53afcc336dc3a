"""Learning-loop commands: `export`, `train`, `eval`, `jobs` (model backends issue).

    reviewbus export --task change_type [--since T] --out FILE.jsonl
    reviewbus train --task change_type --data FILE.jsonl [--base DIR] --out DIR [--repo R ...]
                    [--pool-other-repos]
    reviewbus eval --dataset FILE.jsonl --version V [--protocol static|temporal|loro]
                   [--pool-other-repos]
    reviewbus jobs [--format table|json]

torch, transformers and peft are imported only when a command needs them.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from agents.errors import BrokerUnavailable, ConfigError, ReviewbusError
from agents.settings import Settings
from schemas import JobState, LifecycleEvent, VersionSpec, new_id

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever fetched at run time
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TASKS = ("change_type",)


def add_commands(cmd) -> None:
    sp = cmd("export", cmd_export, "labelled interactions from ClickHouse as training JSONL")
    sp.add_argument("--task", choices=TASKS, default="change_type")
    sp.add_argument("--since", help="ISO time or age like 30d")
    sp.add_argument("--out", type=Path, required=True, help="FILE.jsonl (.gz to compress)")

    sp = cmd("train", cmd_train, "LoRA fine-tune a change-type adapter; register it in shadow")
    sp.add_argument("--task", choices=TASKS, default="change_type")
    sp.add_argument("--data", type=Path, required=True, help="JSONL(.gz) of labelled changes")
    sp.add_argument("--base", type=Path, help="base model directory (default: all-MiniLM-L6-v2)")
    sp.add_argument("--out", type=Path, required=True, help="adapter directory to write")
    sp.add_argument("--repo", action="append", default=[], dest="repos",
                    help="scope: train on and serve only this repository (repeatable)")
    sp.add_argument("--version-id", help="id to register the adapter as (default: ct-lora-...)")
    sp.add_argument("--no-register", action="store_true", help="do not register a version")
    sp.add_argument("--pool-other-repos", action="store_true",
                    help="with --repo: also train on the data's other repositories (validation "
                         "and the served scope stay the --repo ones)")
    sp.add_argument("--val-fraction", type=float, default=0.15)
    sp.add_argument("--params", default="{}",
                    help='training parameters as JSON, e.g. \'{"epochs": 4, "lora_r": 16}\'')
    sp.add_argument("--epochs", type=int)
    sp.add_argument("--max-steps", type=int, help=argparse_hidden())
    sp.add_argument("--limit", type=int, help="use at most N rows of the data")

    sp = cmd("eval", cmd_eval, "evaluate a version on a labelled dataset")
    sp.add_argument("--dataset", type=Path, required=True, help="JSONL(.gz): message, diff, files, label")
    sp.add_argument("--version", required=True,
                    help="version id (versions file or registry), or an adapter directory")
    sp.add_argument("--protocol", choices=("static", "temporal", "loro"), default="static")
    sp.add_argument("--train-fraction", type=float, default=0.7)
    sp.add_argument("--pool-other-repos", action="store_true",
                    help="temporal: each fold also trains on the other repositories' commits "
                         "authored before its first test commit")
    sp.add_argument("--repo", action="append", default=[], dest="repos",
                    help="only rows of this repository (repeatable)")
    sp.add_argument("--limit", type=int, help="at most N rows (per file order)")
    sp.add_argument("--batch-size", type=int, help="requests per batch (default: the "
                    "versions file's inference.batch_size, as in the pipeline)")
    sp.add_argument("--params", default="{}", help="training parameters for temporal/loro (JSON)")
    sp.add_argument("--format", choices=("table", "json"), default="table")
    sp.add_argument("--out", type=Path, help="also write the JSON report here")

    sp = cmd("jobs", cmd_jobs, "fine-tune jobs and their states (from ClickHouse)")
    sp.add_argument("--format", choices=("table", "json"), default="table")


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


def _progress(total: int, label: str):
    from .progress import Progress

    return Progress(total, label)


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _json_arg(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError as exc:
        raise ConfigError(f"{what} must be a JSON object: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be a JSON object")
    return value


# ---------------------------------------------------------------- export


def cmd_export(args, settings: Settings) -> int:
    from agents.config import load_config
    from agents.learning.data import write_rows
    from infra.training_data import export_rows

    from .cli import parse_time, store_for

    task = load_config(settings.config).task
    with store_for(settings) as store:
        rows = export_rows(store, task, since=parse_time(args.since))
    n = write_rows(args.out, rows)
    splits = {s: sum(1 for r in rows if r["split"] == s) for s in ("train", "val")}
    repos = len({r["repo"] for r in rows})
    print(f"{n} labelled rows from {repos} repositories (train {splits['train']}, "
          f"val {splits['val']}) -> {args.out}")
    return 0


# ---------------------------------------------------------------- jobs in the store


def record(settings: Settings, event) -> None:
    """Write one job event to ClickHouse (the worker's store through its web port if it runs)."""
    from .cli import store_for

    with store_for(settings) as store:
        store.insert_events([event])


def cmd_jobs(args, settings: Settings) -> int:
    from agents.config import load_config
    from infra.queries import training_jobs

    from .cli import store_for
    from .reports import render_table

    task = load_config(settings.config).task
    with store_for(settings) as store:
        query = training_jobs(task)
        rows = store.query(query.sql, query.params).as_dicts()
    for r in rows:
        metrics = json.loads(r.pop("metrics") or "{}")
        r["val_macro_f1"] = (metrics.get("val") or {}).get("macro_f1")
        r["repos"] = ",".join(r.get("repos") or []) or "*"
    if args.format == "json":
        print(json.dumps(rows, indent=2, default=str))
    else:
        print(render_table(rows, ["job_id", "state", "version_id", "repos", "val_macro_f1",
                                  "queued_at", "updated_at", "error"]))
    return 0


# ---------------------------------------------------------------- train


def cmd_train(args, settings: Settings) -> int:
    from agents.config import load_config
    from agents.learning.data import load_examples, validation_split
    from agents.learning.jobs import adapter_spec, default_version_id, job_event

    config = load_config(settings.config)
    task = config.task
    overrides = _json_arg(args.params, "--params")
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.max_steps is not None:
        overrides["max_steps"] = args.max_steps
    from agents.learning.train import TrainParams

    params = TrainParams.from_dict(overrides)  # fail on bad parameters before any job exists
    if not 0 < args.val_fraction < 1:
        raise ConfigError(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
    if args.pool_other_repos and not args.repos:
        raise ConfigError("--pool-other-repos needs --repo: the scope the other rows are added to")
    job_id = new_id()
    repos = sorted(set(args.repos))
    version_id = None if args.no_register else (args.version_id or default_version_id(job_id, repos))
    common = dict(task=task, kind=args.task, data=str(args.data), base=str(args.base or ""),
                  out=str(args.out), repos=repos, version_id=version_id, params=overrides)
    record(settings, job_event(job_id, JobState.queued, **common))
    print(f"job {job_id} queued", file=sys.stderr)
    try:
        examples = load_examples(args.data, repos=None if args.pool_other_repos else repos or None,
                                 limit=args.limit)
        scoped = [e for e in examples if not repos or e.repo in repos]
        if not scoped:
            raise ConfigError(f"no labelled rows of {', '.join(repos)} in {args.data}")
        train, val = validation_split(scoped, args.val_fraction, seed=params.seed)
        pooled = [e for e in examples if e.repo not in repos] if args.pool_other_repos else []
        train += pooled
        record(settings, job_event(job_id, JobState.running, **common))
        _log(f"job {job_id} running: {len(train)} train ({len(pooled)} pooled from other "
             f"repositories) / {len(val)} val rows from {len({e.repo for e in examples})} "
             "repositories")
        from agents.learning.train import train_adapter

        result = train_adapter(train, val, args.out, params, base_dir=args.base,
                               progress=_progress, log=_log,
                               card={"data": str(args.data), "job_id": job_id, "repos": repos,
                                     "pooled_rows": len(pooled)})
        metrics = {"best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                   "seconds": result.seconds, "n_train": result.n_train, "n_val": result.n_val,
                   "val": {k: v for k, v in (result.val or {}).items() if k != "confusion"}}
        registered = None
        if version_id is not None:
            spec = adapter_spec(version_id, args.out, task=task, base=args.base, repos=repos,
                                train_params=overrides, job_id=job_id)
            registered = register_version(settings, config, spec, job_id)
    except (ReviewbusError, OSError, RuntimeError, ValueError) as exc:
        record(settings, job_event(job_id, JobState.failed, **common, error=str(exc)[:2000]))
        raise ReviewbusError(f"job {job_id} failed: {exc}") from exc
    record(settings, job_event(job_id, JobState.succeeded, **common, metrics=metrics))
    val_report = result.val or {}
    print(f"job {job_id} succeeded: adapter in {args.out} (best epoch {result.best_epoch}, "
          f"val accuracy {val_report.get('accuracy')}, macro-F1 {val_report.get('macro_f1')})")
    if registered:
        print(registered)
    return 0


def register_version(settings: Settings, config, spec: VersionSpec, job_id: str) -> str:
    """Register the adapter's version in shadow: on the lifecycle topic when a broker runs,
    else (embedded broker down) straight into the store's lifecycle history, which the next
    `reviewbus up` folds. Workers start serving it at their next start (streams/registered.py)."""
    from agents.registry import register_request

    reason = f"fine-tune job {job_id}"
    actor = f"train:{job_id}"
    try:
        from .lifecycle import publish_and_confirm, read_registry

        try:
            registry, bootstrap = read_registry(settings, config.task)
        except BrokerUnavailable:
            raise
        except ReviewbusError:  # a broker without lifecycle history yet
            from agents.registry import fold

            registry, bootstrap = fold(config.task, []), _broker(settings)
        event = register_request(registry, spec, actor=actor, reason=reason,
                                 static_blocklist=config.blocklist)
        _after, outcome = publish_and_confirm(settings, bootstrap, config.task, [event])
        skipped = outcome.get(event.event_id, "not found on the lifecycle topic")
        if skipped:
            raise ReviewbusError(f"register {spec.id}: not applied: {skipped}")
        where = "on the lifecycle topic"
    except BrokerUnavailable:
        if settings.kafka:
            raise
        event = _register_in_store(settings, config, spec, actor, reason)
        where = "in the store (the broker is down; `reviewbus up` picks it up)"
    return (f"registered {spec.id} in shadow{' for ' + ', '.join(spec.repos) if spec.repos else ''} "
            f"{where} (event {event.event_id}); workers serve it from their next start")


def _broker(settings: Settings) -> str:
    from infra.broker import find_broker

    return find_broker(settings).address


def _register_in_store(settings: Settings, config, spec: VersionSpec, actor: str,
                       reason: str) -> LifecycleEvent:
    from agents.registry import register_request
    from infra.readback import registry_from_store

    from .cli import store_for

    with store_for(settings) as store:
        registry = registry_from_store(store, config.task)
        event = register_request(registry, spec, actor=actor, reason=reason,
                                 static_blocklist=config.blocklist)
        store.insert_events([event])
    return event


# ---------------------------------------------------------------- eval


def find_spec(settings: Settings, version: str) -> VersionSpec:
    """A version of the versions file, of the registry (store), or an adapter directory."""
    from agents.config import load_config

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

        from .cli import store_for

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


def cmd_eval(args, settings: Settings) -> int:
    from agents.config import load_config
    from agents.learning.data import load_examples
    from agents.learning.evaluate import evaluate_protocol

    spec = find_spec(settings, args.version)
    batch = args.batch_size
    if batch is None:
        batch = load_config(settings.config).inference.batch_size
    if batch < 1:
        raise ConfigError("--batch-size must be at least 1")
    # pooling reads every repository; --repo then names the ones evaluated
    pool = args.pool_other_repos
    examples = load_examples(args.dataset, repos=None if pool else args.repos or None,
                             limit=args.limit)
    report = evaluate_protocol(spec, examples, args.protocol, train_fraction=args.train_fraction,
                               batch_size=batch, train_overrides=_json_arg(args.params, "--params"),
                               progress=_progress, log=_log,
                               pool_other_repos=pool, fold_repos=args.repos or None)
    report["dataset"] = str(args.dataset)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, default=str))
    if args.format == "json":
        print(json.dumps(report, indent=2, default=str))
    else:
        print(render_eval(report))
    return 0


def render_eval(report: dict[str, Any]) -> str:
    from .reports import render_table

    lines = [f"version {report.get('version')} ({report.get('protocol', 'static')}) on "
             f"{report.get('dataset', '-')}: n={report['n']}"]
    per_repo = report.get("per_repo")
    if per_repo:
        rows = [{"repo": r, "n": v["n"], "accuracy": v["accuracy"], "macro_f1": v["macro_f1"],
                 "p50_ms": v["p50_ms"], "p95_ms": v["p95_ms"]} for r, v in per_repo.items()]
        rows.append({"repo": "mean", "n": report["n"], "accuracy": report["accuracy"],
                     "macro_f1": report["macro_f1"], "p50_ms": report["p50_ms"],
                     "p95_ms": report["p95_ms"]})
        lines += ["", render_table(rows, ["repo", "n", "accuracy", "macro_f1", "p50_ms", "p95_ms"])]
        lines += ["", "mean F1 per class:",
                  render_table([{"label": k, **v} for k, v in report["per_class"].items()],
                               ["label", "f1", "repos"])]
        return "\n".join(lines)
    lines += [f"accuracy {report['accuracy']}  macro-F1 {report['macro_f1']}  "
              f"errors {report.get('errors', 0)}",
              f"latency p50 {report['p50_ms']} ms  p95 {report['p95_ms']} ms  "
              f"throughput {report.get('throughput_per_s')}/s", ""]
    lines.append(render_table([{"label": k, **v} for k, v in report["per_class"].items()],
                              ["label", "precision", "recall", "f1", "support"]))
    confusion = report.get("confusion") or {}
    if confusion:
        labels = list(confusion)
        lines += ["", "confusion (rows: truth, columns: predicted):"]
        lines.append(render_table([{"truth": t, **{p: confusion[t][p] for p in labels}}
                                   for t in labels], ["truth", *labels]))
    return "\n".join(lines)
