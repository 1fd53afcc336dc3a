"""One refit of the live learner (CPU work; the flow runs it in a thread): labelled rows ->
examples -> the global base and one repository's own model -> a state in a new directory,
with the metrics its model card carries.

Metrics, both cheap:
- `holdout`: the repository's newest `holdout_fraction` of labels (by author date) answered by
  a refit of everything else (base without them, own model on the repository's older labels):
  what this refit would have scored on the commits it is about to meet, as far as the past
  tells. One more fit of the base; `holdout_fraction: 0` skips it.
- `prequential`: the parent (the repository's previous refit) on the labels it never saw, as
  the `learner` backend answers them: the live track record of the model this one replaces.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from schemas import VersionSpec

from ..errors import BackendError, ConfigError, InvalidEvent
from .context import history
from .data import Example, date_key, example_from_row
from .learner import LearnerParams, LinearModel, argmax_labels, blend, fit, own_weights
from .learner_store import HALF, LearnerStore, repo_file, serving_counts, training_counts
from .metrics import classification_report

log = logging.getLogger("reviewbus")


@dataclass
class Refit:
    repo: str
    manifest: dict[str, Any]
    base: LinearModel
    own: dict[str, LinearModel]
    examples: list[Example]  # the repository's, in author-date order
    global_rows: int
    metrics: dict[str, Any] = field(default_factory=dict)
    fit_s: float = 0.0


def examples_from_rows(rows: Sequence[dict[str, Any]]) -> list[Example]:
    """Export rows (agents.learning.export.training_rows) as examples, oldest first; a row
    intake would refuse today is left out."""
    out = []
    for row in rows:
        try:
            out.append(example_from_row(row))
        except (ConfigError, InvalidEvent) as exc:
            log.info("learner: row %s left out: %s", row.get("id"), exc)
    return sorted(out, key=lambda e: (date_key(e.author_date), e.id))


def _fit_own(mine: Sequence[Example], params: LearnerParams, takeover: int
             ) -> LinearModel | None:
    if len(mine) < takeover:
        return None
    return fit(training_counts(mine, params), [e.label for e in mine], params,
               sample_weight=own_weights(len(mine), params))


def _fit_base(examples: Sequence[Example], params: LearnerParams) -> LinearModel:
    return fit(training_counts(examples, params), [e.label for e in examples], params)


def _entry(mine: Sequence[Example], params: LearnerParams) -> dict[str, Any]:
    """What the state keeps of a repository besides its model: its labels, and with
    `context_weight` the label history the backend answers its changes in."""
    entry: dict[str, Any] = {"labels": len(mine), "fitted_on": 0, "file": None,
                             "trained_ids": [e.id for e in mine]}
    if params.context_weight > 0:
        entry["history"] = history(mine)
    return entry


def holdout_metrics(examples: Sequence[Example], repo: str, params: LearnerParams,
                    takeover: int, half: float, fraction: float) -> dict[str, Any]:
    mine = [e for e in examples if e.repo == repo]
    k = int(round(len(mine) * fraction))
    if fraction <= 0 or k < 1 or len(mine) - k < 1:
        return {}
    held = {e.id for e in mine[-k:]}
    rest = [e for e in examples if e.id not in held]
    head = mine[:-k]
    base, own = _fit_base(rest, params), _fit_own(head, params, takeover)
    tail = mine[-k:]
    counts = serving_counts([e.change for e in tail],
                            {"params": asdict(params), "repos": {repo: _entry(head, params)}})
    proba = base.predict_proba(counts)
    if own is not None:
        proba = blend(proba, own.predict_proba(counts), len(head), half)
    report = classification_report([e.label for e in tail], argmax_labels(proba))
    return {"n": k, "trained_on": len(head), "accuracy": report["accuracy"],
            "macro_f1": report["macro_f1"]}


def refit(examples: Sequence[Example], repo: str, *, params: dict[str, Any] | None = None,
          takeover: int = 100, half: float = HALF, holdout_fraction: float = 0.15,
          base: LinearModel | None = None) -> Refit:
    """The global base on every example (or `base`, reused across the repositories of one
    tick: the live agent fits it on each repository's newest labels, a window of these
    examples), the repository's own model on its examples when it has `takeover` of them, and
    the holdout metrics (whose base is refitted on `examples` without the held-out labels)."""
    t0 = time.perf_counter()
    lp = LearnerParams.from_dict(params)
    examples = sorted(examples, key=lambda e: (date_key(e.author_date), e.id))
    mine = [e for e in examples if e.repo == repo]
    if not mine:
        raise ValueError(f"no labelled examples of {repo}")
    own: dict[str, LinearModel] = {}
    base = base if base is not None else _fit_base(examples, lp)
    own_model = _fit_own(mine, lp, takeover)
    entry = _entry(mine, lp)
    if own_model is not None:
        own[repo] = own_model
        entry.update(fitted_on=len(mine), file=repo_file(repo))
    manifest = {"params": asdict(lp), "takeover": takeover, "half": half,
                "global_rows": len(examples), "repos": {repo: entry}}
    metrics = {"holdout": holdout_metrics(examples, repo, lp, takeover, half, holdout_fraction)}
    return Refit(repo, manifest, base, own, mine, len(examples), metrics,
                 time.perf_counter() - t0)


def fit_base(examples: Sequence[Example], params: dict[str, Any] | None = None) -> LinearModel:
    """The global base on every example (one fit per tick, shared by its refits)."""
    return _fit_base(examples, LearnerParams.from_dict(params))


def parent_score(parent: VersionSpec | None, mine: Sequence[Example]) -> dict[str, Any]:
    """The parent refit's accuracy on this repository's labels it was not fitted on, answered
    as its backend answers them; {} without a parent, its state, or new labels."""
    if parent is None:
        return {}
    from ..backends.learner import LearnerBackend

    try:
        backend = LearnerBackend(parent)
        seen = set(((backend.store.manifest().get("repos") or {}).get(mine[0].repo) or {})
                   .get("trained_ids") or [])
    except (ConfigError, OSError, ValueError) as exc:  # an archived parent's state is gone
        log.info("learner: no track record of %s: %s", parent.id, exc)
        return {}
    new = [e for e in mine if e.id not in seen]
    if not new:
        return {}
    try:
        answers = backend.predict([e.change for e in new])
    except BackendError as exc:
        log.info("learner: %s cannot answer: %s", parent.id, exc)
        return {}
    predicted = [p.change_type.label if p.change_type else "" for p in answers]
    report = classification_report([e.label for e in new], predicted)
    return {"version": parent.id, "n": len(new), "accuracy": report["accuracy"],
            "macro_f1": report["macro_f1"]}


def save(result: Refit, directory: Path) -> None:
    """Write the state (a new directory per version: nothing served is rewritten)."""
    LearnerStore(directory).save(result.manifest, result.base, result.own)
