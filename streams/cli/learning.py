"""`export`, `train`, `eval`, `jobs`: the learning loop.

    reviewbus export --task change_type [--since T] --out FILE.jsonl
    reviewbus train --task change_type --data FILE.jsonl [--base DIR] --out DIR [--repo R ...]
                    [--pool-other-repos]
    reviewbus eval --dataset FILE.jsonl --version V [--protocol static|temporal|loro]
                   [--pool-other-repos]
    reviewbus eval --dataset FILE.jsonl --protocol prequential [--warmup 100] [--refit-every 50]
                   [--plot FILE.png]
    reviewbus jobs [--format table|json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from agents.settings import Settings

from ..services import learning
from ..services.common import parse_time
from .render import Progress, add_format, emit, render_table, to_json

JOB_COLUMNS = ("job_id", "state", "version_id", "repos", "val_macro_f1", "queued_at",
               "updated_at", "error")


def register(cmd) -> None:
    sp = cmd("export", cmd_export, "labelled interactions from ClickHouse as training JSONL")
    sp.add_argument("--task", choices=learning.TASKS, default="change_type")
    sp.add_argument("--since", help="ISO time or age like 30d")
    sp.add_argument("--out", type=Path, required=True, help="FILE.jsonl (.gz to compress)")

    sp = cmd("train", cmd_train, "LoRA fine-tune a change-type adapter; register it in shadow")
    sp.add_argument("--task", choices=learning.TASKS, default="change_type")
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
    sp.add_argument("--max-steps", type=int, help=argparse.SUPPRESS)
    sp.add_argument("--limit", type=int, help="use at most N rows of the data")

    sp = cmd("eval", cmd_eval, "evaluate a version on a labelled dataset")
    sp.add_argument("--dataset", type=Path, required=True,
                    help="JSONL(.gz): message, diff, files, label")
    sp.add_argument("--version",
                    help="version id (versions file or registry), or an adapter directory "
                         "(required except with --protocol prequential)")
    sp.add_argument("--protocol", choices=("static", "temporal", "loro", "prequential"),
                    default="static")
    sp.add_argument("--warmup", type=int, default=100,
                    help="prequential: commits per repository answered by the global base alone")
    sp.add_argument("--refit-every", type=int, default=50,
                    help="prequential: refit the repository's own model every N labels")
    sp.add_argument("--plot", type=Path, metavar="FILE.png",
                    help="prequential: draw the learning curve")
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
    add_format(sp)
    sp.add_argument("--out", type=Path, help="also write the JSON report here")

    add_format(cmd("jobs", cmd_jobs, "fine-tune jobs and their states (from ClickHouse)"))


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def cmd_export(args, settings: Settings) -> int:
    n = learning.export(settings, args.out, parse_time(args.since))
    print(f"{n['n']} labelled rows from {n['repos']} repositories (train {n['train']}, "
          f"val {n['val']}) -> {args.out}")
    return 0


def cmd_jobs(args, settings: Settings) -> int:
    emit(learning.jobs(settings), args.format, JOB_COLUMNS)
    return 0


def cmd_train(args, settings: Settings) -> int:
    overrides = learning.json_object(args.params, "--params")
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.max_steps is not None:
        overrides["max_steps"] = args.max_steps
    job = learning.train(settings, data=args.data, out=args.out, base=args.base,
                         repos=args.repos, version_id=args.version_id,
                         register=not args.no_register, pool_other_repos=args.pool_other_repos,
                         val_fraction=args.val_fraction, overrides=overrides, limit=args.limit,
                         kind=args.task, log=_log, progress=Progress)
    result = job["result"]
    val = result.val or {}
    print(f"job {job['job_id']} succeeded: adapter in {args.out} (best epoch {result.best_epoch}, "
          f"val accuracy {val.get('accuracy')}, macro-F1 {val.get('macro_f1')})")
    if job["registered"]:
        print(job["registered"])
    return 0


def cmd_eval(args, settings: Settings) -> int:
    if args.protocol == "prequential":  # the continuous learner (agents/learning/online_eval.py)
        from agents.learning import online_eval

        report = online_eval.evaluate_dataset(
            args.dataset, args.warmup, args.refit_every,
            learning.json_object(args.params, "--params"), args.repos, args.limit, args.version,
            log=_log)
        if args.plot:
            online_eval.plot_curve({report["version"]: report["curve"]}, args.plot)
        if args.out:
            args.out.write_text(to_json(report))
        print(to_json(report) if args.format == "json" else online_eval.render(report))
        return 0
    if not args.version:
        from agents.errors import ConfigError

        raise ConfigError(f"--version is required with --protocol {args.protocol}")
    report = learning.evaluate(
        settings, args.version, args.dataset, protocol=args.protocol,
        train_fraction=args.train_fraction, batch_size=args.batch_size, repos=args.repos,
        pool_other_repos=args.pool_other_repos, limit=args.limit,
        overrides=learning.json_object(args.params, "--params"), log=_log, progress=Progress)
    if args.out:
        args.out.write_text(to_json(report))
    print(to_json(report) if args.format == "json" else render_eval(report))
    return 0


def render_eval(report: dict[str, Any]) -> str:
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
