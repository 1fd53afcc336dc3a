"""The continuous learner's model: a calibrated linear classifier over lexical features (and,
optionally, frozen MiniLM embeddings), refit in seconds on every N new labels.

Pure model code: numpy, scipy and scikit-learn, no I/O except `to_bytes` / `from_bytes`, which
serialise a fitted model to one compressed `.npz` blob (the caller decides where it lives).

Features (`featurize`), each field hashed into its own block of columns (crc32 through
scikit-learn's HashingVectorizer: stateless, identical across processes):
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
import re
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
from scipy import sparse  # type: ignore[import-untyped]

from schemas import CHANGE_TYPES, NormalizedChange

from .context import N_CONTEXT  # the repository's label history: the last block of columns

if TYPE_CHECKING:
    from .stacking import StackedModel

LABELS = tuple(CHANGE_TYPES)
FIELDS = ("message", "paths", "diff")
# hashed after the numeric columns, so that a model fitted before they existed still reads
# its columns at the same offsets (LinearModel.scores drops columns it has no weights for)
EXTRA_FIELDS = ("chars", "shape", "summary")
FIELD_DIMS = {"message": 1 << 18, "paths": 1 << 15, "diff": 1 << 17, "chars": 1 << 17,
              "shape": 1 << 12, "summary": 1 << 16}
N_NUMERIC = 12
_WORD = re.compile(r"[a-z0-9]+")
_PATH_SPLIT = re.compile(r"[/._\-]+")


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


# ---------------------------------------------------------------- features


def _hash_tokens(tokens: Sequence[str], dim: int) -> dict[int, float]:
    out: dict[int, float] = {}
    for t in tokens:
        k = zlib.crc32(t.encode()) % dim
        out[k] = out.get(k, 0.0) + 1.0
    return out


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _grams(words: list[str]) -> list[str]:
    return words + [f"{a} {b}" for a, b in zip(words, words[1:])]


def path_tokens(paths: Sequence[str]) -> list[str]:
    from ..changetype import path_kind

    out: list[str] = []
    for p in paths:
        low = p.lower()
        parts = low.split("/")
        name = parts[-1]
        out += [f"t:{t}" for t in _PATH_SPLIT.split(low) if t]
        out += [f"d:{'/'.join(parts[:i])}" for i in range(1, min(len(parts), 4))]
        out.append(f"f:{name}")
        if "." in name:
            out.append(f"x:{name.rsplit('.', 1)[-1]}")
        out.append(f"k:{path_kind(p)}")
    n = len(paths)
    out.append("n:" + ("0" if n == 0 else "1" if n == 1 else "2-3" if n <= 3 else
                       "4-10" if n <= 10 else "many"))
    return out


def field_tokens(change: NormalizedChange, fields: tuple[str, str, str] | None = None
                 ) -> tuple[list[str], list[str], list[str]]:
    """(message n-grams, path tokens, diff n-grams) of one change; `fields`: its
    `text_fields`, when the caller holds them already (they read the whole diff)."""
    from .text import _paths, text_fields

    message, _summary, diff = fields or text_fields(change)
    diff_words = [w for ln in diff.split("\n") if not ln.startswith("file: ")
                  for w in _words(ln)]
    return _grams(_words(message)), path_tokens(_paths(change)), diff_words[:2000]


def char_grams(message: str, lo: int = 3, hi: int = 5, limit: int = 300) -> list[str]:
    """Character lo..hi-grams inside each word (padded with spaces) of the masked message's
    first `limit` characters: `bump`, `bumps`, `bumped` share `bum`, `ump`."""
    out: list[str] = []
    for w in _words(message[:limit]):
        w = f" {w} "
        for n in range(lo, hi + 1):
            out += [w[i:i + n] for i in range(max(1, len(w) - n + 1))]
    return out


_VERSION_LINE = re.compile(r"^[+-].*\b(version|__version__|release)\b.*\d+\.\d+", re.I)


def shape_tokens(change: NormalizedChange) -> list[str]:
    """What kind of change this is by its shape: the set of path kinds and extensions (all of
    one kind: `only:<kind>`), the top-level directories, the size and the added share in
    buckets, new/removed files, and a version bump in the diff."""
    from ..changetype import path_kind
    from .text import _counts, _paths

    paths = _paths(change)
    kinds = sorted({path_kind(p) for p in paths})
    exts = sorted({p.rsplit("/", 1)[-1].rsplit(".", 1)[-1].lower() if "." in p.rsplit("/", 1)[-1]
                   else "-" for p in paths})
    tops = sorted({p.split("/", 1)[0].lower() if "/" in p else "." for p in paths})
    out = [f"k:{k}" for k in kinds] + [f"e:{e}" for e in exts[:8]] + [f"top:{t}" for t in tops[:8]]
    if len(kinds) == 1:
        out.append(f"only:{kinds[0]}")
    out.append("kinds:" + "+".join(kinds))
    if len(exts) == 1:
        out.append(f"only_ext:{exts[0]}")
    added, deleted = _counts(change)
    total = added + deleted
    out.append("lines:" + ("0" if total == 0 else "1-2" if total <= 2 else "3-10" if total <= 10
                           else "11-50" if total <= 50 else "51-300" if total <= 300 else "big"))
    share = added / total if total else 0.5
    out.append("share:" + ("del" if share < 0.2 else "mostly_del" if share < 0.45 else
                           "even" if share <= 0.55 else "mostly_add" if share <= 0.8 else "add"))
    status = sorted({f.status for f in change.files})
    out += [f"status:{st}" for st in status]
    bumps = sum(1 for ln in change.diff.split("\n")[:400] if _VERSION_LINE.match(ln)
                and not ln.startswith(("+++", "---")))
    if bumps:
        out.append("version_bump")
        if total <= 4 * bumps + 4:
            out.append("version_bump_only")
    return out


def summary_tokens(message: str) -> list[str]:
    """The first line's word 1-2-grams and its first and first two words (`first:add`)."""
    words = _words(message.split("\n", 1)[0])
    out = _grams(words)
    if words:
        out.append(f"first:{words[0]}")
        out.append(f"first2:{' '.join(words[:2])}")
        out.append(f"last:{words[-1]}")
    return out


def featurize(changes: Sequence[NormalizedChange]) -> sparse.csr_matrix:
    """Raw counts: [message | paths | diff | numeric | chars | shape | summary | context]
    columns (see FIELD_DIMS, N_NUMERIC, N_CONTEXT; the context columns are 0 here)."""
    from .text import features, text_fields

    offsets = _offsets()
    rows, cols, vals = [], [], []
    for i, change in enumerate(changes):
        fields = text_fields(change)
        message = fields[0]
        extra = (char_grams(message), shape_tokens(change), summary_tokens(message))
        for name, tokens in zip(FIELDS + EXTRA_FIELDS, (*field_tokens(change, fields), *extra)):
            for k, v in _hash_tokens(tokens, FIELD_DIMS[name]).items():
                rows.append(i)
                cols.append(offsets[name] + k)
                vals.append(v)
        for j, v in enumerate(features(change)):
            if v:
                rows.append(i)
                cols.append(offsets["numeric"] + j)
                vals.append(float(v))
    return sparse.csr_matrix((np.asarray(vals, dtype=np.float64), (rows, cols)),
                             shape=(len(changes), width()))


def _offsets() -> dict[str, int]:
    out, at = {}, 0
    for name in FIELDS:
        out[name] = at
        at += FIELD_DIMS[name]
    out["numeric"] = at
    at += N_NUMERIC
    for name in EXTRA_FIELDS:
        out[name] = at
        at += FIELD_DIMS[name]
    out["context"] = at
    return out


def width() -> int:
    return sum(FIELD_DIMS.values()) + N_NUMERIC + N_CONTEXT


def with_context(counts: sparse.csr_matrix, ctx: np.ndarray) -> sparse.csr_matrix:
    """These rows' counts with their context columns (context.py) set to `ctx` [n, N_CONTEXT]."""
    at = _offsets()["context"]
    base = counts.tocsr()[:, :at]
    block = sparse.csr_matrix(np.asarray(ctx, dtype=np.float64).reshape(counts.shape[0], N_CONTEXT))
    out: sparse.csr_matrix = sparse.hstack([base, block], format="csr")
    return out


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
    offsets = _offsets()
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


# ---------------------------------------------------------------- the protocol's strategy


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
