"""The printed table: each figure next to its ceiling from the same run, and their ratio."""

from __future__ import annotations

import statistics
from typing import Any

from .core import fmt, table


def _get(d: dict, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _middle(value):
    """A figure of one trial or several: a number, a list of trials, or a trials summary
    (results files of every version of bench/pipeline.py)."""
    if isinstance(value, dict):
        return value.get("median")
    if isinstance(value, list):
        return statistics.median(value) if value else None
    return value


def rows(result: dict) -> list[list[Any]]:
    """[benchmark, figure, value, ceiling, ratio, unit] for every measured figure."""
    out: list[list[Any]] = []
    tp = result.get("throughput")
    if tp:
        out.append(["1 bus throughput", f"{tp['events']} events, commits->findings",
                    _get(tp, "pipeline_events_per_s", "median"),
                    _get(tp, "relay_events_per_s", "median"), tp.get("ratio"), "events/s"])
        if tp.get("raw_pipeline_events_per_s"):
            out.append(["1 bus throughput", "vs raw aiokafka pipeline, same hops and batching",
                        _get(tp, "pipeline_events_per_s", "median"),
                        _get(tp, "raw_pipeline_events_per_s", "median"),
                        tp.get("ratio_to_raw_pipeline"), "events/s"])
        if tp.get("raw_two_hops_events_per_s"):
            out.append(["1 bus throughput", "vs raw pipeline of intake and inference only",
                        _get(tp, "pipeline_events_per_s", "median"),
                        _get(tp, "raw_two_hops_events_per_s", "median"),
                        tp.get("ratio_to_raw_two_hops"), "events/s"])
    ro = result.get("routing_overhead")
    if ro:
        route = ro["pipeline"]["commit_to_inference_request"]
        hop = ro["relay"]["hop"]
        rate = ro["pipeline"]["rate"]
        out.append(["2 routing overhead", f"p50 commit->inference @ {fmt(rate)}/s",
                    route["p50_ms"], hop["p50_ms"], ro.get("p50_ratio"), "ms"])
        out.append(["2 routing overhead", "p99 commit->inference", route["p99_ms"],
                    hop["p99_ms"], ro.get("p99_ratio"), "ms"])
        own = ro.get("relay_at_half_its_max")
        if own:
            out.append(["2 routing overhead", f"p99, relay @ {fmt(own['rate'])}/s (half its max)",
                        route["p99_ms"], own["hop"]["p99_ms"],
                        ro.get("p99_ratio_to_relay_at_half_its_max"), "ms"])
    sc = result.get("shadow_cost")
    if sc:
        base = _get(sc, "throughput_events_per_s", "0_shadows", "median")
        for k in ("0_shadows", "1_shadows", "3_shadows"):
            v = _get(sc, "throughput_events_per_s", k, "median")
            if v is not None:
                out.append(["3 shadow cost", f"throughput, {k.replace('_', ' ')}", v, base,
                            _get(sc, "ratio_to_0_shadows", k), "events/s"])
        later = result.get("after_long_run")
        if later:
            out.append(["3 shadow cost", f"same worker after the long run vs fresh "
                        f"({later['events']} events, wall clock)",
                        _middle(later["after_wall_events_per_s"]), later["fresh_wall_events_per_s"],
                        later.get("ratio"), "events/s"])
            if later.get("fresh_worker_now_wall_events_per_s") is not None:
                out.append(["3 shadow cost", "  vs a fresh worker on the same broker, now",
                            _middle(later["old_worker_wall_events_per_s"]),
                            _middle(later["fresh_worker_now_wall_events_per_s"]),
                            later.get("ratio_to_fresh_worker_now"), "events/s"])
        rate = _get(sc, "stable_latency", "rate")
        out.append(["3 shadow cost", f"stable p99 end-to-end @ {fmt(rate)}/s, slow vs fast shadow",
                    sc.get("stable_p99_ms_slow_shadow"), sc.get("stable_p99_ms_fast_shadow"),
                    sc.get("stable_p99_ratio_slow_to_fast"), "ms"])
    sk = result.get("sink")
    if sk:
        best = sk.get("direct_method")
        out.append(["4 sink", f"{sk['rows']} rows drained by the sink vs direct bulk insert"
                    + (f" ({best}, the faster)" if best else ""),
                    _get(sk, "sink_rows_per_s", "median"), _get(sk, "direct_rows_per_s", "median"),
                    sk.get("ratio"), "rows/s"])
        for method, summary in (sk.get("direct_by_method") or {}).items():
            if method != best:
                out.append(["4 sink", f"  vs direct bulk insert ({method})",
                            _get(sk, "sink_rows_per_s", "median"), summary.get("median"),
                            _get(sk, "ratio_by_method", method), "rows/s"])
        if sk.get("raw_read_rows_per_s"):
            out.append(["4 sink", "  vs the same backlog read raw (no parse, no store)",
                        _get(sk, "sink_rows_per_s", "median"),
                        _get(sk, "raw_read_rows_per_s", "median"), sk.get("ratio_to_raw_read"),
                        "rows/s"])
            out.append(["4 sink", "  the raw read vs the direct bulk insert",
                        _get(sk, "raw_read_rows_per_s", "median"),
                        _get(sk, "direct_rows_per_s", "median"), sk.get("raw_read_to_direct"),
                        "rows/s"])
        if sk.get("end_to_end_rows_per_s"):
            out.append(["4 sink", f"{sk['rows']} rows sent to a running worker, end to end",
                        _get(sk, "end_to_end_rows_per_s", "median"),
                        _get(sk, "direct_rows_per_s", "median"), sk.get("end_to_end_ratio"),
                        "rows/s"])
    rp = result.get("replay")
    if rp:
        # Since 2026-12-08 each replay trial is paired with a direct one and the ratio is the
        # median of the pairs' ratios, which need not be the ratio of the two medians shown.
        paired = " (ratio: median of paired trials)" if "ratio_by_trial" in rp else ""
        out.append(["5 replay", f"{rp['commits']} commits -> {rp['version']}{paired}",
                    _get(rp, "replay_events_per_s", "median"),
                    _get(rp, "direct_events_per_s", "median"), rp.get("ratio"), "events/s"])
    an = result.get("analyzers")
    if an:
        for version, s in an.get("versions", {}).items():
            out.append(["6 analyzer latency", f"{version} p50 per commit",
                        s.get("p50_ms"), None, None, "ms"])
            out.append(["6 analyzer latency", f"{version} p99 per commit", s.get("p99_ms"),
                        None, None, "ms"])
    mem = result.get("memory")
    if mem:
        out.append(["7 memory", "worker peak RSS during 1", mem.get("peak_rss_mib_benchmark_1"),
                    None, None, "MiB"])
        for k, v in (mem.get("peak_rss_mib_benchmark_3") or {}).items():
            out.append(["7 memory", f"worker peak RSS during 3 ({k.replace('_', ' ')})", v,
                        None, None, "MiB"])
    return out


def render(result: dict) -> str:
    m = result.get("machine", {})
    head = (f"reviewbus benchmarks: {m.get('cpu_model')}, {m.get('cores')} cores, "
            f"{m.get('memory_gib')} GiB, Python {m.get('python')}, git {m.get('git_sha')}\n"
            f"medians of {_get(result, 'params', 'trials')} trial(s); ratio = value / ceiling\n")
    others = m.get("other_stacks_at_start")
    if others:
        head += (f"WARNING: {len(others)} other broker or worker process(es) ran at the start "
                 f"(pids {', '.join(str(o['pid']) for o in others)}): the figures include "
                 "their CPU\n")
    return head + table(rows(result), ["benchmark", "figure", "value", "ceiling", "ratio", "unit"])
