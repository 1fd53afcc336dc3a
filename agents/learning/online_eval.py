"""`reviewbus eval --protocol prequential`: the learner as it would have learned live.

`evaluate_prequential(examples, ...)` runs agents/learning/prequential.py with the learner's
strategy (agents/learning/learner.py) on labelled examples (read through intake, prefixes
masked) and returns the report: `accuracy`, `macro_f1` (means over repositories), `per_repo`,
`predictors` (the learner, the global base alone, the repository's own model alone), `curve`
(accuracy by labels seen), `takeover`, refit seconds; with `loro`, the static
leave-one-repository-out score of the global base too. `plot_curve` draws the curve as PNG.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .data import Example, by_repo, date_key
from .features import featurize
from .learner import LearnerParams
from .learner_store import HALF
from .learner_strategy import LearnerStrategy

Table = tuple[Any, list[str], dict[str, list[int]]]


def table(examples: Sequence[Example]) -> Table:
    """(counts, labels, {repo: rows oldest first}) of these examples, in their order."""
    counts = featurize([e.change for e in examples])
    index = {id(e): i for i, e in enumerate(examples)}
    repos = {repo: [index[id(e)] for e in sorted(rows, key=lambda e: (date_key(e.author_date), e.id))]
             for repo, rows in by_repo(examples).items()}
    return counts, [e.label for e in examples], repos


def context_counts(examples: Sequence[Example], counts: Any, labels: Sequence[str],
                   repos: dict[str, list[int]], warmup: int, refit_every: int
                   ) -> tuple[Any, Any, Any]:
    """The rows with their repository's label history (context.py): (as trained: the history
    before the last multiple of context.EVERY; as answered in the prequential protocol: the
    history before the row's block; as answered without any label of the repository)."""
    from . import context
    from .features import with_context

    train = np.zeros((counts.shape[0], context.N_CONTEXT))
    test = np.zeros_like(train)
    for order in repos.values():
        paths = [context.change_paths(examples[i].change) for i in order]
        ys = [labels[i] for i in order]
        train[order] = context.contexts_at(paths, ys, context.stale_bounds(len(order)))
        test[order] = context.contexts_at(paths, ys,
                                          context.block_bounds(len(order), warmup, refit_every))
    return (with_context(counts, train), with_context(counts, test),
            with_context(counts, np.zeros_like(train)))


def evaluate_prequential(examples: Sequence[Example], warmup: int = 100, refit_every: int = 50,
                         params: LearnerParams | dict[str, Any] | None = None, mode: str = "blend",
                         half: float = HALF, own_weight: float = 3.0,
                         embeddings: np.ndarray | None = None, loro: bool = True,
                         prepared: Table | None = None, log: Callable[[str], None] | None = None
                         ) -> dict[str, Any]:
    """The prequential report (and `loro` when asked). `embeddings`: MiniLM vectors in the
    examples' order (embeddings.EmbeddingCache), needed when params.embedding_weight > 0.
    `prepared`: the output of `table(examples)`, to featurize once for several runs."""
    from . import prequential

    if not isinstance(params, LearnerParams):
        params = LearnerParams.from_dict(params)
    counts, labels, repos = prepared if prepared is not None else table(examples)
    test_counts = None
    if params.context_weight > 0:
        counts, test_counts, static = context_counts(examples, counts, labels, repos, warmup,
                                                     refit_every)
    strategy = LearnerStrategy(counts, labels, params, embeddings=embeddings, mode=mode,
                               half=half, own_weight=own_weight, test_counts=test_counts)
    report = prequential.prequential(strategy, repos, labels, warmup, refit_every, log=log)
    report.update(model={"params": params.__dict__, "mode": mode, "half": half,
                         **({"own_weight": own_weight} if mode.startswith("pooled") else {})})
    if loro and len(repos) > 1 and test_counts is not None:
        # with the label history, the `global` predictor of the prequential run read the
        # repository's earlier labels; static LORO answers it without any (zero context)
        report["loro"] = prequential.loro(
            LearnerStrategy(counts, labels, params, embeddings=embeddings, test_counts=static),
            repos, labels)
        report["loro"]["per_repo"] = {r: {k: v[k] for k in ("accuracy", "macro_f1")}
                                      for r, v in report["loro"]["per_repo"].items()}
    elif loro and len(repos) > 1:
        # The `global` predictor is the base fitted on the other repositories answering every
        # commit of this one: the static leave-one-repository-out protocol, at no extra fit.
        report["loro"] = {
            "accuracy": report["predictors"]["global"]["accuracy"],
            "macro_f1": report["predictors"]["global"]["macro_f1"],
            "per_repo": {r: {k: v["predictors"]["global"][k] for k in ("accuracy", "macro_f1")}
                         for r, v in report["per_repo"].items()}}
    return report


def plot_curve(curves: dict[str, Sequence[dict[str, Any]]], path: Path,
               title: str = "prequential learning curve") -> Path:
    """One line per (run, predictor): accuracy by the number of the project's labels seen.
    `curves`: name -> a report's `curve`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for name, curve in curves.items():
        predictors = sorted({k for p in curve for k in p if k not in ("labels", "repos", "n")})
        for pred in predictors:
            pts = [(p["labels"], p[pred]) for p in curve if pred in p and p.get("repos", 2) >= 2]
            if not pts:
                continue
            style = {"learner": "-", "global": ":", "local": "--"}.get(pred, "-.")
            label = name if pred == "learner" else f"{name} ({pred})"
            ax.plot([x for x, _ in pts], [y for _, y in pts], style, label=label, linewidth=1.3)
    ax.set_xlabel("labels of the repository seen before the block")
    ax.set_ylabel("accuracy on the next block (mean over repositories)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def evaluate_dataset(dataset: Path, warmup: int = 100, refit_every: int = 50,
                     params: dict[str, Any] | None = None, repos: Sequence[str] = (),
                     limit: int | None = None, version: str | None = None,
                     log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The use case behind `reviewbus eval --protocol prequential`: a dataset file (the
    format of ../shared/datasets/, read through intake) -> the report. `params`: the learner's
    (LearnerParams fields, plus `mode`, `half`, `own_weight`); lexical features only (a model
    with embeddings is measured with bench/bench_learner.py, which caches them)."""
    from ..errors import ConfigError
    from .data import load_examples

    if warmup < 0 or refit_every < 1:
        raise ConfigError("--warmup must be >= 0 and --refit-every >= 1")
    params = dict(params or {})
    extra = {k: params.pop(k) for k in ("mode", "half", "own_weight") if k in params}
    try:
        learner_params = LearnerParams.from_dict(params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--params: {exc}") from exc
    if learner_params.embedding_weight > 0:
        raise ConfigError("embedding_weight > 0 needs cached embeddings: use bench/bench_learner.py")
    examples = load_examples(dataset, repos=list(repos) or None, limit=limit)
    report = evaluate_prequential(examples, warmup, refit_every, learner_params, log=log,
                                  **extra)
    report.update(dataset=str(dataset), version=version or "learner")
    return report


def render(report: dict[str, Any]) -> str:
    """The report as text: per repository and mean, every predictor, the curve's takeover."""
    names = sorted(report.get("predictors", {}))
    head = ["repo", "n"] + [f"{n} acc/F1" for n in names]
    rows = [[repo, str(r["n"])] + [f"{r['predictors'][n]['accuracy']:.3f} / "
                                   f"{r['predictors'][n]['macro_f1']:.3f}"
                                   if n in r["predictors"] else "-" for n in names]
            for repo, r in sorted(report["per_repo"].items())]
    rows.append(["mean", str(report["n"])] + [f"{report['predictors'][n]['accuracy']:.3f} / "
                                              f"{report['predictors'][n]['macro_f1']:.3f}"
                                              for n in names])
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    lines = [f"{report.get('version', 'learner')} (prequential, warmup {report['warmup']}, refit "
             f"every {report['refit_every']}) on {report.get('dataset', '-')}: accuracy "
             f"{report['accuracy']}, macro-F1 {report['macro_f1']}", ""]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in [head, *rows]]
    lines += ["", f"own model beats the global base from {report.get('takeover')} labels; "
                  f"refit {report.get('refit_seconds_mean')} s on average"]
    if "loro" in report:
        lines.append(f"leave-one-repository-out (global base): accuracy "
                     f"{report['loro']['accuracy']}, macro-F1 {report['loro']['macro_f1']}")
    return "\n".join(lines)
