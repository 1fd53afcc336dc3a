"""The benchmark suite's parts: statistics, ratios, the table, commit synthesis; the few that
need a broker are marked `integration` and use the session's.

The benchmarks themselves are not tests (`make bench`); nothing here is timed.
"""

import json
import os
import time

import pytest

from bench import load
from bench.analyzers import diff_size, post_images, synthesize
from bench.core import fmt, latency_summary, machine_info, percentile, ratio, span_rate, trials_summary
from bench.pipeline import noop_config
from bench.report import render, rows


def test_percentile_interpolates_and_handles_edges():
    assert percentile([], 50) is None
    assert percentile([7], 99) == 7.0
    assert percentile([1, 2, 3, 4], 50) == pytest.approx(2.5)
    assert percentile(list(range(1, 101)), 99) == pytest.approx(99.01)
    assert percentile([5, 1, 3], 0) == 1.0 and percentile([5, 1, 3], 100) == 5.0


def test_ratio_is_value_over_ceiling_and_none_when_undefined():
    assert ratio(250.0, 1000.0) == pytest.approx(0.25)
    assert ratio(None, 10.0) is None
    assert ratio(5.0, 0.0) is None
    assert ratio(5.0, None) is None


def test_trials_summary_reports_the_median_and_the_spread():
    s = trials_summary([300.0, 100.0, None, 200.0])
    assert (s["median"], s["min"], s["max"]) == (200.0, 100.0, 300.0)
    assert s["trials"] == [300.0, 100.0, None, 200.0]
    assert trials_summary([])["median"] is None


def test_latency_and_rate_from_message_timestamps():
    src = {"a": 1000, "b": 1010, "c": 1020}
    dst = {"a": 1004, "b": 1030, "x": 5}
    assert sorted(load.hop_latencies(src, dst)) == [4.0, 20.0]
    lat = latency_summary(load.hop_latencies(src, dst))
    assert lat["n"] == 2 and lat["p50_ms"] == pytest.approx(12.0)
    # 11 messages spread over 2 s: 5 per second.
    assert span_rate({str(i): 1000 + 200 * i for i in range(11)}) == pytest.approx(5.0)
    assert span_rate({"a": 1}) is None


def test_commit_events_are_valid_and_keyed_by_repository():
    [(eid, key, value)] = load.commit_events(1, "run1")
    data = json.loads(value)
    assert eid == "run1-0" == data["event_id"] and key == b"bench/repo"
    assert data["message"].startswith("feat(handler):")


def test_noop_config_has_one_stable_and_the_shadows_asked_for():
    cfg = noop_config(3, slow_shadow_ms=200)
    states = [v["initial_state"] for v in cfg["versions"]]
    assert states.count("stable") == 1 and states.count("shadow") == 4
    assert cfg["versions"][-1]["params"] == {"sleep_ms": 200}


DIFF = (
    "diff --git a/pkg/m.py b/pkg/m.py\n"
    "index 1..2 100644\n"
    "--- a/pkg/m.py\n"
    "+++ b/pkg/m.py\n"
    "@@ -3,3 +3,4 @@ def f():\n"
    " import os\n"
    "-import sys\n"
    "+import subprocess\n"
    "+subprocess.call('x', shell=True)\n"
    " x = 1\n"
    "diff --git a/new.py b/new.py\n"
    "new file mode 100644\n"
    "--- /dev/null\n"
    "+++ b/new.py\n"
    "@@ -0,0 +1,1 @@\n"
    "+print('hi')\n"
)


def test_post_images_keep_real_line_numbers():
    images = post_images(DIFF)
    assert images["pkg/m.py"] == {3: "import os", 4: "import subprocess",
                                  5: "subprocess.call('x', shell=True)", 6: "x = 1"}
    assert images["new.py"] == {1: "print('hi')"}


def test_synthesized_commit_has_line_preserving_python_contents():
    row = {"repo": "o/r", "sha": "a" * 40, "subject": "fix(m): call", "message": "call\n\nbody",
           "diff": DIFF, "diff_truncated": False,
           "files": [{"path": "pkg/m.py", "added": 2, "deleted": 1},
                     {"path": "new.py", "added": 1, "deleted": 0},
                     {"path": "README.md", "added": 1, "deleted": 0}]}
    event = synthesize(row)
    by_path = {f.path: f for f in event.files}
    assert by_path["pkg/m.py"].content.split("\n")[3] == "import subprocess"
    assert by_path["new.py"].status == "added"
    assert by_path["README.md"].content is None
    assert event.message == "fix(m): call\n\nbody"
    assert diff_size(row) == 5


def test_report_rows_put_each_figure_next_to_its_ceiling():
    result = {"params": {"trials": 3}, "machine": machine_info(),
              "throughput": {"events": 100, "pipeline_events_per_s": {"median": 50.0},
                             "relay_events_per_s": {"median": 200.0}, "ratio": 0.25},
              "sink": {"rows": 30, "sink_rows_per_s": {"median": 10.0},
                       "direct_rows_per_s": {"median": 40.0}, "ratio": 0.25}}
    table = rows(result)
    assert table[0][2:6] == [50.0, 200.0, 0.25, "events/s"]
    assert table[1][2:6] == [10.0, 40.0, 0.25, "rows/s"]
    text = render(result)
    assert "1 bus throughput" in text and "0.25" in text
    assert fmt(None) == "-" and fmt(12345.6) == "12,346"


def test_the_msgspec_mirror_reads_a_result_as_pydantic_does_and_rejects_what_it_rejects():
    """bench/parse.py times msgspec against pydantic: the mirror must do the same work, or the
    comparison is not a comparison (bench/parse_msgspec.py names the one known difference)."""
    msgspec = pytest.importorskip("msgspec")
    from bench.parse_msgspec import Result
    from schemas import Finding, InferenceResult, Role, Status
    from schemas.inference import ChangeType, Dimension, Severity

    result = InferenceResult(
        request_id="r1", task="code-review", version_id="v1", role=Role.shadow,
        status=Status.ok, latency_ms=3.5, repo="a/b", sha="c" * 40,
        change_type=ChangeType(label="feature", confidence=0.7, scores={"feature": 0.7}),
        findings=[Finding(fingerprint="f" * 16, dimension=Dimension.correctness,
                          severity=Severity.high, confidence=0.5, path="x.py", line=3,
                          rule_id="E1", message="m", source="ruff")])
    raw = result.model_dump_json().encode()
    mirror = msgspec.json.decode(raw, type=Result)
    assert msgspec.to_builtins(mirror) == json.loads(raw) | {
        "occurred_at": mirror.occurred_at.isoformat().replace("+00:00", "Z")}
    assert mirror.role is Role.shadow and mirror.findings[0].severity is Severity.high
    decoder = msgspec.json.Decoder(Result, strict=False)  # as bench/parse.py times it
    for bad in (raw.replace(b'"confidence":0.5', b'"confidence":1.5'),
                raw.replace(b'"usage":{', b'"usage":null,"x":{'),
                raw.replace(b'"role":"shadow"', b'"role":"boss"'),
                raw.replace(b'"latency_ms":3.5', b'"latency_ms":-1')):
        with pytest.raises(ValueError):
            InferenceResult.model_validate_json(bad)
        with pytest.raises(msgspec.ValidationError):
            decoder.decode(bad)
    lax = raw.replace(b'"latency_ms":3.5', b'"latency_ms":"3.5"')  # both coerce it
    assert InferenceResult.model_validate_json(lax).latency_ms == decoder.decode(lax).latency_ms
    bare = b'{"request_id":"r","task":"t","version_id":"v","role":"primary","status":"ok",' \
        b'"latency_ms":1}'  # defaults filled alike
    assert msgspec.to_builtins(decoder.decode(bare).usage) == \
        InferenceResult.model_validate_json(bare).usage.model_dump()


def test_the_learner_window_bench_reads_and_fits_a_bounded_window(tmp_path):
    """bench/learner_window.py on a small synthetic history: the whole-history refit reads
    every copy, the windowed one its windows only, and the result says so."""
    import gzip
    import json

    from bench import learner_window
    from tests import mldata

    data = tmp_path / "mini.jsonl.gz"
    with gzip.open(data, "wt") as fh:
        for row in mldata.rows(20, repos=("org/one", "org/two")):  # 50 per repository
            fh.write(json.dumps(row) + "\n")
    assert learner_window.main(["--data", str(data), "--copies", "1,2", "--repo", "org/one",
                                "--max-labels", "60", "--base-labels", "20", "--takeover", "10",
                                "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("learner-window-*.json")
    runs = {(r["copies"], r["window"]): r for r in json.loads(path.read_text())["runs"]}
    assert runs[(2, False)]["rows_read"] == 200 and runs[(2, False)]["fitted_labels"] == 100
    assert runs[(2, False)]["global_rows"] == 200
    assert runs[(2, True)]["rows_read"] == 80  # org/one's newest 60, org/two's newest 20
    assert runs[(2, True)]["fitted_labels"] == 60 and runs[(2, True)]["labels"] == 100
    assert runs[(2, True)]["global_rows"] == 40  # the newest 20 of each repository
    assert runs[(1, True)]["fitted_labels"] == 50  # below the window: everything
    assert path.with_suffix(".png").stat().st_size > 0


def test_the_idle_routing_bench_runs_each_setting_on_a_fresh_worker(tmp_path):
    """bench/idle_routing.py, one short trial of one setting (each setting gets a worker of
    its own: one keeps the suite quick): its routing latency and the environment it ran with."""
    import json

    from bench import idle_routing

    assert idle_routing.parse_configs("a=2/250, off=0/0") == {
        "a": {"REVIEWBUS_FETCH_IDLE_AFTER_S": "2", "REVIEWBUS_FETCH_IDLE_WAIT_MS": "250"},
        "off": {"REVIEWBUS_FETCH_IDLE_AFTER_S": "0", "REVIEWBUS_FETCH_IDLE_WAIT_MS": "0"}}
    assert idle_routing.main(["--trials", "1", "--rate", "100", "--seconds", "1",
                              "--configs", "short=0.5/100", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("idle-routing-*.json")
    got = json.loads(path.read_text())
    assert [r["config"] for r in got["runs"]] == ["short"]
    assert all(r["p50_ms"] is not None and 0 < r["p50_ms"] <= r["p99_ms"] for r in got["runs"])
    assert got["runs"][0]["env"]["REVIEWBUS_FETCH_IDLE_WAIT_MS"] == "100"
    assert got["summary"]["short"]["p99_ms"]["trials"] == [got["runs"][0]["p99_ms"]]


@pytest.mark.integration
def test_the_hop_cost_bench_measures_a_faust_read_and_a_producer_send(broker):
    """bench/hop_cost.py on the session's broker, a few hundred records per path: each path's
    child process runs and reports a positive CPU time per record (the figures come from
    `python -m bench.hop_cost`)."""
    from bench.hop_cost import measure

    for path in ("faust_read", "aiokafka_send"):
        us = measure(broker, path, 300)
        assert 0 < us < 100_000, (path, us)


def test_the_batch_window_ab_runs_each_value_on_a_fresh_worker(tmp_path):
    """bench/batch_within_ab.py, one short round of two windows: each run reports the window
    it ran with, a throughput and a routing latency, in the JSON it writes."""
    import json

    from bench import batch_within_ab

    assert batch_within_ab.main(["--values", "0.05", "--rounds", "1", "--events", "200",
                                 "--rate", "100", "--seconds", "1", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("*-batch-within-ab.json")
    runs = json.loads(path.read_text())["runs"]
    assert [r["within_s"] for r in runs] == [0.05]
    for run in runs:
        assert len(run["wall_events_per_s"]) == 2 and all(r > 0 for r in run["wall_events_per_s"])
        assert 0 < run["route_p50_ms"] <= run["route_p99_ms"]


def test_the_code_ab_runs_each_checkout_on_a_fresh_worker(tmp_path):
    """bench/code_ab.py, one round of one trial-less run per side (both sides this checkout):
    each run names its side and commit and reports a routing latency."""
    import json

    from bench import code_ab
    from bench.core import ROOT

    assert code_ab.main(["--a", str(ROOT), "--b", str(ROOT), "--rounds", "1", "--trials", "0",
                         "--rate", "100", "--seconds", "1", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("*-code-ab.json")
    got = json.loads(path.read_text())
    assert [r["side"] for r in got["runs"]] == ["a", "b"]
    assert got["commits"]["a"] == got["commits"]["b"] == got["runs"][0]["commit"] != "?"
    for run in got["runs"]:
        assert run["wall_events_per_s"] == [] and run["achieved_per_s"] > 0
        assert 0 < run["route_p50_ms"] <= run["route_p99_ms"]


def test_the_routing_rows_compare_with_the_relay_at_the_same_rate_and_at_half_its_own():
    lat = {"p50_ms": 30.0, "p99_ms": 90.0}
    result = {"params": {"trials": 1}, "machine": machine_info(), "routing_overhead": {
        "rate": 500.0, "pipeline": {"rate": 500.0, "commit_to_inference_request": lat},
        "relay": {"rate": 500.0, "hop": {"p50_ms": 5.0, "p99_ms": 10.0}},
        "relay_at_half_its_max": {"rate": 8000.0, "hop": {"p50_ms": 20.0, "p99_ms": 45.0}},
        "p50_ratio": 6.0, "p99_ratio": 9.0, "p99_ratio_to_relay_at_half_its_max": 2.0}}
    table = rows(result)
    assert [r[2:5] for r in table] == [[30.0, 5.0, 6.0], [90.0, 10.0, 9.0], [90.0, 45.0, 2.0]]
    assert "@ 500/s" in table[0][1] and "8,000/s (half its max)" in table[2][1]


@pytest.mark.parametrize("method", ["columns", "json"])
def test_the_sink_ceilings_store_every_row_of_the_same_results(tmp_path, method):
    """bench/sink.py's direct inserts (each in a process of its own, as chDB wants): both store
    the 3 rows of each result (the child checks the count and fails otherwise)."""
    from bench import sink

    assert sink._direct(tmp_path, 300, method) > 0
    with pytest.raises(RuntimeError, match="direct insert failed"):
        sink._direct(tmp_path, 300, "no-such-method-" + method)


def test_the_partitioner_bench_reports_both_partitioners_per_key():
    from bench import partitioner

    out = partitioner.measure(200, repeat=1)
    assert out["keys"] == 250
    assert out["aiokafka_us_per_key"] > 0 and out["reviewbus_us_per_key"] > 0
    assert out["ratio"] == out["reviewbus_us_per_key"] / out["aiokafka_us_per_key"]


def test_the_same_worker_row_compares_wall_clock_rates_of_trials_of_one_size():
    result = {"params": {"trials": 1}, "machine": machine_info(),
              "shadow_cost": {"throughput_events_per_s": {"0_shadows": {"median": 3000.0}},
                              "ratio_to_0_shadows": {"0_shadows": 1.0}},
              "after_long_run": {"events": 5000, "fresh_wall_events_per_s": 2000.0,
                                 "after_wall_events_per_s": {"median": 1700.0}, "ratio": 0.85}}
    [row] = [r for r in rows(result) if "after the long run" in r[1]]
    assert row[1:6] == ["same worker after the long run vs fresh (5000 events, wall clock)",
                        1700.0, 2000.0, 0.85, "events/s"]


def test_the_old_worker_is_also_compared_with_a_fresh_one_on_the_same_broker():
    """The embedded broker slows with its history: the row that tells the worker's slowdown
    from the broker's puts the old worker's trials against a fresh worker's, all at the end
    (medians; older results files held one fresh trial)."""
    result = {"params": {"trials": 1}, "machine": machine_info(),
              "shadow_cost": {"throughput_events_per_s": {"0_shadows": {"median": 3000.0}},
                              "ratio_to_0_shadows": {"0_shadows": 1.0}},
              "after_long_run": {"events": 5000, "fresh_wall_events_per_s": 2000.0,
                                 "after_wall_events_per_s": 1400.0, "ratio": 0.7,
                                 "old_worker_wall_events_per_s": [1400.0, 1600.0],
                                 "fresh_worker_now_wall_events_per_s": 1500.0,
                                 "ratio_to_fresh_worker_now": 1.0}}
    [row] = [r for r in rows(result) if "fresh worker on the same broker" in r[1]]
    assert row[2:6] == [1500.0, 1500.0, 1.0, "events/s"]
    result["after_long_run"]["old_worker_wall_events_per_s"] = [1400.0, 1600.0, 2000.0]
    result["after_long_run"]["fresh_worker_now_wall_events_per_s"] = [1000.0, 1200.0]
    [row] = [r for r in rows(result) if "fresh worker on the same broker" in r[1]]
    assert row[2:4] == [1600.0, 1100.0]


@pytest.mark.integration
def test_the_sink_raw_read_ceiling_reads_the_whole_backlog_once(broker, tmp_path):
    """bench/sink.py `_raw_read` on the session's broker: it reads the backlog to its end,
    gives up with the count it reached when the topic holds fewer records than asked, and
    refuses a backlog that one fetch returns whole (no rate after the first batch to time)."""
    import asyncio

    from bench.sink import _messages, _raw_read
    from bench.stack import Worker
    from infra.kafka import ensure_topics

    w = Worker(tmp_path / "w", broker, noop_config(0), partitions=4)
    asyncio.run(ensure_topics(w.settings, broker, {w.topic("results"): 4}))
    asyncio.run(load.produce(w.settings, broker, w.topic("results"), _messages(6000, "raw")))
    rate, seen = asyncio.run(_raw_read(w, 6000))
    assert seen == 6000 and rate > 0

    small = Worker(tmp_path / "small", broker, noop_config(0), partitions=1)
    asyncio.run(ensure_topics(small.settings, broker, {small.topic("results"): 1}))
    asyncio.run(load.produce(small.settings, broker, small.topic("results"), _messages(5, "one")))
    with pytest.raises(TimeoutError, match="read 5 records of a backlog of 10"):
        asyncio.run(_raw_read(small, 10, timeout_s=2))
    with pytest.raises(RuntimeError, match="fit one fetch"):
        asyncio.run(_raw_read(small, 5))


def test_the_replay_ratio_is_the_median_of_its_paired_trials():
    """bench/analyzers.py: each replay trial over the direct trial beside it; the report says
    so, since the median of the pairs need not be the ratio of the two medians it shows."""
    from bench.analyzers import paired_ratio

    # The medians (20 and 30) would give 0.667; the pairs give 0.25, 1.0 and 1.2.
    pairs = paired_ratio([10.0, 20.0, 36.0], [40.0, 20.0, 30.0])
    assert pairs["trials"] == [0.25, 1.0, 1.2] and pairs["median"] == 1.0
    with pytest.raises(ValueError):
        paired_ratio([1.0], [1.0, 2.0])
    result = {"params": {"trials": 3}, "machine": machine_info(),
              "replay": {"commits": 100, "version": "analyzers-v1", "ratio": 1.0,
                         "ratio_by_trial": pairs,
                         "replay_events_per_s": trials_summary([10.0, 20.0, 36.0]),
                         "direct_events_per_s": trials_summary([40.0, 20.0, 30.0])}}
    [row] = [r for r in rows(result) if r[0] == "5 replay"]
    assert row[1].endswith("(ratio: median of paired trials)")
    assert row[2:6] == [20.0, 30.0, 1.0, "events/s"]
    del result["replay"]["ratio_by_trial"]  # a result file from before the pairing
    [row] = [r for r in rows(result) if r[0] == "5 replay"]
    assert row[1] == "100 commits -> analyzers-v1"


@pytest.mark.integration
def test_the_replay_bench_pairs_each_replay_with_a_direct_run(broker, tmp_path):
    """bench/analyzers.py `run_replay` end to end on a few synthetic commits: the archive
    filled through a real worker, then per trial the analyzers called directly and the real
    `reviewbus replay --wait`, every replayed request stored, one ratio per pair."""
    from bench.analyzers import run_replay
    from schemas import CommitEvent

    commits = [(CommitEvent.model_validate_json(value), {})
               for _, _, value in load.commit_events(8, f"rp{tmp_path.name[-6:]}")]
    said: list[str] = []
    out = run_replay(tmp_path / "replay", broker, commits, 4, said.append, trials=2)
    assert out["trials"] == 2 and len(out["direct_events_per_s"]["trials"]) == 2
    pairs = out["ratio_by_trial"]["trials"]
    assert len(pairs) == 2 and all(p > 0 for p in pairs)
    assert out["ratio"] == pytest.approx(sum(pairs) / 2)  # the median of two
    assert out["run_interactions"]["n"] == 8 and out["run_interactions"]["ok"] == 8
    assert set(out["phases_s"]) >= {"start_to_first_request", "last_result_to_exit"}
    assert sum(line.startswith("  direct:") for line in said) == 2
    assert sum(line.startswith("  replay:") for line in said) == 2


def test_a_bench_names_the_brokers_and_workers_already_running_beside_it(tmp_path):
    """bench/core.py `other_stacks`: a process whose command line names a broker or a worker
    is listed (pid and command) in the machine info, and the report warns of it."""
    import subprocess
    import sys

    from bench.core import other_stacks

    beside = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                               "-m", "streams.worker"])
    try:
        # Popen returns once the exec closed the child's error pipe, which the kernel does
        # before it sets the new command line: read at once, it was once still empty.
        deadline = time.monotonic() + 10
        while beside.pid not in (found := {o["pid"]: o["cmd"] for o in other_stacks()}):
            assert time.monotonic() < deadline, f"pid {beside.pid} never listed: {found}"
            time.sleep(0.05)
        assert "streams.worker" in found[beside.pid]
        assert os.getpid() not in found
    finally:
        beside.kill()
        beside.wait()
    assert beside.pid not in {o["pid"] for o in other_stacks()}
    assert other_stacks(tmp_path / "no-proc") == []
    result = {"params": {"trials": 1},
              "machine": {**machine_info(), "other_stacks_at_start": [{"pid": 42, "cmd": "x"}]}}
    assert "WARNING: 1 other broker or worker process(es) ran at the start (pids 42)" in (
        render(result))
    result["machine"]["other_stacks_at_start"] = []
    assert "WARNING" not in render(result)


def test_a_paused_worker_is_stopped_only_while_the_ceiling_runs(tmp_path):
    """bench/stack.py `Worker.paused`: SIGSTOP on entry, SIGCONT on exit, even when the block
    raises (a worker left stopped would stall every later trial)."""
    import subprocess
    import sys

    from bench.stack import Worker

    def state(pid: int, wanted: tuple[str, ...]) -> str:
        """The process state once it is one of `wanted` (a signal lands asynchronously), or
        whatever it is after a second."""
        deadline = time.monotonic() + 1.0
        while True:
            now = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
            if now in wanted or time.monotonic() > deadline:
                return now
            time.sleep(0.005)

    w = Worker(tmp_path / "w", "127.0.0.1:9", noop_config(0))
    w.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with w.paused():
            assert state(w.proc.pid, ("T",)) == "T"
        assert state(w.proc.pid, ("S", "R")) in ("S", "R")
        with pytest.raises(RuntimeError, match="inside"), w.paused():
            assert state(w.proc.pid, ("T",)) == "T"
            raise RuntimeError("inside")
        assert state(w.proc.pid, ("S", "R")) in ("S", "R")
    finally:
        w.proc.kill()
        w.proc.wait()


def test_the_sink_drain_rate_counts_only_the_batches_after_the_first_commit():
    from bench.sink import ROWS_PER_RESULT, drain_rate

    # 30,000 results, 5,000 stored at the first commit seen, the last one 2 s later.
    assert drain_rate((10.0, 5000), 12.0, 30000) == 25000 * ROWS_PER_RESULT / 2.0
    with pytest.raises(RuntimeError, match="fit one insert"):
        drain_rate((10.0, 30000), 10.5, 30000)


@pytest.mark.integration
def test_the_commit_clock_reads_what_the_sink_group_committed_from_the_broker(broker, tmp_path):
    """bench/sink.py `CommitClock`: the sum of a group's committed offsets over the partitions
    (a partition never committed counts 0), a drain that ends once `n` are committed with the
    first commit it saw, a timeout naming what was stored, and a failing `check` raised."""
    import asyncio
    import time

    from aiokafka import AIOKafkaConsumer, TopicPartition

    from bench.sink import CommitClock
    from infra.kafka import client_kwargs, ensure_topics
    from tests.conftest import group_settings

    settings = group_settings(tmp_path)
    topic, group = f"clock-{time.monotonic_ns()}", f"clock-group-{time.monotonic_ns()}"

    async def scenario() -> None:
        await ensure_topics(settings, broker, {topic: 3})
        committer = AIOKafkaConsumer(**client_kwargs(settings, broker), group_id=group,
                                     enable_auto_commit=False)
        await committer.start()
        committer.assign([TopicPartition(topic, p) for p in range(3)])  # commits need it
        async with CommitClock(settings, broker, group, topic, 3) as clock:
            try:
                assert await clock.committed() == 0
                await committer.commit({TopicPartition(topic, 0): 40,
                                        TopicPartition(topic, 2): 2})
                assert await clock.committed() == 42
                with pytest.raises(TimeoutError, match="stored 42 of 50 events"):
                    await clock.drain(50, timeout_s=0.2)

                def dead() -> None:
                    raise RuntimeError("worker exited")

                with pytest.raises(RuntimeError, match="worker exited"):
                    await clock.drain(50, timeout_s=5, check=dead)

                async def later() -> None:
                    await asyncio.sleep(0.3)
                    await committer.commit({TopicPartition(topic, 1): 8})

                task = asyncio.ensure_future(later())
                (start, seen), last = await clock.drain(50, timeout_s=10)
                await task
                assert seen == 42 and last - start >= 0.2
            finally:
                await committer.stop()

    asyncio.run(scenario())


@pytest.mark.integration
def test_the_sink_drain_is_timed_by_a_real_worker_s_commits(broker, tmp_path):
    """bench/sink.py `_drain` end to end on the session's broker: a fresh worker drains a
    backlog of three sink batches (5,000 results each at most), timed from its first commit
    (which stored at most one batch) to its last, and the raw read of the same backlog."""
    from bench import sink

    said: list[str] = []
    rate, raw = sink._drain(tmp_path / "drain", broker, 12000, 4, said.append)
    assert rate > 0 and raw > 0
    [line] = said
    after = int(line.split(" of 12,000 events")[0].split()[-1].replace(",", ""))
    assert 12000 - 5000 <= after < 12000, line


def test_the_sink_rows_put_the_drain_beside_the_raw_read_and_the_raw_read_beside_the_insert():
    result = {"params": {"trials": 1}, "machine": machine_info(),
              "sink": {"rows": 90000, "direct_method": "json",
                       "sink_rows_per_s": {"median": 50000.0},
                       "direct_rows_per_s": {"median": 200000.0}, "ratio": 0.25,
                       "raw_read_rows_per_s": {"median": 400000.0}, "ratio_to_raw_read": 0.125,
                       "raw_read_to_direct": 2.0}}
    got = {r[1].strip(): r[2:6] for r in rows(result) if r[0] == "4 sink"}
    assert got["vs the same backlog read raw (no parse, no store)"] == [
        50000.0, 400000.0, 0.125, "rows/s"]
    assert got["the raw read vs the direct bulk insert"] == [400000.0, 200000.0, 2.0, "rows/s"]


def test_the_timer_queries_bench_times_every_timer_query_and_the_replay_poll(tmp_path):
    """`python -m bench.timer_queries` on a small store (its own process: chDB hosts one
    directory per process): every timer's query and the count `replay --wait` polls (and
    the count as it was before, for reference) are timed at each size."""
    import subprocess
    import sys

    from bench.core import ROOT
    from infra import queries

    out = subprocess.run([sys.executable, "-m", "bench.timer_queries", "--rows", "3000,9000",
                          "--runs", "1", "--days-per-10k", "0.01", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    [path] = tmp_path.glob("timer_queries-*.json")
    got = json.loads(path.read_text())["queries"]
    assert set(got) == set(queries.TIMERS) | {"replay_wait_count", "replay_wait_count_before"}
    assert all(set(by_size) == {"3000", "9000", "ratio"} for by_size in got.values())


@pytest.mark.integration
def test_the_shadow_cpu_bench_reads_each_process_cpu_per_commit(tmp_path):
    """bench/shadow_cpu.py on a small trial with one shadow (one broker and worker: each
    costs the suite ten seconds): every process's CPU per commit is positive, the JSON is
    written, and the brokers' and workers' directory is left only when asked for."""
    from bench import shadow_cpu

    got = shadow_cpu.main(["--events", "300", "--shadows", "1", "--out", str(tmp_path / "out"),
                           "--dir", str(tmp_path / "home")])
    [run] = got["runs"]
    assert run["shadows"] == 1 and run["events_per_s_wall"] > 0
    assert set(run["cpu_us_per_commit"]) == {"worker", "broker", "load"}
    assert all(v > 0 for v in run["cpu_us_per_commit"].values()), run
    assert len(list((tmp_path / "out").glob("shadow-cpu-*.json"))) == 1
    assert (tmp_path / "home" / "0-1-shadows" / "worker" / "worker.log").exists()


def test_the_shadow_cpu_ratios_are_to_the_first_configuration_per_process():
    from bench.shadow_cpu import with_ratios

    runs = with_ratios([{"cpu_us_per_commit": {"worker": 400.0, "broker": 100.0}},
                        {"cpu_us_per_commit": {"worker": 1000.0, "broker": 150.0, "load": 9.0}}])
    assert [r["ratio_to_first"] for r in runs] == [{"worker": 1.0, "broker": 1.0},
                                                   {"worker": 2.5, "broker": 1.5}]
