"""The change-type head solved in closed form after the LoRA epochs (TrainParams.refit_head):
an L2-regularised logistic regression (L-BFGS) over [n-grams | numeric features | pooled
encoder output * pooled_scale], written back into the model's head (dense and wide parts).

Imports torch at module import: import lazily (train.py does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from schemas import CHANGE_TYPES

from .data import Example
from .metrics import classification_report
from .modeling import ChangeTypeModel
from .text import features

if TYPE_CHECKING:
    from .train import LowerCache, TrainParams


def _design(model: ChangeTypeModel, cache: LowerCache, frozen: int,
            examples: Sequence[Example], scale: float, batch_size: int = 64):
    """[n-grams | numeric features | pooled * scale] as one sparse matrix (refit input)."""
    from scipy.sparse import csr_matrix, hstack

    from .text import lexical_input, text_fields

    model.eval()
    bert = model.encoder.get_base_model() if hasattr(model.encoder, "get_base_model") else model.encoder
    from transformers.masking_utils import create_bidirectional_mask

    pooled = []
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            chunk = examples[start:start + batch_size]
            hidden, mask = cache.batch(chunk)
            attn = create_bidirectional_mask(config=bert.config, inputs_embeds=hidden,
                                             attention_mask=mask)
            for layer in bert.encoder.layer[frozen:]:
                hidden = layer(hidden, attn)
                if isinstance(hidden, tuple):
                    hidden = hidden[0]
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled.append(((hidden * m).sum(1) / m.sum(1).clamp(min=1.0)).cpu())
    blocks = []
    if model.lexical_dim:
        rows, cols, vals = [], [], []
        for i, ex in enumerate(examples):
            for k, v in lexical_input(text_fields(ex.change), model.lexical_dim,
                                      model.lexical_scheme).items():
                rows.append(i)
                cols.append(k)
                vals.append(v)
        blocks.append(csr_matrix((vals, (rows, cols)), shape=(len(examples), model.lexical_dim)))
    if model.use_features:
        blocks.append(csr_matrix(np.array([features(ex.change) for ex in examples])))
    blocks.append(csr_matrix(torch.cat(pooled).numpy() * scale))
    return hstack(blocks).tocsr()


def refit_head(model: ChangeTypeModel, cache: LowerCache, frozen: int, train: Sequence[Example],
               val: Sequence[Example], params: TrainParams,
               log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Solve the change-type head (see TrainParams.refit_head) and write it into the model."""
    from sklearn.linear_model import LogisticRegression

    labels = list(CHANGE_TYPES)
    x_train = _design(model, cache, frozen, train, params.pooled_scale)
    y_train = [ex.label for ex in train]
    grid = [(c, b) for c in params.refit_c for b in params.refit_balanced]
    scores: list[dict[str, Any]] = []
    choice = grid[0]
    val_report = None
    if val and len(set(y_train)) > 1:
        x_val = _design(model, cache, frozen, val, params.pooled_scale)
        best = -1.0
        for c, balanced in grid:
            clf = LogisticRegression(C=c, class_weight="balanced" if balanced else None,
                                     max_iter=3000).fit(x_train, y_train)
            report = classification_report([ex.label for ex in val], list(clf.predict(x_val)))
            scores.append({"C": c, "balanced": balanced, "val_accuracy": report["accuracy"],
                           "val_macro_f1": report["macro_f1"]})
            score = report["macro_f1"] + 1e-3 * report["accuracy"]
            if score > best:
                best, choice, val_report = score, (c, balanced), report
        x_full, y_full = _vstack(x_train, x_val), y_train + [ex.label for ex in val]
    else:
        x_full, y_full = x_train, y_train
    c, balanced = choice
    if len(set(y_full)) < 2:
        return {"skipped": "fewer than two labels", "grid": scores}
    clf = LogisticRegression(C=c, class_weight="balanced" if balanced else None,
                             max_iter=3000).fit(x_full, y_full)
    coef = clf.coef_
    intercept = clf.intercept_
    classes = list(clf.classes_)
    if len(classes) == 2:  # binary: one row of weights for the second class
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.array([0.0, float(intercept[0])])
    n_lex = model.lexical_dim
    n_feat = model.head.in_features - model.encoder.config.hidden_size
    head_w = torch.zeros_like(model.head.weight)
    head_b = torch.full_like(model.head.bias, -30.0)  # labels never seen: never predicted
    wide_w = torch.zeros_like(model.wide.weight) if model.wide is not None else None
    for row, label in enumerate(classes):
        k = labels.index(label)
        w = torch.tensor(coef[row], dtype=torch.float32)
        if wide_w is not None:
            wide_w[k] = w[:n_lex]
        dense = w[n_lex:]
        hidden = dense[n_feat:] * params.pooled_scale
        head_w[k] = torch.cat([hidden, dense[:n_feat]]) if n_feat else hidden
        head_b[k] = float(intercept[row])
    with torch.no_grad():
        model.head.weight.copy_(head_w)
        model.head.bias.copy_(head_b)
        if wide_w is not None:
            model.wide.weight.copy_(wide_w)
    if log:
        log(f"head refit: C={c} balanced={balanced} on {len(y_full)} rows"
            + (f" (val macro-F1 {val_report['macro_f1']})" if val_report else ""))
    return {"C": c, "balanced": balanced, "grid": scores, "rows": len(y_full),
            "val_report": val_report}


def _vstack(a, b):
    from scipy.sparse import vstack

    return vstack([a, b]).tocsr()


__all__ = ["refit_head"]
