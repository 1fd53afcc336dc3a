"""The learner's features: each field of a change hashed into its own block of columns.

Pure functions of a change (no fit, no state): `featurize` turns changes into raw counts,
which `learner.weigh` turns into TF-IDF at fit time. The blocks, in column order:
`message`, `paths`, `diff` (FIELDS), 12 `numeric` values, then `chars`, `shape`, `summary`
(EXTRA_FIELDS, hashed after the numeric columns so that a model fitted before they existed
still reads its columns at the same offsets), and last the `context` block (context.py), which
`featurize` leaves 0 and `with_context` sets. What each block holds: learner.py's docstring.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import numpy as np
from scipy import sparse  # type: ignore[import-untyped]

from schemas import NormalizedChange

from .context import N_CONTEXT  # the repository's label history: the last block of columns

FIELDS = ("message", "paths", "diff")
EXTRA_FIELDS = ("chars", "shape", "summary")
FIELD_DIMS = {"message": 1 << 18, "paths": 1 << 15, "diff": 1 << 17, "chars": 1 << 17,
              "shape": 1 << 12, "summary": 1 << 16}
N_NUMERIC = 12
_WORD = re.compile(r"[a-z0-9]+")
_PATH_SPLIT = re.compile(r"[/._\-]+")


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

    offsets = block_offsets()
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


def block_offsets() -> dict[str, int]:
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
    at = block_offsets()["context"]
    base = counts.tocsr()[:, :at]
    block = sparse.csr_matrix(np.asarray(ctx, dtype=np.float64).reshape(counts.shape[0], N_CONTEXT))
    out: sparse.csr_matrix = sparse.hstack([base, block], format="csr")
    return out


__all__ = ["EXTRA_FIELDS", "FIELDS", "FIELD_DIMS", "N_NUMERIC", "char_grams", "featurize",
           "field_tokens", "block_offsets", "path_tokens", "shape_tokens", "summary_tokens", "width",
           "with_context"]
