import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
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
    # The ratio of p95s (~435 / ~145 = 3) with its interval, all of it above the limit.
    assert g.threshold == 1.5
    assert g.estimate == pytest.approx(3.0, rel=0.05)
    assert g.interval[0] > 1.5
    assert g.candidate["estimate"] == pytest.approx(3 * 145, rel=0.05)
    assert g.stable["estimate"] == pytest.approx(145, rel=0.05)
    assert g.candidate["interval"][0] > 1.5 * g.stable["interval"][1]
    assert d.outcome == "fail"


def test_latency_ratio_uses_both_intervals():
    # Candidate p95 equals 1.4 x stable p95, limit 1.5: with 500 samples each the
    # candidate's upper bound sits under 1.5 x the stable's lower bound.
    base = lat(500, seed=3)
    d = evaluate_gates(metrics(latencies=[1.4 * x for x in base]),
                       stable(latencies=base), GateConfig())
    g = d.gate("latency_p95")
    assert g.outcome == "pass", g.detail
    assert g.interval[1] <= 1.5
    assert g.estimate == pytest.approx(1.4)
    # 80 samples each: at 97.5 % per side a p95 upper bound needs 86, so no verdict yet.
    d = evaluate_gates(metrics(n=80, latencies=[1.4 * x for x in base[:80]], agree=70,
                               compared=80), stable(n=80, latencies=base[:80]),
                       GateConfig())
    g = d.gate("latency_p95")
    assert g.outcome == "inconclusive" and g.interval[1] is None


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
        assert set(g) == {"name", "outcome", "estimate", "interval", "threshold", "detail",
                          "candidate", "stable"}
        assert g["outcome"] in ("pass", "fail", "inconclusive")
    # Comparisons carry both sides' estimates and intervals.
    assert set(lat_gate["candidate"]) == {"estimate", "interval", "n"}
    assert lat_gate["stable"]["n"] == 500 and lat_gate["stable"]["interval"][0] > 0


def test_config_rejects_nonsense():
    with pytest.raises(ValidationError):
        GateConfig(max_error_rate=2.0)
    with pytest.raises(ValidationError):
        GateConfig(confidence=1.0)
    with pytest.raises(ValidationError):
        GateConfig(unknown=1)


# -- the original design's rules (shipped as the default config) ----------------------------

def default_gates():
    from infra.config_file import load_config

    return load_config().rotation


def labelled(vid, n, correct, latencies, errors=0):
    return VersionMetrics(vid, n, errors, latencies, 0, 0, correct, n - errors)


def test_default_config_expresses_the_original_rules():
    rot = default_gates()
    for gates in (rot.shadow_to_canary, rot.canary_step, rot.canary_to_stable):
        assert gates.max_latency_ratio == 1.1  # latency <= 1.1 x stable
        assert gates.min_accuracy_delta == 0.0  # accuracy >= stable
    must = rot.canary_to_stable
    assert (must.min_accuracy, must.max_p99_ms, must.max_error_rate) == (0.92, 500, 0.02)
    rep = rot.replace_stable
    assert (rep.max_latency_ratio, rep.min_accuracy_ratio) == (0.8, 1.1)
    assert (rep.min_accuracy, rep.max_p99_ms, rep.max_error_rate) == (0.92, 500, 0.02)


def test_must_pass_gates_for_stable():
    rot = default_gates()
    s = labelled("s", 2000, 1700, lat(2000, base=200.0, seed=5))
    good = labelled("c", 2000, 1960, lat(2000, base=200.0, seed=6))
    d = evaluate_gates(good, s, rot.canary_to_stable, dwell_s=7200)
    assert d.outcome == "pass", [g.detail for g in d.gates if g.outcome != "pass"]
    assert {g.name for g in d.gates} >= {"dwell", "error_rate", "latency_p99_ms", "accuracy",
                                         "latency_p95", "accuracy_delta"}
    # accuracy 0.90 < 0.92, otherwise better than stable: the must-pass fails it
    low = labelled("c", 2000, 1800, lat(2000, base=200.0, seed=6))
    d = evaluate_gates(low, s, rot.canary_to_stable, dwell_s=7200)
    assert d.gate("accuracy").outcome == "fail" and d.outcome == "fail"
    # p99 above 500 ms
    slow_tail = labelled("c", 2000, 1960, [x if i % 50 else 900.0
                                           for i, x in enumerate(lat(2000, 200.0, 6))])
    d = evaluate_gates(slow_tail, s, rot.canary_to_stable, dwell_s=7200)
    assert d.gate("latency_p99_ms").outcome == "fail"
    # 3 % errors
    errs = labelled("c", 2000, 1900, lat(1940, base=200.0, seed=6), errors=60)
    d = evaluate_gates(errs, s, rot.canary_to_stable, dwell_s=7200)
    assert d.gate("error_rate").outcome == "fail"
    # too early in the stage: dwell is inconclusive, never pass
    d = evaluate_gates(good, s, rot.canary_to_stable, dwell_s=60)
    assert d.gate("dwell").outcome == "inconclusive" and d.outcome == "inconclusive"


def test_must_pass_accuracy_without_labels_is_inconclusive():
    rot = default_gates()
    c = VersionMetrics("c", 2000, 0, lat(2000, seed=6))
    d = evaluate_gates(c, VersionMetrics("s", 2000, 0, lat(2000, seed=5)),
                       rot.canary_to_stable, dwell_s=7200)
    assert d.gate("accuracy").outcome == "inconclusive"
    assert d.gate("accuracy_delta") is None  # nothing to compare on either side
    assert d.outcome == "inconclusive"


def test_replace_stable_needs_a_clearly_better_candidate():
    rot = default_gates()
    s = labelled("s", 3000, 2400, lat(3000, base=300.0, seed=5))  # 0.80, p95 ~435 ms
    much_better = labelled("c", 3000, 2950, lat(3000, base=150.0, seed=6))  # 0.98, half
    d = evaluate_gates(much_better, s, rot.replace_stable)
    assert d.outcome == "pass", [g.detail for g in d.gates if g.outcome != "pass"]
    assert d.gate("accuracy_ratio").interval[0] >= 1.1
    assert d.gate("latency_p95").interval[1] <= 0.8
    # As accurate but only a bit faster (0.9 x): not clearly better -> not pass
    bit_faster = labelled("c", 3000, 2950, [0.9 * x for x in lat(3000, base=300.0, seed=5)])
    d = evaluate_gates(bit_faster, s, rot.replace_stable)
    assert d.gate("latency_p95").outcome == "fail" and d.outcome == "fail"


# -- the other gates ------------------------------------------------------------------------

def test_error_rate_relative_to_stable():
    cfg = GateConfig(max_error_rate=None, max_error_rate_delta=0.01, max_latency_ratio=None,
                     min_agreement=None)
    s = metrics(vid="s", n=2000, errors=40)  # 2 %
    assert evaluate_gates(metrics(n=2000, errors=30), s, cfg).outcome == "pass"
    worse = evaluate_gates(metrics(n=2000, errors=140), s, cfg).gate("error_rate_delta")
    assert worse.outcome == "fail" and worse.interval[0] > 0.01
    assert worse.candidate["estimate"] == pytest.approx(0.07)
    assert worse.stable["estimate"] == pytest.approx(0.02)
    assert evaluate_gates(metrics(n=2000, errors=30), None, cfg).gate("error_rate_delta") is None


def test_exact_interval_is_more_cautious_than_wilson():
    # 1/30 errors: Wilson's upper bound is 0.1667, Clopper-Pearson's 0.1722.
    wilson = GateConfig(max_error_rate=0.17, max_latency_ratio=None, min_agreement=None,
                        min_samples=10)
    exact = wilson.model_copy(update={"rate_interval": "exact"})
    m = metrics(n=30, errors=1, latencies=[])
    assert evaluate_gates(m, None, wilson).gate("error_rate").outcome == "pass"
    g = evaluate_gates(m, None, exact).gate("error_rate")
    assert g.outcome == "inconclusive" and g.interval[1] == pytest.approx(0.1722, abs=1e-3)


def test_absolute_latency_needs_samples_for_its_upper_bound():
    cfg = GateConfig(max_latency_ratio=None, min_agreement=None, max_p99_ms=500,
                     max_error_rate=None, min_samples=10)
    fast = [100.0] * 300
    g = evaluate_gates(metrics(n=300, latencies=fast), None, cfg).gate("latency_p99_ms")
    assert g.outcome == "inconclusive" and g.interval[1] is None  # p99 bound needs 367
    g = evaluate_gates(metrics(n=400, latencies=[100.0] * 400), None, cfg).gate(
        "latency_p99_ms")
    assert g.outcome == "pass"


def test_cost_gates():
    cfg = GateConfig(max_latency_ratio=None, min_agreement=None, max_error_rate=None,
                     max_cost_per_request=0.01, max_cost_ratio=1.2, min_samples=30)

    def costly(vid, n, each):
        return VersionMetrics(vid, n, 0, [], cost_sum=each * n, cost_sumsq=each * each * n)

    d = evaluate_gates(costly("c", 100, 0.005), costly("s", 100, 0.005), cfg)
    assert d.gate("cost").outcome == "pass" and d.gate("cost_ratio").outcome == "pass"
    d = evaluate_gates(costly("c", 100, 0.02), costly("s", 100, 0.005), cfg)
    assert d.gate("cost").outcome == "fail" and d.gate("cost_ratio").outcome == "fail"
    assert d.gate("cost_ratio").estimate == pytest.approx(4.0)
    # free local versions: 0 vs 0 is not more expensive
    d = evaluate_gates(costly("c", 100, 0.0), costly("s", 100, 0.0), cfg)
    assert d.gate("cost_ratio").outcome == "pass"


def test_signature_names_every_gate_outcome():
    d = evaluate_gates(metrics(n=10, latencies=lat(10)), None, GateConfig())
    assert d.signature().startswith("inconclusive:sample_size=inconclusive,")


# -- property: more data never turns a fail into a pass for a worse version ------------------

@settings(max_examples=150, deadline=None, derandomize=True)
@given(n=st.integers(30, 400), err=st.floats(0.06, 0.6), k=st.integers(2, 20),
       thr=st.sampled_from([0.02, 0.05]), method=st.sampled_from(["wilson", "exact"]))
def test_more_data_keeps_a_failing_error_rate_failing(n, err, k, thr, method):
    cfg = GateConfig(max_error_rate=thr, max_latency_ratio=None, min_agreement=None,
                     min_samples=30, rate_interval=method)
    x = round(err * n)
    before = evaluate_gates(metrics(n=n, errors=x, latencies=[]), None, cfg)
    after = evaluate_gates(metrics(n=k * n, errors=k * x, latencies=[]), None, cfg)
    assert after.outcome != "pass"
    if before.outcome == "fail":
        assert after.outcome == "fail"


@settings(max_examples=60, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000), slow=st.floats(1.3, 3.0), k=st.integers(2, 6),
       acc_gap=st.floats(0.05, 0.4))
def test_more_data_never_passes_a_worse_version(seed, slow, k, acc_gap):
    """A candidate slower and less accurate than stable: with k times the data (the same
    empirical distributions repeated) its decision is never pass, and a fail stays a fail."""
    cfg = GateConfig(min_samples=30, max_error_rate=0.05, max_latency_ratio=1.1,
                     min_accuracy_delta=0.0, min_agreement=None, max_p95_ms=None)
    rng = random.Random(seed)
    n = 120
    base = [rng.expovariate(1 / 100) for _ in range(n)]
    cand_lat = [slow * rng.expovariate(1 / 100) for _ in range(n)]
    s_correct = round(0.8 * n)
    c_correct = max(0, round((0.8 - acc_gap) * n))

    def pair(mult):
        c = VersionMetrics("c", n * mult, 0, cand_lat * mult, correct=c_correct * mult,
                           labelled=n * mult)
        s = VersionMetrics("s", n * mult, 0, base * mult, correct=s_correct * mult,
                           labelled=n * mult)
        return evaluate_gates(c, s, cfg)

    before, after = pair(1), pair(k)
    assert after.outcome != "pass"
    for g in before.gates:
        if g.outcome == "fail":
            assert after.gate(g.name).outcome == "fail", (g.name, g.detail)


def test_every_threshold_of_gate_config_has_one_row_in_the_gate_table():
    from agents.gates import GATES

    thresholds = {f for f in GateConfig.model_fields
                  if f.startswith(("max_", "min_")) and f not in ("min_samples", "min_dwell_s")}
    assert sorted(g.threshold for g in GATES) == sorted(thresholds)
    assert len({g.name for g in GATES}) == len(GATES)
