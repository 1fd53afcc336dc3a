"""The learner under the prequential protocol (`prequential.Strategy`): how `reviewbus eval
--protocol prequential` and bench/bench_learner.py run the learner, and the variants measured
beside it (pooled, adaptive; docs/guides/learner.md). The served path is learner_store.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse  # type: ignore[import-untyped]

from .learner import LABELS, LearnerParams, Model, argmax_labels, blend, own_weights


class LearnerStrategy:
    """`prequential.Strategy` over precomputed rows: `counts` (featurize), `labels`, optional
    `embeddings` (same row order).

    mode:
    - "blend": the own model is fitted on the repository's earlier commits alone; the learner
      answers blend(global, own, seen, half).
    - "pooled": one model fitted on the base's rows (weight 1) plus the repository's earlier
      commits weighted `own_weight` times their recency weight (`own_weights`); the learner
      answers with it. Also reported: `blend` (the blend mode's answer) and `mix` (the pooled
      model's and the blend's probabilities averaged 1:1).
    - "pooled-mix": as "pooled", the learner answers `mix`.
    - "adaptive": as "blend", but the own model's weight is chosen on its track record: the
      weight of a grid (0, 0.1, ..., 1) whose blend had the lowest log-loss on the commits the
      repository's earlier models already answered (test-then-train: labels the learner has
      seen); n / (n + half) until `min_track` such commits exist.
    - "global": the base alone (the fallback, and the LORO protocol's model).
    Every mode also reports `global` and `local` (own commits only), for the takeover point.
    """

    def __init__(self, counts: sparse.csr_matrix, labels: Sequence[str], params: LearnerParams,
                 embeddings: np.ndarray | None = None, mode: str = "blend", half: float = 200.0,
                 own_weight: float = 3.0, local_params: LearnerParams | None = None,
                 test_counts: sparse.csr_matrix | None = None) -> None:
        if mode not in ("blend", "adaptive", "pooled", "pooled-mix", "global"):
            raise ValueError(f"unknown mode {mode!r}")
        self.counts = counts.tocsr()
        # the rows as they are answered, when that differs from how they are trained: with
        # the repository's label history (context.py), a block is answered in the context of
        # the labels before it
        self.test_counts = self.counts if test_counts is None else test_counts.tocsr()
        self.labels = list(labels)
        self.params = params
        self.local_params = local_params or params
        self.embeddings = embeddings
        self.mode = mode
        self.half = half
        self.own_weight = own_weight
        self.min_track = 50
        self.track: dict[int, list[tuple[np.ndarray, np.ndarray, list[str]]]] = {}

    def _emb(self, rows: Sequence[int], params: LearnerParams) -> np.ndarray | None:
        if params.embedding_weight <= 0 or self.embeddings is None:
            return None
        return self.embeddings[list(rows)]

    def _fit(self, rows: Sequence[int], params: LearnerParams,
             weight: np.ndarray | None = None) -> Model:
        from .stacking import fit_model

        rows = list(rows)
        return fit_model(self.counts[rows], [self.labels[i] for i in rows], params,
                         self._emb(rows, params), weight)

    def _proba(self, model: Model, rows: Sequence[int]) -> np.ndarray:
        rows = list(rows)
        return model.predict_proba(self.test_counts[rows], self._emb(rows, model.params))

    def fit_base(self, rows: Sequence[int]) -> tuple[Model, list[int]]:
        base = self._fit(rows, self.params), list(rows)
        self.track[id(base)] = []
        return base

    def fit_local(self, base: tuple[Model, list[int]],
                  rows: Sequence[int]) -> dict[str, Model]:
        out = {"local": self._fit(rows, self.local_params,
                                  own_weights(len(rows), self.local_params))}
        if self.mode in ("pooled", "pooled-mix"):
            _model, base_rows = base
            both = list(base_rows) + list(rows)
            recency = own_weights(len(rows), self.params)
            own = self.own_weight * (recency if recency is not None else np.ones(len(rows)))
            weight = np.concatenate([np.ones(len(base_rows)), own])
            out["pooled"] = self._fit(both, self.params, weight)
        return out

    def predict(self, base: tuple[Model, list[int]], local: dict[str, Model] | None,
                seen: int, rows: Sequence[int]) -> dict[str, list[str]]:
        model, _rows = base
        g = self._proba(model, rows)
        out = {"global": argmax_labels(g)}
        if local is None:
            out["learner"] = out["global"]
            return out
        own = self._proba(local["local"], rows)
        out["local"] = argmax_labels(own)
        if self.mode in ("pooled", "pooled-mix"):
            pooled = self._proba(local["pooled"], rows)
            mixed = blend(g, own, seen, self.half)
            out["pooled"] = argmax_labels(pooled)
            out["blend"] = argmax_labels(mixed)
            out["mix"] = argmax_labels((pooled + mixed) / 2)
            out["learner"] = out["pooled" if self.mode == "pooled" else "mix"]
        elif self.mode == "blend":
            out["learner"] = argmax_labels(blend(g, own, seen, self.half))
        elif self.mode == "adaptive":
            track = self.track.setdefault(id(base), [])
            lam = track_weight(track, seen, self.half, self.min_track)
            out["learner"] = argmax_labels((1 - lam) * g + lam * own)
            # after answering, these rows' labels join the track record (test, then train)
            track.append((g, own, [self.labels[i] for i in rows]))
        else:
            out["learner"] = out["global"]
        return out


GRID = tuple(i / 10 for i in range(11))


def track_weight(track: Sequence[tuple[np.ndarray, np.ndarray, Sequence[str]]], seen: int,
                 half: float, min_track: int = 50) -> float:
    """The own model's blend weight from its track record: (global proba, own proba, truth)
    per answered block. The grid weight with the lowest log-loss; n / (n + half) while the
    record holds fewer than `min_track` commits."""
    n = sum(len(t) for _g, _o, t in track)
    if n < min_track:
        return seen / (seen + half) if half > 0 else 1.0
    g = np.vstack([b[0] for b in track])
    o = np.vstack([b[1] for b in track])
    truth = np.array([LABELS.index(lbl) for b in track for lbl in b[2]])
    rows = np.arange(len(truth))
    losses = [float(-np.log((1 - lam) * g[rows, truth] + lam * o[rows, truth] + 1e-9).mean())
              for lam in GRID]
    return GRID[int(np.argmin(losses))]


__all__ = ["GRID", "LearnerStrategy", "track_weight"]
