"""The gates as a table, and evaluate_gates, which applies every row that is switched on."""

from __future__ import annotations

from typing import Any

from .methods import ACCURACY, AGREEMENT, AT_LEAST, AT_MOST, COST, ERROR_RATE, NON_INFERIOR, P95, P99, Gate
from .results import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    GateConfig,
    GateDecision,
    GateResult,
    Outcome,
    VersionMetrics,
    side_dict,
    sizes,
)

# The rows, in the order the evidence lists them: (name, metric, comparator, method, the
# GateConfig field of the threshold).
GATES: tuple[Gate, ...] = (
    Gate("error_rate", ERROR_RATE, AT_MOST, "absolute", "max_error_rate"),
    Gate("error_rate_delta", ERROR_RATE, AT_MOST, "difference", "max_error_rate_delta"),
    Gate("latency_p95", P95, AT_MOST, "ratio", "max_latency_ratio"),
    Gate("latency_p99", P99, AT_MOST, "ratio", "max_p99_ratio"),
    Gate("latency_p95_ms", P95, AT_MOST, "absolute", "max_p95_ms"),
    Gate("latency_p99_ms", P99, AT_MOST, "absolute", "max_p99_ms"),
    Gate("accuracy", ACCURACY, AT_LEAST, "absolute", "min_accuracy"),
    Gate("accuracy_delta", ACCURACY, NON_INFERIOR, "difference", "min_accuracy_delta",
         without_stable="labels exist but there is no stable version to compare with"),
    Gate("accuracy_ratio", ACCURACY, AT_LEAST, "ratio", "min_accuracy_ratio"),
    Gate("agreement", AGREEMENT, AT_LEAST, "absolute", "min_agreement"),
    Gate("cost", COST, AT_MOST, "absolute", "max_cost_per_request"),
    Gate("cost_ratio", COST, AT_MOST, "ratio", "max_cost_ratio"),
)


# -- gates without an interval ------------------------------------------------------------

def _dwell_gate(dwell_s: float | None, cfg: GateConfig) -> GateResult:
    thr = cfg.min_dwell_s
    if dwell_s is None:
        return GateResult("dwell", INCONCLUSIVE, None, (None, None), thr,
                          "time in the current state unknown")
    ok = dwell_s >= thr
    return GateResult(
        "dwell", PASS if ok else INCONCLUSIVE, dwell_s, (dwell_s, dwell_s), thr,
        f"{dwell_s:.0f} s in the current state, need {thr:g} s" + ("" if ok else ": too early"))


def _sample_size_gate(c: VersionMetrics, cfg: GateConfig) -> GateResult:
    ok = c.n >= cfg.min_samples
    return GateResult(
        "sample_size", PASS if ok else INCONCLUSIVE, float(c.n), (float(c.n), float(c.n)),
        float(cfg.min_samples),
        f"{c.n} attempts, need {cfg.min_samples}" + ("" if ok else ": too little data"),
        candidate=side_dict(float(c.n), c.n, c.n, c.n),
    )


def combine(gates: list[GateResult]) -> Outcome:
    if any(g.outcome == FAIL for g in gates):
        return FAIL
    if gates and all(g.outcome == PASS for g in gates):
        return PASS
    return INCONCLUSIVE


def evaluate_gates(
    candidate: VersionMetrics, stable: VersionMetrics | None, cfg: GateConfig,
    dwell_s: float | None = None,
) -> GateDecision:
    """Apply every configured gate to the candidate (against stable where one is given).

    `dwell_s` (time in the current state) is judged when cfg.min_dwell_s > 0; unknown or too
    short is inconclusive.
    """
    c, s = candidate, stable
    gates: list[GateResult] = []
    if cfg.min_dwell_s > 0:
        gates.append(_dwell_gate(dwell_s, cfg))
    gates.append(_sample_size_gate(c, cfg))
    for gate in GATES:
        result = gate.evaluate(c, s, cfg)
        if result is not None:
            gates.append(result)
    samples: dict[str, Any] = {"candidate": sizes(c)}
    if s is not None:
        samples["stable"] = sizes(s)
    return GateDecision(combine(gates), gates, samples, cfg.model_dump(mode="json"))
