"""Second-level heads over the learner's linear model (issue 22: "a calibrated linear head or
gradient boosting"), chosen by `LearnerParams.head`:

- `linear`: the multinomial logistic regression of `learner.fit` alone (the default);
- `calibrated`: that model's log-probabilities re-weighted by a small multinomial logistic
  regression (matrix scaling) fitted on out-of-fold log-probabilities of the same rows;
- `gbdt`: scikit-learn's HistGradientBoostingClassifier on a reduced dense representation: the
  out-of-fold log-probabilities of the linear model (9 columns), the 12 numeric features and,
  when the params carry embeddings, nothing more (the linear model already reads them);
- `gbdt_dense`: the same booster on the frozen MiniLM embedding and the 12 numeric features,
  no linear model under it (needs `embedding_weight > 0`, which only switches the embeddings on),
  the embedding reduced to its `gb_dense_dims` principal directions on the training rows;
- `mix`: the linear model of these params fitted on all rows (with `embedding_weight > 0`, the
  lexical + MiniLM one) and the `gbdt_dense` booster, their probabilities averaged with the
  booster weighted `mix_weight`.

Cross-fitted: rows are dealt into `head_folds` folds (each label's rows round-robin in their
order: every fold holds every label and spans the whole time range) and a linear model fitted
on the other folds answers each fold; the head learns from these out-of-fold answers. A new
change is answered by the mean of the k fold models' log-probabilities, not by a model refit on
all rows: such a model is more confident than any out-of-fold answer the head learned from, and
its inputs would drift off the head's training range. Every step is deterministic (L-BFGS, the
booster with a fixed random_state and no early stopping), so equal data give equal answers.

Bench-only for now: a stacked model is not serialised (`learner_store` writes linear models).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy import sparse  # type: ignore[import-untyped]

from .features import N_NUMERIC, block_offsets
from .learner import LABELS, LearnerParams, LinearModel, class_weights, fit

HEADS = ("linear", "calibrated", "gbdt", "gbdt_dense", "mix")
_DENSE = ("gbdt_dense", "mix")  # heads whose booster reads the reduced embedding
_EPS = 1e-6


def numeric_columns(counts: sparse.csr_matrix) -> np.ndarray:
    """The 12 numeric features of these rows, dense."""
    at = block_offsets()["numeric"]
    out: np.ndarray = np.asarray(counts[:, at:at + N_NUMERIC].todense(), dtype=np.float64)
    return out


def _log_proba(model: LinearModel, counts: sparse.csr_matrix,
               embeddings: np.ndarray | None) -> np.ndarray:
    out: np.ndarray = np.log(model.predict_proba(counts, embeddings) + _EPS)
    return out


def _folds(labels: Sequence[str], k: int) -> np.ndarray:
    """Each row's fold: a label's rows dealt round-robin in their order, so every fold holds
    every label in proportion and spans the whole time range."""
    seen: dict[str, int] = {}
    out = np.zeros(len(labels), dtype=np.int64)
    for i, lbl in enumerate(labels):
        out[i] = seen.get(lbl, 0) % k
        seen[lbl] = seen.get(lbl, 0) + 1
    return out


def cross_fit(counts: sparse.csr_matrix, labels: Sequence[str], params: LearnerParams,
              embeddings: np.ndarray | None = None, sample_weight: np.ndarray | None = None,
              folds: int = 5) -> tuple[list[LinearModel], np.ndarray]:
    """One linear model per fold, fitted on the other folds, and the [n, 9] out-of-fold
    log-probabilities of every row (from the model that did not see it)."""
    n, k = len(labels), max(2, folds)
    fold = _folds(labels, k)
    out = np.zeros((n, len(LABELS)))
    models: list[LinearModel] = []
    for f in range(k):
        test = np.nonzero(fold == f)[0]
        train = np.nonzero(fold != f)[0]
        if not len(test) or not len(train):
            continue
        model = fit(counts[train], [labels[int(i)] for i in train], params,
                    None if embeddings is None else embeddings[train],
                    None if sample_weight is None else np.asarray(sample_weight)[train])
        out[test] = _log_proba(model, counts[test], None if embeddings is None else embeddings[test])
        models.append(model)
    return models, out


def _mean_log_proba(models: Sequence[LinearModel], counts: sparse.csr_matrix,
                    embeddings: np.ndarray | None) -> np.ndarray:
    out: np.ndarray = np.mean([_log_proba(m, counts, embeddings) for m in models], axis=0)
    return out


def _booster(params: LearnerParams) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        learning_rate=params.gb_learning_rate, max_iter=params.gb_max_iter,
        max_leaf_nodes=params.gb_max_leaf_nodes, min_samples_leaf=params.gb_min_samples_leaf,
        l2_regularization=1.0, early_stopping=False, random_state=0)


@dataclass
class StackedModel:
    """The fold models (none for `gbdt_dense`) and a second-level head over their answers."""

    params: LearnerParams
    linear: list[LinearModel]
    head: Any
    classes: list[str]
    card: dict[str, Any] = field(default_factory=dict)
    projection: tuple[np.ndarray, np.ndarray] | None = None  # gbdt_dense: (mean, components)

    def _inputs(self, counts: sparse.csr_matrix, embeddings: np.ndarray | None) -> np.ndarray:
        return _head_inputs(self.params, self.linear, counts, embeddings, None, self.projection)

    def predict_proba(self, counts: sparse.csr_matrix,
                      embeddings: np.ndarray | None = None) -> np.ndarray:
        """[n, 9] over LABELS (columns of classes never seen are 0)."""
        out = np.zeros((counts.shape[0], len(LABELS)))
        if len(self.classes) == 1 or self.head is None:
            out[:, LABELS.index(self.classes[0])] = 1.0
            return out
        if self.params.head == "mix":
            w = self.params.mix_weight
            booster = self.head.predict_proba(self._inputs(counts, embeddings))
            out = (1 - w) * self.linear[0].predict_proba(counts, embeddings)
            for j, lbl in enumerate(self.head.classes_):
                out[:, LABELS.index(str(lbl))] += w * booster[:, j]
            return out
        p = self.head.predict_proba(self._inputs(counts, embeddings))
        for j, lbl in enumerate(self.head.classes_):
            out[:, LABELS.index(str(lbl))] = p[:, j]
        return out


def projection(embeddings: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, [dims, 384] principal directions) of these rows (SVD, signs fixed)."""
    x = np.asarray(embeddings, dtype=np.float64)
    mean = x.mean(axis=0)
    _u, _s, vt = np.linalg.svd(x - mean, full_matrices=False)
    vt = vt[:dims]
    signs = np.sign(vt[np.arange(len(vt)), np.argmax(np.abs(vt), axis=1)])
    return mean, vt * signs[:, None]


def _head_inputs(params: LearnerParams, linear: Sequence[LinearModel], counts: sparse.csr_matrix,
                 embeddings: np.ndarray | None, log_proba: np.ndarray | None,
                 proj: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    if params.head in _DENSE:
        if embeddings is None or proj is None:
            raise ValueError("the gbdt_dense head needs embeddings (embedding_weight > 0)")
        reduced = (np.asarray(embeddings, dtype=np.float64) - proj[0]) @ proj[1].T
        return np.hstack([reduced, numeric_columns(counts)])
    if log_proba is None:
        log_proba = _mean_log_proba(linear, counts, embeddings)
    if params.head == "calibrated":
        return log_proba
    return np.hstack([log_proba, numeric_columns(counts)])


def fit_model(counts: sparse.csr_matrix, labels: Sequence[str], params: LearnerParams,
              embeddings: np.ndarray | None = None, sample_weight: np.ndarray | None = None
              ) -> LinearModel | StackedModel:
    """`learner.fit` for the linear head, else the linear model and its head."""
    if params.head not in HEADS:
        raise ValueError(f"unknown head {params.head!r}; known: {', '.join(HEADS)}")
    linear_params = replace(params, head="linear")
    if params.head == "linear":
        return fit(counts, labels, params, embeddings if params.embedding_weight > 0 else None,
                   sample_weight)
    labels = list(labels)
    classes = sorted(set(labels), key=LABELS.index)
    card = {"rows": len(labels), "labels": {c: labels.count(c) for c in classes},
            "head": params.head}
    emb = embeddings if params.embedding_weight > 0 else None
    if len(classes) == 1:
        return StackedModel(params, [], None, classes, card)
    linear: list[LinearModel] = []
    oof = None
    if params.head == "mix":
        linear = [fit(counts, labels, linear_params, emb, sample_weight)]
    elif params.head != "gbdt_dense":
        linear, oof = cross_fit(counts, labels, linear_params, emb, sample_weight,
                                params.head_folds)
    proj = None
    if params.head in _DENSE:
        if emb is None:
            raise ValueError("the gbdt_dense head needs embeddings (embedding_weight > 0)")
        proj = projection(emb, params.gb_dense_dims)
    x = _head_inputs(params, linear, counts, emb, oof, proj)
    cw = class_weights(labels, params.balance)
    w = np.array([cw[lbl] for lbl in labels])
    if sample_weight is not None:
        w = w * np.asarray(sample_weight, dtype=np.float64)
    w = w * (len(w) / w.sum())
    if params.head == "calibrated":
        from sklearn.linear_model import LogisticRegression

        head: Any = LogisticRegression(C=1.0, max_iter=1000, tol=1e-4, solver="lbfgs")
    else:
        head = _booster(params)
    head.fit(x, labels, sample_weight=w)
    return StackedModel(params, linear, head, classes, card, proj)
