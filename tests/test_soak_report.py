"""bench/soak_report.py: the soak run's first-against-last ratios and its picture."""

from __future__ import annotations

from bench.soak_report import percentile, plot, summary


def _samples(minutes: int) -> list[dict]:
    return [{"minute": m, "served_per_s": 10.0 if m <= 5 else 8.0, "backlog": m, "p50_ms": 1.0,
             "p99_ms": 2.0, "rss_mib": 100 + m, "restarts": 0, "duplicates": 1,
             "cpu_ms_per_commit": {"worker": 1.0 if m <= 5 else 1.5, "broker": 0.5},
             "store_rows": {"results": 10 * m}, "timer_tick_ms": {"rotation": 3.0}}
            for m in range(1, minutes + 1)]


def test_the_summary_compares_the_first_and_last_minutes():
    samples = _samples(20)
    # latencies are keyed by the sample they were measured in: slow ones in the warm-up only
    lat = {id(s): ([1000.0] if s["minute"] <= 2 else [50.0]) * 10 for s in samples}
    out = summary(samples, 5, lat)
    assert out["throughput_first"] == 10.0 and out["throughput_last"] == 8.0
    assert out["throughput_ratio"] == 0.8
    assert out["p99_first_ms"] == 1000.0 and out["p99_first_after_warmup_ms"] == 50.0
    assert out["p99_ratio"] == 0.05 and out["p99_ratio_after_warmup"] == 1.0
    assert out["rss_after_first_mib"] == 105 and out["rss_end_mib"] == 120
    assert out["rss_growth"] == round(15 / 105, 3)
    assert out["cpu_ms_per_commit_first"] == {"worker": 1.0, "broker": 0.5}
    assert out["cpu_ms_per_commit_last"] == {"worker": 1.5, "broker": 0.5}
    assert out["backlog_end"] == 20 and out["duplicates"] == 1


def test_percentiles_and_the_picture(tmp_path):
    assert percentile([], 0.99) is None
    assert percentile([float(i) for i in range(100)], 0.99) == 99.0
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    path = tmp_path / "soak.png"
    plot(_samples(6), path, "soak")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
