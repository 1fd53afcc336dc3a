"""The continuous learner's model: a calibrated linear classifier over lexical features (and,
optionally, frozen MiniLM embeddings), refit in seconds on every N new labels.

Pure model code: numpy, scipy and scikit-learn, no I/O except `to_bytes` / `from_bytes`, which
serialise a fitted model to one compressed `.npz` blob (the caller decides where it lives).

Features (`features.featurize`), each field hashed into its own block of columns (zlib's
crc32: stateless, identical across processes):
- `message`: word 1-2-grams of the masked message (every Conventional Commits prefix removed,
  also in the body: intake masks, `text_fields` masks again);
- `paths`: each changed path's tokens, directories, file name, extension and path kind
  (`docs`, `test`, `build_ci`, `code`), plus the change's size bucket;
- `diff`: words of the changed lines (`text.changed_lines`, the first 2,000);
- `numeric`: `text.features` (12 values in [0, ~1.5]);
- `chars`: character 3-5-grams inside the masked message's words (`char_grams`);
- `shape`: the change's shape (`shape_tokens`): its set of path kinds and extensions, top-level
  directories, size and added share in buckets, file statuses, a version bump in the diff;
- `summary`: the first line's word n-grams and first words (off by default: measured, no gain);
- `context`: the repository's label history (agents/learning/context.py; off by default:
  measured, lower accuracy). The only block that is not a function of the change alone:
  `featurize` leaves it 0 and `with_context` sets it.
The blocks after `numeric` came later; a model fitted before them reads only its own columns.
A fit turns counts into TF-IDF (sublinear tf, idf over the training rows), L2-normalises every
field on its own and scales it by its weight (`numeric` and `context` are kept as they are,
times their weight). With `embeddings`, the rows' MiniLM vectors are appended as dense columns
(scaled by `embedding_weight`).

`fit(X, y, ...)` returns a `LinearModel`: multinomial logistic regression (L-BFGS, fixed
iterations: deterministic), class weights balanced (inverse frequency ^ `balance`), optional
per-row sample weights (`own_weights`: with `recency`, a repository's own model weighs its newer
commits more).
`predict_proba` returns the 9 CHANGE_TYPES columns always, so models fitted on different label
subsets blend.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
from scipy import sparse  # type: ignore[import-untyped]

from schemas import CHANGE_TYPES

from .features import EXTRA_FIELDS, FIELDS, block_offsets

if TYPE_CHECKING:
    from .stacking import StackedModel

LABELS = tuple(CHANGE_TYPES)


@dataclass(frozen=True)
class LearnerParams:
    """What a fit needs; stored with the model."""

    c: float = 8.0                      # inverse L2 strength of the logistic regression
    balance: float = 1.0                # class weight = (n / (k * count)) ** balance; 0: none
    message_weight: float = 1.0
    paths_weight: float = 0.6
    diff_weight: float = 0.6
    numeric_weight: float = 0.5
    chars_weight: float = 1.0           # character 3-5-grams of the masked message's words
    shape_weight: float = 0.25          # the change's shape: kinds, extensions, sizes, bumps
    summary_weight: float = 0.0         # the message's first line alone, and its first words
    context_weight: float = 0.0         # the repository's label history (context.py)
    recency: float = 300.0              # > 0: the own model weighs a commit 2^(-age / recency)
    embedding_weight: float = 0.0       # > 0: MiniLM vectors appended (needs embeddings)
    max_iter: int = 300
    # the head over the linear model (agents/learning/stacking.py): linear (served and stored);
    # calibrated, gbdt, gbdt_dense, mix are measured by bench/bench_learner.py, not stored
    head: str = "linear"
    head_folds: int = 5                 # cross-fitted folds of a stacked head
    gb_max_iter: int = 100              # the gbdt heads' boosting iterations
    gb_learning_rate: float = 0.05
    gb_max_leaf_nodes: int = 7
    gb_min_samples_leaf: int = 20
    gb_dense_dims: int = 32             # gbdt_dense: principal directions of the embedding kept
    mix_weight: float = 0.5             # mix: the booster's share of the averaged probabilities

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> LearnerParams:
        data = dict(data or {})
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown learner params {unknown}; known: "
                             f"{sorted(cls.__dataclass_fields__)}")
        return cls(**{k: type(getattr(cls(), k))(v) for k, v in data.items()})


# ---------------------------------------------------------------- weighting


def fit_idf(counts: sparse.csr_matrix) -> np.ndarray:
    """Smoothed idf per column over these rows (columns never seen get the maximum)."""
    n = counts.shape[0]
    df = np.bincount(counts.indices, minlength=counts.shape[1]).astype(np.float64)
    out: np.ndarray = np.log((1.0 + n) / (1.0 + df)) + 1.0
    return out


def weigh(counts: sparse.csr_matrix, idf: np.ndarray, params: LearnerParams) -> sparse.csr_matrix:
    """Sublinear tf * idf, each field L2-normalised then scaled by its weight; numeric columns
    kept as they are, times numeric_weight."""
    x = counts.tocsr(copy=True).astype(np.float64)
    offsets = block_offsets()
    blocks = [*FIELDS, "numeric", *EXTRA_FIELDS, "context"]
    field_of = np.searchsorted(np.array([offsets[f] for f in blocks]),
                               x.indices, side="right") - 1  # a block per column
    is_text = (field_of != blocks.index("numeric")) & (field_of != blocks.index("context"))
    x.data[is_text] = (1.0 + np.log(np.maximum(x.data[is_text], 1.0))) * idf[x.indices[is_text]]
    weights = {"message": params.message_weight, "paths": params.paths_weight,
               "diff": params.diff_weight, "numeric": params.numeric_weight,
               "chars": params.chars_weight, "shape": params.shape_weight,
               "summary": params.summary_weight,
               "context": params.context_weight}
    row_of = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
    k = len(blocks)
    norms = np.sqrt(np.bincount(row_of * k + field_of, weights=x.data ** 2,
                                minlength=x.shape[0] * k)).reshape(x.shape[0], k)
    scale = np.array([weights[f] for f in blocks])
    denom = np.where(is_text, norms[row_of, field_of], 1.0)
    x.data = x.data / np.where(denom > 0, denom, 1.0) * scale[field_of]
    x.eliminate_zeros()
    return x


def design(counts: sparse.csr_matrix, idf: np.ndarray, params: LearnerParams,
           embeddings: np.ndarray | None = None) -> sparse.csr_matrix:
    x = weigh(counts, idf, params)
    if params.embedding_weight > 0:
        if embeddings is None:
            raise ValueError("these learner params need embeddings")
        x = sparse.hstack([x, sparse.csr_matrix(embeddings * params.embedding_weight)],
                          format="csr")
    return x


# ---------------------------------------------------------------- model


@dataclass
class LinearModel:
    """A fitted learner: idf, the classes it saw, coefficients (only the columns seen in
    training are non-zero), intercepts, params and a small card (rows, label counts)."""

    params: LearnerParams
    idf: np.ndarray
    classes: list[str]
    coef: sparse.csr_matrix | np.ndarray
    intercept: np.ndarray
    card: dict[str, Any] = field(default_factory=dict)

    def scores(self, counts: sparse.csr_matrix, embeddings: np.ndarray | None = None) -> np.ndarray:
        if counts.shape[1] > len(self.idf):  # a model fitted before the extra fields existed
            counts = counts[:, :len(self.idf)]
        x = design(counts, self.idf, self.params, embeddings)
        coef = self.coef
        z: np.ndarray = np.asarray((x @ coef.T).todense() if sparse.issparse(coef) else x @ coef.T)
        out: np.ndarray = z + self.intercept
        return out

    def predict_proba(self, counts: sparse.csr_matrix,
                      embeddings: np.ndarray | None = None) -> np.ndarray:
        """[n, 9] over LABELS (columns of classes never seen are 0)."""
        out = np.zeros((counts.shape[0], len(LABELS)))
        if len(self.classes) == 1:
            out[:, LABELS.index(self.classes[0])] = 1.0
            return out
        z = self.scores(counts, embeddings)
        if z.shape[1] == 1:  # binary: scikit-learn's single column
            z = np.hstack([-z / 2, z / 2])
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        for j, lbl in enumerate(self.classes):
            out[:, LABELS.index(lbl)] = p[:, j]
        return out

    def to_bytes(self) -> bytes:
        """One compressed npz: float32 coefficients of the columns seen, their idf, meta."""
        import json

        coef = sparse.csr_matrix(self.coef)
        top = float(self.idf.max()) if len(self.idf) else 0.0
        cols = np.nonzero(self.idf != top)[0]  # columns seen in training; the rest share `top`
        meta = {"params": asdict(self.params), "classes": self.classes, "card": self.card}
        buf = io.BytesIO()
        np.savez_compressed(
            buf, coef_data=coef.data.astype(np.float32), coef_indices=coef.indices.astype(np.int32),
            coef_indptr=coef.indptr.astype(np.int32), coef_shape=np.array(coef.shape),
            intercept=np.asarray(self.intercept, dtype=np.float64),
            idf_cols=cols.astype(np.int32), idf_vals=self.idf[cols], idf_len=np.array([len(self.idf)]),
            idf_top=np.array([top]),
            meta=np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> LinearModel:
        import json

        with np.load(io.BytesIO(data)) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            coef = sparse.csr_matrix((z["coef_data"].astype(np.float64), z["coef_indices"],
                                      z["coef_indptr"]), shape=tuple(z["coef_shape"]))
            n_idf = int(z["idf_len"][0])
            idf = np.full(n_idf, float(z["idf_top"][0]))
            idf[z["idf_cols"]] = z["idf_vals"]
            intercept = z["intercept"]
        return cls(params=LearnerParams(**meta["params"]), idf=idf, classes=meta["classes"],
                   coef=coef, intercept=intercept, card=meta.get("card", {}))


Model: TypeAlias = "LinearModel | StackedModel"


def class_weights(labels: Sequence[str], balance: float) -> dict[str, float]:
    counts: dict[str, int] = {}
    for lbl in labels:
        counts[lbl] = counts.get(lbl, 0) + 1
    n, k = len(labels), len(counts)
    return {lbl: (n / (k * c)) ** balance for lbl, c in counts.items()}


def fit(counts: sparse.csr_matrix, labels: Sequence[str], params: LearnerParams,
        embeddings: np.ndarray | None = None, sample_weight: np.ndarray | None = None,
        idf_rows: sparse.csr_matrix | None = None) -> LinearModel:
    """One deterministic fit. `idf_rows`: the rows to take idf from (default: these)."""
    from sklearn.linear_model import LogisticRegression

    labels = list(labels)
    if not labels:
        raise ValueError("no rows to fit")
    if params.head != "linear":
        raise ValueError(f"head {params.head!r} is fitted by stacking.fit_model, not stored")
    idf = fit_idf(idf_rows if idf_rows is not None else counts)
    classes = sorted(set(labels), key=LABELS.index)
    card = {"rows": len(labels), "labels": {c: labels.count(c) for c in classes}}
    if len(classes) == 1:
        return LinearModel(params, idf, classes, sparse.csr_matrix((1, counts.shape[1])),
                           np.zeros(1), card)
    x = design(counts, idf, params, embeddings)
    cw = class_weights(labels, params.balance)
    w = np.array([cw[lbl] for lbl in labels])
    if sample_weight is not None:
        w = w * np.asarray(sample_weight, dtype=np.float64)
    w = w * (len(w) / w.sum())  # mean weight 1: C means the same at any mix
    used = np.unique(x.indices)  # fit on the columns these rows use: fewer parameters
    clf = LogisticRegression(C=params.c, max_iter=params.max_iter, tol=1e-3, solver="lbfgs")
    clf.fit(x[:, used], labels, sample_weight=w)
    full = np.zeros((clf.coef_.shape[0], x.shape[1]))
    full[:, used] = clf.coef_
    coef = sparse.csr_matrix(full)
    return LinearModel(params, idf, [str(c) for c in clf.classes_], coef,
                       clf.intercept_.astype(np.float64), card)


def own_weights(n: int, params: LearnerParams) -> np.ndarray | None:
    """Sample weights of a repository's own model over its n commits (oldest first): with
    `recency`, a commit `age` commits older than the newest weighs 2^(-age / recency); else
    None (all equal)."""
    if params.recency <= 0 or n == 0:
        return None
    age = np.arange(n - 1, -1, -1, dtype=np.float64)
    out: np.ndarray = 0.5 ** (age / params.recency)
    return out


def blend(global_proba: np.ndarray, local_proba: np.ndarray | None, n_local: int,
          half: float) -> np.ndarray:
    """The learner's answer: the global base's and the repository's own model's probabilities,
    weighted n / (n + half) towards the own model (0 without one)."""
    if local_proba is None or n_local <= 0:
        return global_proba
    lam = n_local / (n_local + half) if half > 0 else 1.0
    return (1 - lam) * global_proba + lam * local_proba


def argmax_labels(proba: np.ndarray) -> list[str]:
    return [LABELS[int(i)] for i in np.argmax(proba, axis=1)]


def entropy(p: np.ndarray) -> float:
    return float(-sum(x * math.log(x) for x in p if x > 0))
