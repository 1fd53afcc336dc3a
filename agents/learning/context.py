"""The repository's own label history as features (issue 22): what a repository's earlier,
labelled commits say about the next one. Pure, numpy only.

A history is the list of `(changed paths, label)` of a repository's labelled commits, oldest
first, as the learner knew them when it was fitted (its state keeps the newest `HISTORY` of
them: agents/learning/learner_store.py). From it, per change, `N_CONTEXT` numbers:

- `recent`: the label distribution of the newest `RECENT` commits of the history;
- `file`: the label distribution of the history's commits that touched one of the change's
  files;
- `top`: the same by top-level directory (`docs/`, `tests/`, `.github/`, a file at the root);
- `dir`: the same by the first two directory levels (`src/commitizen/`).

Each is smoothed towards the repository's overall distribution (`recent` towards the uniform
one) and written as log(p * 9) / 3 (0: no evidence; positive: more often than chance).

Leakage: a commit's context never reads its own label or a later one. A training row's context
is the history before the last multiple of `EVERY` (50) at or before it (`stale_bounds`: as
stale as a state refit every 50 labels would have served it); in the prequential protocol a
block's commits are answered in the context of the commits before the block (`block_bounds`),
which is the history the state fitted on those commits saves and the backend serves with
(`history`, `serving_contexts`). Static leave-one-repository-out answers with no history (the
zero context).

Measured on ../shared/datasets/ (docs/guides/learner.md): it lifts the global base when the
repository's labels are known (prequential `global` 0.672 -> 0.722 accuracy at weight 0.15) but
lowers the learner's accuracy (0.751 -> 0.748; 0.733 at weight 0.5): the repository's own model
already reads the same evidence from the paths. Off by default (`context_weight: 0`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from schemas import CHANGE_TYPES, NormalizedChange

if TYPE_CHECKING:
    from .data import Example

LABELS = tuple(CHANGE_TYPES)
GROUPS = ("recent", "file", "top", "dir")
N_CONTEXT = len(GROUPS) * len(LABELS)
HISTORY = 1000  # newest commits of a repository a state keeps (and a context reads)
RECENT = 100
SMOOTH = 4.0  # pseudo-counts of the prior in a smoothed distribution

History = Sequence[tuple[Sequence[str], str]]


def _keys(path: str) -> tuple[str, str, str]:
    parts = path.split("/")
    top = parts[0] + "/" if len(parts) > 1 else "."
    d2 = "/".join(parts[:2]) + "/" if len(parts) > 2 else top
    return path, top, d2


class Index:
    """Label counts of a history by recent window, file, top-level and two-level directory."""

    def __init__(self, history: History) -> None:
        history = list(history)[-HISTORY:]
        k = len(LABELS)
        self.total = np.zeros(k)
        self.recent = np.zeros(k)
        self.by: tuple[dict[str, np.ndarray], ...] = ({}, {}, {})
        for i, (paths, label) in enumerate(history):
            if label not in LABELS:
                continue
            j = LABELS.index(label)
            self.total[j] += 1
            if i >= len(history) - RECENT:
                self.recent[j] += 1
            for group, keys in zip(self.by, zip(*(_keys(p) for p in paths)) if paths else ()):
                for key in set(keys):
                    group.setdefault(key, np.zeros(k))[j] += 1

    def features(self, paths: Sequence[str]) -> np.ndarray:
        k = len(LABELS)
        uniform = np.full(k, 1.0 / k)
        prior = (self.total + SMOOTH * uniform) / (self.total.sum() + SMOOTH)
        out = [(self.recent + SMOOTH * uniform) / (self.recent.sum() + SMOOTH)]
        keys = [_keys(p) for p in paths]
        for g, group in enumerate(self.by):
            c = np.zeros(k)
            for key in {ks[g] for ks in keys}:
                hit = group.get(key)
                if hit is not None:
                    c += hit
            out.append((c + SMOOTH * prior) / (c.sum() + SMOOTH))
        p = np.concatenate(out)
        result: np.ndarray = np.log(p * k) / 3.0
        return result


def contexts(history: History, changes_paths: Sequence[Sequence[str]]) -> np.ndarray:
    """[n, N_CONTEXT]: the context of each change (its paths) from one history."""
    index = Index(history)
    out = np.zeros((len(changes_paths), N_CONTEXT))
    for i, paths in enumerate(changes_paths):
        out[i] = index.features(paths)
    return out


EVERY = 50  # a training row's context: the history before the last multiple of EVERY


def stale_bounds(n: int, every: int | None = None) -> list[int]:
    """The history length each of a repository's n commits (oldest first) is trained with:
    the commits before the last multiple of `every` at or before it, as a state refit every
    `every` (default EVERY) labels would have answered it; never the commit itself or a later
    one."""
    step = every or EVERY
    return [(j // step) * step for j in range(n)]


def block_bounds(n: int, warmup: int, refit_every: int) -> list[int]:
    """The history length each commit is answered with under the prequential protocol: 0 in
    the warmup, then the commits before its block (prequential.blocks)."""
    from .prequential import blocks

    out = [0] * n
    for seen, end in blocks(n, warmup, refit_every):
        for j in range(seen, end):
            out[j] = seen
    return out


def contexts_at(paths: Sequence[Sequence[str]], labels: Sequence[str],
                bounds: Sequence[int]) -> np.ndarray:
    """[n, N_CONTEXT]: commit j of one repository (oldest first) in the context of the
    history of its first bounds[j] commits (bounds[j] <= j: no label of j or later)."""
    if any(b > j for j, b in enumerate(bounds)):
        raise ValueError("a commit's context may only read the labels of earlier commits")
    out = np.zeros((len(paths), N_CONTEXT))
    groups: dict[int, list[int]] = {}
    for j, b in enumerate(bounds):
        groups.setdefault(b, []).append(j)
    for b, rows in groups.items():
        hist = list(zip(paths[:b], labels[:b]))
        out[rows] = contexts(hist, [paths[j] for j in rows])
    return out


def change_paths(change: NormalizedChange) -> list[str]:
    from .text import _paths

    return _paths(change)


def training_contexts(examples: Sequence[Example], every: int | None = None) -> np.ndarray:
    """[n, N_CONTEXT] in the examples' order: each example in the context of its repository's
    examples before the last multiple of `every` at or before it (author-date order)."""
    from .data import date_key

    out = np.zeros((len(examples), N_CONTEXT))
    by_repo: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        by_repo.setdefault(e.repo, []).append(i)
    for rows in by_repo.values():
        rows.sort(key=lambda i: (date_key(examples[i].author_date), examples[i].id))
        paths = [change_paths(examples[i].change) for i in rows]
        labels = [examples[i].label for i in rows]
        out[rows] = contexts_at(paths, labels, stale_bounds(len(rows), every))
    return out


def history(examples: Sequence[Example]) -> list[list[Any]]:
    """A repository's examples (author-date order) as the state keeps them: [paths, label] of
    the newest HISTORY."""
    return [[change_paths(e.change), e.label] for e in list(examples)[-HISTORY:]]


def serving_contexts(changes: Sequence[NormalizedChange],
                     histories: Mapping[str, History]) -> np.ndarray:
    """[n, N_CONTEXT]: each change in the context of its repository's saved history (none:
    the zero context of a repository without labels)."""
    out = np.zeros((len(changes), N_CONTEXT))
    by_repo: dict[str, list[int]] = {}
    for i, c in enumerate(changes):
        by_repo.setdefault(c.repo, []).append(i)
    for repo, rows in by_repo.items():
        hist = [(list(p), str(lbl)) for p, lbl in histories.get(repo) or []]
        out[rows] = contexts(hist, [change_paths(changes[i]) for i in rows])
    return out
