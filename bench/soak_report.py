"""The soak run's summary (its first minutes against its last, as ratios) and its picture
(bench/soak.py writes both next to its JSON)."""

from __future__ import annotations

import statistics
from pathlib import Path


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


WARMUP_MIN = 2.0


def window(samples: list[dict], lo: float, hi: float) -> list[dict]:
    return [s for s in samples if lo < s["minute"] <= hi]


def mean_of(ws: list[dict], who: str) -> float | None:
    values = [s["cpu_ms_per_commit"][who] for s in ws if who in s.get("cpu_ms_per_commit", {})]
    return round(statistics.fmean(values), 2) if values else None


def summary(samples: list[dict], edge_min: float, lat: dict[int, list[float]]) -> dict:
    end = samples[-1]["minute"]
    first, last_ = window(samples, 0, edge_min), window(samples, end - edge_min, end)

    def rate(ws):
        return statistics.fmean(s["served_per_s"] for s in ws) if ws else None

    def p99(ws):
        pooled = [x for s in ws for x in lat.get(id(s), [])]
        return percentile(pooled, 0.99)

    def ratio(a, b):
        return round(a / b, 3) if a is not None and b else None

    # The first minutes hold the warm-up (models loading, first group join): their slowest
    # requests would make the start look slow and any later p99 look good by comparison, so
    # the ratio is also given against the first window without its first WARMUP_MIN minutes
    # (the p99 of all their latencies pooled, like p99_ratio).
    # (by minute + half a sample: sample times drift, a sample at 2.01 is still the warm-up's)
    settled = window(samples, WARMUP_MIN + 0.5, edge_min)
    rss_at_edge = first[-1]["rss_mib"] if first else None
    rss_end = samples[-1]["rss_mib"]
    return {
        "minutes": end, "first_minutes": edge_min,
        "throughput_first": rate(first), "throughput_last": rate(last_),
        "throughput_ratio": ratio(rate(last_), rate(first)),
        "p99_first_ms": p99(first), "p99_last_ms": p99(last_),
        "p99_ratio": ratio(p99(last_), p99(first)),
        "p99_first_after_warmup_ms": p99(settled), "warmup_minutes": WARMUP_MIN,
        "p99_ratio_after_warmup": ratio(p99(last_), p99(settled)),
        "rss_after_first_mib": rss_at_edge, "rss_end_mib": rss_end,
        "rss_growth": ratio(rss_end - rss_at_edge, rss_at_edge) if rss_at_edge and rss_end else None,
        "cpu_ms_per_commit_first": {k: mean_of(first, k) for k in ("worker", "broker")},
        "cpu_ms_per_commit_last": {k: mean_of(last_, k) for k in ("worker", "broker")},
        "restarts": samples[-1]["restarts"], "backlog_end": samples[-1]["backlog"],
        "duplicates": samples[-1]["duplicates"],
    }


def plot(samples: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [s["minute"] for s in samples]
    fig, axes = plt.subplots(6, 1, figsize=(9, 15), sharex=True)
    ax = axes[0]
    ax.plot(x, [s["served_per_s"] for s in samples], label="served / s")
    ax2 = ax.twinx()
    ax2.plot(x, [s["backlog"] for s in samples], color="tab:red", label="backlog")
    ax.set_ylabel("served / s")
    ax2.set_ylabel("backlog (commits)", color="tab:red")
    ax.set_ylim(bottom=0)
    ax = axes[1]
    for key in ("p50_ms", "p99_ms"):
        ax.plot(x, [s[key] for s in samples], label=key.replace("_ms", ""))
    ax.set_ylabel("end to end (ms)")
    ax.legend(loc="upper left")
    axes[2].plot(x, [s["rss_mib"] for s in samples])
    axes[2].set_ylabel("worker RSS (MiB)")
    ax = axes[5]
    for who in ("worker", "broker"):
        ax.plot(x, [s["cpu_ms_per_commit"].get(who) for s in samples], label=who)
    ax.set_ylabel("CPU ms per commit")
    ax.legend(loc="upper left")
    ax = axes[3]
    tables = sorted({t for s in samples for t in s["store_rows"] if t != "error"})
    for t in tables:
        ax.plot(x, [s["store_rows"].get(t) for s in samples], label=t)
    ax.set_ylabel("store rows")
    ax.legend(loc="upper left", fontsize=7, ncol=3)
    ax = axes[4]
    timers = sorted({t for s in samples for t in s["timer_tick_ms"]})
    for t in timers:
        ax.plot(x, [s["timer_tick_ms"].get(t) for s in samples], marker=".", label=t)
    ax.set_yscale("log")
    ax.set_ylabel("timer tick (ms)")
    ax.legend(loc="upper left", fontsize=7, ncol=3)
    axes[-1].set_xlabel("minutes")
    half = samples[-1]["minute"] / 2
    for a in axes:
        a.axvline(half, color="grey", linestyle=":", linewidth=1)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


__all__ = ["WARMUP_MIN", "mean_of", "percentile", "plot", "summary", "window"]
