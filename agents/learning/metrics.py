"""Classification and latency metrics (pure, stdlib only).

Macro-F1 averages the F1 of every label that occurs in the truth or in the predictions (the
scikit-learn convention): a label the model invents but the data never has counts as 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from schemas import CHANGE_TYPES


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def classification_report(truth: Sequence[str], predicted: Sequence[str],
                          labels: Sequence[str] = CHANGE_TYPES) -> dict[str, Any]:
    """accuracy, macro_f1, per_class {label: {precision, recall, f1, support}}, confusion
    {truth: {predicted: count}} (only labels that occur), n."""
    if len(truth) != len(predicted):
        raise ValueError("truth and predictions differ in length")
    n = len(truth)
    present = [lbl for lbl in labels if lbl in set(truth) | set(predicted)]
    present += sorted((set(truth) | set(predicted)) - set(present))
    confusion = {t: dict.fromkeys(present, 0) for t in present}
    for t, p in zip(truth, predicted):
        confusion[t][p] += 1
    per_class: dict[str, dict[str, float]] = {}
    for lbl in present:
        tp = confusion[lbl][lbl]
        pred_n = sum(confusion[t][lbl] for t in present)
        true_n = sum(confusion[lbl].values())
        precision = tp / pred_n if pred_n else 0.0
        recall = tp / true_n if true_n else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[lbl] = {"precision": round(precision, 4), "recall": round(recall, 4),
                          "f1": round(f1, 4), "support": true_n}
    correct = sum(1 for t, p in zip(truth, predicted) if t == p)
    return {
        "n": n,
        "accuracy": round(correct / n, 4) if n else 0.0,
        "macro_f1": round(sum(c["f1"] for c in per_class.values()) / len(per_class), 4)
        if per_class else 0.0,
        "per_class": per_class,
        "confusion": confusion,
    }


def latency_report(latencies_ms: Sequence[float], wall_s: float) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(latencies_ms, 50), 2),
        "p95_ms": round(percentile(latencies_ms, 95), 2),
        "throughput_per_s": round(len(latencies_ms) / wall_s, 2) if wall_s > 0 else 0.0,
    }


def mean_report(per_repo: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Top-level means of a per-repository protocol; `per_class` is the mean F1 per label
    over the repositories where the label occurs."""
    reports = list(per_repo.values())
    if not reports:
        return {"n": 0, "accuracy": 0.0, "macro_f1": 0.0, "per_class": {}}
    labels: dict[str, list[float]] = {}
    for r in reports:
        for lbl, c in r["per_class"].items():
            labels.setdefault(lbl, []).append(c["f1"])
    k = len(reports)
    return {
        "n": sum(r["n"] for r in reports),
        "accuracy": round(sum(r["accuracy"] for r in reports) / k, 4),
        "macro_f1": round(sum(r["macro_f1"] for r in reports) / k, 4),
        "per_class": {lbl: {"f1": round(sum(v) / len(v), 4), "repos": len(v)}
                      for lbl, v in labels.items()},
        "p50_ms": round(sum(r.get("p50_ms", 0.0) for r in reports) / k, 2),
        "p95_ms": round(sum(r.get("p95_ms", 0.0) for r in reports) / k, 2),
        "throughput_per_s": round(sum(r.get("throughput_per_s", 0.0) for r in reports) / k, 2),
    }
