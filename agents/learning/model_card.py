"""The model card of a LoRA adapter: README.md beside its weights (data, parameters, training
history, validation metrics)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .data import Example
from .modeling import ModelMeta


def _counts(examples: Sequence[Example]) -> dict[str, int]:
    out: dict[str, int] = {}
    for ex in examples:
        out[ex.label] = out.get(ex.label, 0) + 1
    return dict(sorted(out.items()))


def write_model_card(out: Path, meta: ModelMeta, train: Sequence[Example],
                     val: Sequence[Example]) -> None:
    """README.md beside the weights: data, parameters, validation metrics."""
    extra = meta.extra
    params = extra.get("train_params", {})
    repos = sorted({ex.repo for ex in train})
    lines = [
        "# Change-type LoRA adapter (reviewbus)",
        "",
        f"Base model: `{meta.base}` (mean pooling), LoRA on the top "
        f"{params.get('trainable_layers')} encoder layers, linear heads for the "
        f"{len(meta.labels)} change types and risk. Input: the prefix-masked message, diff "
        f"stats, changed paths and changed diff lines (max {meta.max_length} tokens)"
        + (f" plus {len(meta.features)} numeric features" if meta.use_features else "") + ".",
        "",
        "## Data",
        "",
        f"- source: {extra.get('data', '-')}",
        f"- repositories ({len(repos)}): {', '.join(repos[:20])}{' ...' if len(repos) > 20 else ''}",
        f"- train: {len(train)} rows {_counts(train)}",
        f"- validation: {len(val)} rows {_counts(val)}",
        "",
        "## Parameters",
        "",
        *(f"- {k}: {v}" for k, v in sorted(params.items())),
        "",
        "## Training",
        "",
        f"- best epoch: {extra.get('best_epoch')} of {len(extra.get('history', []))}",
        *(f"- epoch {h['epoch']}: " + ", ".join(f"{k}={v}" for k, v in h.items() if k != "epoch")
          for h in extra.get("history", [])),
        "",
    ]
    refit = extra.get("refit")
    if refit and "C" in refit:
        lines += [
            "## Head refit",
            "",
            f"- after the LoRA epochs the change-type head (dense + wide parts) was refit as an "
            f"L2-regularised logistic regression (L-BFGS): C={refit['C']}, "
            f"class weights {'balanced' if refit['balanced'] else 'none'}, on {refit['rows']} "
            "rows (train + validation); C and the weighting were chosen on the validation split:",
            *(f"  - C={g['C']}, balanced={g['balanced']}: val accuracy {g['val_accuracy']}, "
              f"macro-F1 {g['val_macro_f1']}" for g in refit.get("grid", [])),
            "",
        ]
    lines += [
        "## Validation metrics (best epoch" + (", chosen head fit on train only)" if refit else ")"),
        "",
    ]
    val_report = extra.get("val")
    if val_report:
        lines += [f"- accuracy: {val_report['accuracy']}", f"- macro-F1: {val_report['macro_f1']}",
                  "", "| label | precision | recall | f1 | support |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {lbl} | {c['precision']} | {c['recall']} | {c['f1']} | {c['support']} |"
                  for lbl, c in val_report["per_class"].items()]
    else:
        lines.append("- no validation split")
    lines += ["", "Labels leak nowhere: every Conventional Commits prefix is masked in the message "
              "(also inside the body) and in the diff before the model reads it.", ""]
    (out / "README.md").write_text("\n".join(lines))


__all__ = ["write_model_card"]
