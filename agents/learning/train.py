"""LoRA fine-tuning of the change-type model (peft), on CPU or GPU.

LoRA adapters sit on the top `trainable_layers` encoder layers only; the layers below are
frozen, so their outputs never change during training: `LowerCache` computes them once per
example (one forward pass, no gradients) and every epoch runs only the top layers. On CPU this
makes an epoch several times cheaper and gives the same model as a full forward pass (the
frozen layers run in eval mode, as they do at inference). The cache also serves every fold of
an evaluation protocol, since it depends only on the base model and the text.

Imports torch at module import: import lazily.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from schemas import CHANGE_TYPES

from ..changetype import risk_score
from ..errors import ConfigError
from .data import Example
from .head_refit import refit_head
from .metrics import classification_report
from .model_card import write_model_card
from .modeling import (
    RISK_LEVELS,
    ChangeTypeModel,
    ModelMeta,
    default_base_dir,
    load_encoder,
    pick_device,
    save_model,
    seed_everything,
)
from .text import LEXICAL_SCHEMES, build_text, features

ProgressFactory = Callable[[int, str], Any]  # (total, label) -> object with update(n), close()


@dataclass
class TrainParams:
    epochs: int = 6
    batch_size: int = 16
    lr: float = 1e-3  # LoRA weights
    head_lr: float = 3e-3  # the linear heads
    weight_decay: float = 0.01
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_targets: list[str] = field(default_factory=lambda: ["query", "key", "value", "dense"])
    trainable_layers: int = 2  # LoRA on the top N encoder layers; the rest is frozen (cached)
    max_length: int = 256
    class_balance: float = 0.5  # loss weight per class = (inverse frequency) ** class_balance
    label_smoothing: float = 0.0
    risk_weight: float = 0.1  # auxiliary risk head, weakly supervised (see below)
    use_features: bool = True
    lexical_dim: int = 1 << 14  # wide part over hashed n-grams; 0 turns it off
    lexical_scheme: str = "text"  # text.LEXICAL_SCHEMES ("fields": see README, Quality)
    wide_lr: float = 3e-2
    # After the LoRA epochs, refit the change-type head (deep + wide parts together) as an
    # L2-regularised multinomial logistic regression over the fine-tuned encoder's pooled
    # output, the numeric features and the n-grams, solved to convergence (L-BFGS): a few
    # epochs of Adam leave a linear head on sparse inputs far from its optimum. C and the class
    # weighting are chosen on the validation split, then the head is refit on train + val.
    refit_head: bool = True
    refit_c: list[float] = field(default_factory=lambda: [1.0, 10.0])
    refit_balanced: list[bool] = field(default_factory=lambda: [False, True])
    pooled_scale: float = 0.5  # relative weight of the encoder block in the refit
    patience: int = 2  # early stopping: epochs without a better validation macro-F1
    warmup: float = 0.1
    seed: int = 0
    max_steps: int | None = None  # stop after this many optimizer steps (smoke tests)
    device: str = "auto"

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> TrainParams:
        raw = dict(raw or {})
        unknown = sorted(set(raw) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown training parameters {unknown}; known: "
                              f"{sorted(cls.__dataclass_fields__)}")
        params = cls(**raw)
        if params.epochs < 1 or params.batch_size < 1 or params.lora_r < 1:
            raise ConfigError("epochs, batch_size and lora_r must be at least 1")
        if params.lexical_scheme not in LEXICAL_SCHEMES:
            raise ConfigError(f"lexical_scheme must be one of {LEXICAL_SCHEMES}")
        if not 1 <= params.trainable_layers <= 24:
            raise ConfigError("trainable_layers must be between 1 and the number of layers")
        return params


@dataclass
class TrainResult:
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]]
    val: dict[str, Any] | None
    seconds: float
    n_train: int
    n_val: int
    refit: dict[str, Any] | None = None  # the head refit's chosen C and class weighting


def weak_risk_label(example: Example) -> int:
    """The risk head has no human labels yet: it learns the size/spread/sensitive-path
    heuristic (agents.changetype.risk_score) as a weak target, so a version answers risk
    from one forward pass. Feedback labels can replace this target later."""
    return RISK_LEVELS.index(risk_score(example.change, []).level)


class LowerCache:
    """Outputs of the frozen bottom layers per text, computed once (fp16 on CPU)."""

    def __init__(self, base_dir: Path, frozen_layers: int, max_length: int,
                 device: torch.device, progress: ProgressFactory | None = None) -> None:
        self.base_dir, self.frozen_layers, self.max_length = Path(base_dir), frozen_layers, max_length
        self.device = device
        self.progress = progress
        self.tokenizer, self.encoder = load_encoder(self.base_dir)
        self.encoder.to(device).eval()
        n_layers = self.encoder.config.num_hidden_layers
        if not 0 <= frozen_layers < n_layers:
            raise ConfigError(f"trainable_layers must be in [1, {n_layers}] for this base model")
        self._states: dict[str, torch.Tensor] = {}

    def key(self, ex: Example) -> str:
        return ex.id + "\0" + str(hash(build_text(ex.change)))

    def ensure(self, examples: Sequence[Example], batch_size: int = 32) -> None:
        todo = [ex for ex in examples if self.key(ex) not in self._states]
        if not todo:
            return
        texts = {self.key(ex): build_text(ex.change) for ex in todo}
        keys = sorted(texts, key=lambda k: len(texts[k]))
        bar = self.progress(len(keys), "encoding") if self.progress else None
        with torch.inference_mode():
            for start in range(0, len(keys), batch_size):
                chunk = keys[start:start + batch_size]
                enc = self.tokenizer([texts[k] for k in chunk], truncation=True,
                                     max_length=self.max_length, padding=True, return_tensors="pt")
                out = self.encoder(input_ids=enc["input_ids"].to(self.device),
                                   attention_mask=enc["attention_mask"].to(self.device),
                                   output_hidden_states=True)
                hidden = out.hidden_states[self.frozen_layers]
                lengths = enc["attention_mask"].sum(1).tolist()
                for i, k in enumerate(chunk):
                    self._states[k] = hidden[i, : int(lengths[i])].to("cpu", torch.float16).clone()
                if bar:
                    bar.update(len(chunk))
        if bar:
            bar.close()

    def batch(self, examples: Sequence[Example]) -> tuple[torch.Tensor, torch.Tensor]:
        states = [self._states[self.key(ex)] for ex in examples]
        width = max(s.shape[0] for s in states)
        hidden = torch.zeros(len(states), width, states[0].shape[1], dtype=torch.float32)
        mask = torch.zeros(len(states), width, dtype=torch.long)
        for i, s in enumerate(states):
            hidden[i, : s.shape[0]] = s.float()
            mask[i, : s.shape[0]] = 1
        return hidden.to(self.device), mask.to(self.device)


def _top_forward(model: ChangeTypeModel, frozen_layers: int, hidden: torch.Tensor,
                 mask: torch.Tensor, feats: torch.Tensor, lex: torch.Tensor | None = None):
    from transformers.masking_utils import create_bidirectional_mask

    bert = model.encoder.get_base_model() if hasattr(model.encoder, "get_base_model") else model.encoder
    attn = create_bidirectional_mask(config=bert.config, inputs_embeds=hidden, attention_mask=mask)
    for layer in bert.encoder.layer[frozen_layers:]:
        hidden = layer(hidden, attn)
        if isinstance(hidden, tuple):
            hidden = hidden[0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    if model.use_features:
        pooled = torch.cat([pooled, feats.to(pooled.dtype)], dim=-1)
    return model.outputs(model.dropout(pooled), lex)


def build_model(base_dir: Path, meta: ModelMeta, params: TrainParams, n_layers: int):
    from peft import LoraConfig, get_peft_model

    seed_everything(params.seed)
    _tokenizer, encoder = load_encoder(base_dir)
    config = LoraConfig(
        r=params.lora_r, lora_alpha=params.lora_alpha, lora_dropout=params.lora_dropout,
        target_modules=list(params.lora_targets), bias="none",
        layers_to_transform=list(range(n_layers - params.trainable_layers, n_layers)),
        layers_pattern="layer",
    )
    encoder = get_peft_model(encoder, config)
    return ChangeTypeModel(encoder, encoder.config.hidden_size, len(meta.labels), len(meta.features),
                           use_features=meta.use_features, lexical_dim=meta.lexical_dim,
                           lexical_scheme=meta.lexical_scheme)


def class_weights(labels: Sequence[int], n: int, power: float) -> torch.Tensor:
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n).astype(np.float64)
    seen = counts > 0
    w = np.zeros(n)
    w[seen] = (counts[seen].sum() / (seen.sum() * counts[seen])) ** power
    w *= counts.sum() / max((w * counts).sum(), 1e-9)  # mean weight per example = 1
    return torch.tensor(w, dtype=torch.float32)


def predict_cached(model: ChangeTypeModel, cache: LowerCache, frozen_layers: int,
                   examples: Sequence[Example], batch_size: int = 64) -> list[str]:
    model.eval()
    out: list[str] = []
    order = sorted(range(len(examples)), key=lambda i: len(build_text(examples[i].change)))
    preds: dict[int, str] = {}
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            chunk = [examples[i] for i in idx]
            hidden, mask = cache.batch(chunk)
            feats = torch.tensor([features(ex.change) for ex in chunk], device=cache.device)
            lex = _lex(model, chunk, cache.device)
            logits, _risk = _top_forward(model, frozen_layers, hidden, mask, feats, lex)
            for i, k in zip(idx, logits.argmax(-1).tolist()):
                preds[i] = CHANGE_TYPES[k]
    out = [preds[i] for i in range(len(examples))]
    return out


def train_adapter(train: Sequence[Example], val: Sequence[Example], out: Path,
                  params: TrainParams, base_dir: Path | None = None,
                  cache: LowerCache | None = None, progress: ProgressFactory | None = None,
                  log: Callable[[str], None] | None = None,
                  card: dict[str, Any] | None = None) -> TrainResult:
    """Fine-tune a new adapter from the base model; write it (best epoch on `val`) to `out`."""
    if not train:
        raise ConfigError("no training examples")
    seen = sorted({ex.label for ex in [*train, *val]})
    if len(seen) < 2:
        raise ConfigError(f"the training data has one label ({seen[0]}): a change-type "
                          "classifier needs examples of at least two")
    started = time.monotonic()
    base_dir = Path(base_dir) if base_dir else default_base_dir()
    device = pick_device(params.device)
    meta = ModelMeta(max_length=params.max_length, use_features=params.use_features,
                     lexical_dim=params.lexical_dim, lexical_scheme=params.lexical_scheme)
    labels = list(meta.labels)
    if cache is None:
        probe = load_encoder(base_dir)[1].config.num_hidden_layers
        cache = LowerCache(base_dir, probe - params.trainable_layers, params.max_length, device, progress)
    n_layers = cache.encoder.config.num_hidden_layers
    frozen = n_layers - params.trainable_layers
    if cache.frozen_layers != frozen or cache.max_length != params.max_length:
        raise ConfigError("the encoder cache was built for other trainable_layers/max_length")
    cache.ensure([*train, *val])

    model = build_model(base_dir, meta, params, n_layers).to(device)
    y = torch.tensor([labels.index(ex.label) for ex in train])
    risk_y = torch.tensor([weak_risk_label(ex) for ex in train])
    feats = torch.tensor([features(ex.change) for ex in train])
    loss_fn = torch.nn.CrossEntropyLoss(weight=class_weights(y.tolist(), len(labels),
                                                             params.class_balance).to(device),
                                        label_smoothing=params.label_smoothing)
    risk_fn = torch.nn.CrossEntropyLoss()
    lora = [p for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    heads = [*model.head.parameters(), *model.risk_head.parameters()]
    groups = [{"params": lora, "lr": params.lr}, {"params": heads, "lr": params.head_lr}]
    if model.wide is not None:  # sparse inputs: no weight decay, a larger step
        groups.append({"params": list(model.wide.parameters()), "lr": params.wide_lr,
                       "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, weight_decay=params.weight_decay)
    steps_per_epoch = math.ceil(len(train) / params.batch_size)
    total = steps_per_epoch * params.epochs
    if params.max_steps is not None:
        total = min(total, params.max_steps)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[g["lr"] for g in groups], total_steps=max(total, 1),
        pct_start=params.warmup, anneal_strategy="cos")
    rng = np.random.RandomState(params.seed)
    history: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, torch.Tensor] | None] = (-1.0, -1, None)
    best_val: dict[str, Any] | None = None
    step = 0
    stale = 0
    for epoch in range(params.epochs):
        model.train()
        t0 = time.monotonic()
        order = rng.permutation(len(train))
        bar = progress(len(order), f"epoch {epoch + 1}/{params.epochs}") if progress else None
        running = 0.0
        for start in range(0, len(order), params.batch_size):
            if step >= total:
                break
            idx = order[start:start + params.batch_size].tolist()
            batch = [train[i] for i in idx]
            hidden, mask = cache.batch(batch)
            logits, risk_logits = _top_forward(model, frozen, hidden, mask, feats[idx].to(device),
                                               _lex(model, batch, device))
            loss = loss_fn(logits, y[idx].to(device))
            if params.risk_weight > 0:
                loss = loss + params.risk_weight * risk_fn(risk_logits, risk_y[idx].to(device))
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            running += float(loss.detach())
            step += 1
            if bar:
                bar.update(len(idx))
        if bar:
            bar.close()
        entry: dict[str, float] = {"epoch": epoch + 1, "seconds": round(time.monotonic() - t0, 1),
                                   "train_loss": round(running / max(1, steps_per_epoch), 4)}
        score = float(epoch)  # without validation the last epoch wins
        report = None
        if val:
            report = classification_report([ex.label for ex in val],
                                           predict_cached(model, cache, frozen, val))
            entry.update(val_accuracy=report["accuracy"], val_macro_f1=report["macro_f1"])
            score = report["macro_f1"] + 1e-3 * report["accuracy"]
        history.append(entry)
        if log:
            log(" ".join(f"{k}={v}" for k, v in entry.items()))
        if score > best[0]:
            best = (score, epoch + 1, _trainable_state(model))
            best_val = report
            stale = 0
        else:
            stale += 1
            if val and stale >= params.patience:
                break
        if step >= total:
            break
    if best[2] is not None:
        model.load_state_dict(best[2], strict=False)
    refit = None
    if params.refit_head:
        refit = refit_head(model, cache, frozen, train, val, params, log)
        best_val = refit.pop("val_report", None) or best_val
    meta.extra = {
        "train_params": asdict(params),
        "best_epoch": best[1],
        "history": history,
        "val": {k: v for k, v in (best_val or {}).items() if k != "confusion"} or None,
        "n_train": len(train),
        "n_val": len(val),
        "risk_head": params.risk_weight > 0,
        "refit": refit,
        **(card or {}),
    }
    model.to("cpu")
    save_model(model, meta, out)
    write_model_card(Path(out), meta, train, val)
    return TrainResult(best_epoch=best[1], epochs_run=len(history), history=history,
                       val=best_val, seconds=round(time.monotonic() - started, 1),
                       n_train=len(train), n_val=len(val),
                       refit={k: refit[k] for k in ("C", "balanced")}
                       if refit and "C" in refit else None)


def _lex(model: ChangeTypeModel, examples: Sequence[Example], device) -> torch.Tensor | None:
    if not model.lexical_dim:
        return None
    from .modeling import lexical_tensor
    from .text import text_fields

    return lexical_tensor([text_fields(ex.change) for ex in examples], model.lexical_dim,
                          model.lexical_scheme, device)


def _trainable_state(model: ChangeTypeModel) -> dict[str, torch.Tensor]:
    return {k: copy.deepcopy(v.detach()) for k, v in model.state_dict().items()
            if "lora_" in k or k.startswith(("head.", "risk_head.", "wide."))}
