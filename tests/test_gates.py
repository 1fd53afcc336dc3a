import json
import random

import pytest
from pydantic import ValidationError

from agents.gates import GateConfig, VersionMetrics, evaluate_gates, newcombe_difference


def lat(n, base=100.0, seed=1):
    rng = random.Random(seed)
    return [base * (0.5 + rng.random()) for _ in range(n)]  # uniform base*[0.5, 1.5)


def metrics(vid="cand", n=500, errors=0, latencies=None, agree=450, compared=500,
            correct=0, labelled=0):
    return VersionMetrics(vid, n, errors, lat(n) if latencies is None else latencies,
                          agree, compared, correct, labelled)


def stable(**kw):
    kw.setdefault("vid", "stable")
    kw.setdefault("latencies", lat(kw.get("n", 500), seed=2))
    return metrics(**kw)


def test_healthy_candidate_passes_every_gate():
    d = evaluate_gates(metrics(), stable(), GateConfig())
    assert d.outcome == "pass"
    assert [g.name for g in d.gates] == ["sample_size", "error_rate", "latency_p95", "agreement"]
    assert all(g.outcome == "pass" for g in d.gates)


def test_too_little_data_is_inconclusive_never_pass():
    c = metrics(n=10, latencies=lat(10), agree=10, compared=10)
    d = evaluate_gates(c, stable(), GateConfig())
    assert d.outcome == "inconclusive"
    assert d.gate("sample_size").outcome == "inconclusive"
    assert d.gate("error_rate").outcome == "inconclusive"
    assert d.gate("latency_p95").outcome == "inconclusive"
    assert d.gate("agreement").outcome == "inconclusive"


def test_small_sample_with_all_errors_is_still_inconclusive():
    d = evaluate_gates(metrics(n=10, errors=10, latencies=lat(10), compared=0, agree=0),
                       None, GateConfig())
    assert d.gate("error_rate").outcome == "inconclusive"
    assert d.outcome == "inconclusive"


def test_zero_errors_at_min_samples_cannot_yet_prove_5_percent():
    # 0/30: Wilson upper is 0.114 > 0.05, so the gate must wait for more data.
    d = evaluate_gates(metrics(n=30, errors=0, latencies=lat(30), agree=30, compared=30),
                       None, GateConfig())
    g = d.gate("error_rate")
    assert g.outcome == "inconclusive"
    assert g.interval[1] == pytest.approx(0.1135, abs=1e-3)
    d = evaluate_gates(metrics(n=80, errors=0), None, GateConfig())
    assert d.gate("error_rate").outcome == "pass"


def test_high_error_rate_fails():
    d = evaluate_gates(metrics(n=200, errors=40), stable(), GateConfig())
    g = d.gate("error_rate")
    assert g.outcome == "fail"
    assert g.estimate == pytest.approx(0.2)
    assert g.interval[0] > 0.05
    assert d.outcome == "fail"


def test_error_rate_near_threshold_is_inconclusive():
    d = evaluate_gates(metrics(n=200, errors=10), stable(), GateConfig())
    assert d.gate("error_rate").outcome == "inconclusive"
    assert d.outcome == "inconclusive"


def test_slow_candidate_fails_latency():
    slow = metrics(latencies=lat(500, base=300.0))
    d = evaluate_gates(slow, stable(), GateConfig())
    g = d.gate("latency_p95")
    assert g.outcome == "fail"
    assert g.interval[0] > g.threshold
    assert g.threshold == pytest.approx(1.5 * 145, rel=0.03)  # stable p95 ~ 145 ms
    assert d.outcome == "fail"


def test_latency_upper_bound_needs_enough_samples():
    # 50 latencies: p95 cannot be bounded from above, so latency cannot pass.
    c = metrics(n=50, latencies=lat(50), agree=50, compared=50)
    d = evaluate_gates(c, stable(), GateConfig())
    g = d.gate("latency_p95")
    assert g.outcome == "inconclusive"
    assert g.interval[1] is None


def test_latency_gate_skipped_without_stable():
    d = evaluate_gates(metrics(), None, GateConfig())
    assert d.gate("latency_p95") is None
    assert d.outcome == "pass"


def test_latency_inconclusive_when_stable_has_too_few_latencies():
    d = evaluate_gates(metrics(), stable(latencies=[100.0] * 5), GateConfig())
    assert d.gate("latency_p95").outcome == "inconclusive"
    assert d.outcome == "inconclusive"


def test_agreement_pass_fail_inconclusive():
    cfg = GateConfig(min_agreement=0.6)
    assert evaluate_gates(metrics(agree=400, compared=500), None, cfg).gate(
        "agreement").outcome == "pass"
    assert evaluate_gates(metrics(agree=200, compared=500), None, cfg).gate(
        "agreement").outcome == "fail"
    assert evaluate_gates(metrics(agree=300, compared=500), None, cfg).gate(
        "agreement").outcome == "inconclusive"
    g = evaluate_gates(metrics(agree=0, compared=0), None, cfg).gate("agreement")
    assert g.outcome == "inconclusive" and g.estimate is None


def test_accuracy_gate_only_when_configured_and_labelled():
    c, s = metrics(correct=80, labelled=100), stable(correct=80, labelled=100)
    assert evaluate_gates(c, s, GateConfig()).gate("accuracy_delta") is None
    cfg = GateConfig(min_accuracy_delta=-0.05)
    assert evaluate_gates(metrics(), stable(), cfg).gate("accuracy_delta") is None
    assert evaluate_gates(c, s, cfg).gate("accuracy_delta") is not None


def test_accuracy_non_inferiority():
    cfg = GateConfig(min_accuracy_delta=-0.05)
    s = stable(correct=800, labelled=1000)
    better = evaluate_gates(metrics(correct=850, labelled=1000), s, cfg).gate("accuracy_delta")
    assert better.outcome == "pass"
    assert better.estimate == pytest.approx(0.05)
    worse = evaluate_gates(metrics(correct=600, labelled=1000), s, cfg).gate("accuracy_delta")
    assert worse.outcome == "fail"
    assert worse.interval[1] < -0.05
    close = evaluate_gates(metrics(correct=780, labelled=1000), s, cfg).gate("accuracy_delta")
    assert close.outcome == "inconclusive"
    few = evaluate_gates(metrics(correct=10, labelled=10), s, cfg).gate("accuracy_delta")
    assert few.outcome == "inconclusive"


def test_newcombe_interval_known_value():
    # Newcombe (1998) example: 56/70 vs 48/80 -> 0.2, 95% CI [0.0524, 0.3339].
    d, lo, hi = newcombe_difference(56, 70, 48, 80)
    assert d == pytest.approx(0.2)
    assert lo == pytest.approx(0.0524, abs=5e-4)
    assert hi == pytest.approx(0.3339, abs=5e-4)


def test_any_fail_wins_over_inconclusive():
    d = evaluate_gates(metrics(n=200, errors=60, agree=0, compared=0), stable(), GateConfig())
    assert d.gate("agreement").outcome == "inconclusive"
    assert d.outcome == "fail"


def test_evidence_is_json_with_numbers_and_sample_sizes():
    d = evaluate_gates(metrics(n=50, latencies=lat(50)), stable(), GateConfig(
        min_accuracy_delta=-0.05))
    ev = json.loads(json.dumps(d.to_evidence()))
    assert ev["outcome"] == d.outcome
    assert ev["samples"]["candidate"]["n"] == 50
    assert ev["samples"]["stable"]["latencies"] == 500
    assert ev["config"]["max_error_rate"] == 0.05
    lat_gate = next(g for g in ev["gates"] if g["name"] == "latency_p95")
    assert lat_gate["interval"][1] is None
    assert lat_gate["threshold"] > 0
    for g in ev["gates"]:
        assert set(g) == {"name", "outcome", "estimate", "interval", "threshold", "detail"}
        assert g["outcome"] in ("pass", "fail", "inconclusive")


def test_config_rejects_nonsense():
    with pytest.raises(ValidationError):
        GateConfig(max_error_rate=2.0)
    with pytest.raises(ValidationError):
        GateConfig(confidence=1.0)
    with pytest.raises(ValidationError):
        GateConfig(unknown=1)
