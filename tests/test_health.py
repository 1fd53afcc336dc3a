import pytest

from agents.health import HealthTracker


def test_consecutive_failures_trigger_once():
    h = HealthTracker(consecutive_failures=3, window=50, min_samples=20)
    assert h.observe("v1", False) is None
    assert h.observe("v1", False) is None
    verdict = h.observe("v1", False)
    assert verdict is not None
    trigger, evidence = verdict
    assert trigger == "consecutive_failures"
    assert evidence["consecutive_failures"] == 3
    assert evidence["window_errors"] == 3 and evidence["window_size"] == 3
    assert evidence["error_rate"] == 1.0
    assert h.tripped("v1")
    # silent afterwards, however bad it gets
    assert all(h.observe("v1", False) is None for _ in range(100))


def test_a_success_breaks_the_streak():
    h = HealthTracker(consecutive_failures=3, window=50, max_error_rate=1.0, min_samples=20)
    for _ in range(10):
        assert h.observe("v1", False) is None
        assert h.observe("v1", False) is None
        assert h.observe("v1", True) is None


def test_error_rate_trigger_needs_min_samples():
    h = HealthTracker(consecutive_failures=100, window=50, max_error_rate=0.5, min_samples=20)
    outcomes = [False, False, True] * 7  # 2/3 errors, never 100 in a row
    results = [h.observe("v1", ok) for ok in outcomes]
    first = next(i for i, r in enumerate(results) if r is not None)
    assert first == 19  # the 20th observation: the window has min_samples
    trigger, evidence = results[first]
    assert trigger == "error_rate"
    assert evidence["window_size"] == 20
    assert evidence["window_errors"] == 14
    assert evidence["error_rate"] == pytest.approx(0.7)
    assert all(r is None for r in results[first + 1:])


def test_error_rate_at_the_threshold_does_not_trigger():
    h = HealthTracker(consecutive_failures=100, window=20, max_error_rate=0.5, min_samples=20)
    assert all(h.observe("v1", ok) is None for ok in [False, True] * 40)


def test_window_slides():
    h = HealthTracker(consecutive_failures=100, window=10, max_error_rate=0.5, min_samples=10)
    for _ in range(5):
        assert h.observe("v1", False) is None
    for _ in range(20):
        assert h.observe("v1", True) is None  # old failures slide out
    results = [h.observe("v1", False) for _ in range(6)]
    assert results[:5] == [None] * 5  # 5/10 is not above 0.5
    assert results[5] is not None and results[5][1]["window_errors"] == 6


def test_versions_are_independent_and_reset_rearms():
    h = HealthTracker(consecutive_failures=2, window=50, min_samples=20)
    h.observe("v1", False)
    assert h.observe("v2", False) is None
    assert h.observe("v1", False)[0] == "consecutive_failures"
    assert h.observe("v1", False) is None
    h.reset("v1")
    assert not h.tripped("v1")
    assert h.observe("v1", False) is None
    assert h.observe("v1", False)[0] == "consecutive_failures"


def test_rejects_bad_settings():
    with pytest.raises(ValueError):
        HealthTracker(consecutive_failures=0)
    with pytest.raises(ValueError):
        HealthTracker(max_error_rate=1.5)


# ---- the five triggers (issue 4) --------------------------------------------------------------

import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from agents.config import QuarantineConfig  # noqa: E402
from agents.health import (  # noqa: E402
    TRIGGERS,
    Outcome,
    crash_verdicts,
    retest_backoff,
    retest_verdict,
    root_cause,
    suspects_of,
    tracker_from_config,
)
from agents.slo import SloConfig  # noqa: E402
from infra.crash_markers import CrashGuard, collect_deaths  # noqa: E402


def quiet(**kw) -> HealthTracker:
    """A tracker where only the trigger under test can fire."""
    base = dict(consecutive_failures=1000, window=50, max_error_rate=1.0, min_samples=50,
                invalid_outputs=1000, latency_ms=None)
    return HealthTracker(**{**base, **kw})


def test_outcome_of_a_result():
    assert Outcome.of("ok", 12, label="feature", predicted="feature").correct is True
    assert Outcome.of("ok", 12, label="feature", predicted="docs").correct is False
    assert Outcome.of("ok", 12).correct is None  # unlabelled
    assert Outcome.of("error", 1, label="feature", predicted=None).correct is None
    assert not Outcome.of("timeout").ok


def test_invalid_outputs_trigger_before_the_streak():
    h = quiet(invalid_outputs=3, consecutive_failures=5)
    bad = Outcome.of("invalid_output", error="not the schema")
    assert h.observe("v", bad) is None and h.observe("v", bad) is None
    trigger, evidence = h.observe("v", bad)
    assert trigger == "invalid_output" and evidence["invalid_outputs"] == 3
    assert evidence["statuses"] == {"invalid_output": 3}
    assert evidence["top_errors"] == [["not the schema", 3]]


def test_latency_trigger_uses_the_quantile_and_per_version_objectives():
    h = quiet(latency_ms=100, latency_min_samples=20, latency_overrides={"slow": 500})
    for ms in [50] * 19 + [400]:
        assert h.observe("fast", Outcome.of("ok", ms)) is None  # p95 of these: 67.5 ms
    trigger, evidence = h.observe("fast", Outcome.of("ok", 400))  # p95 now 400 ms
    assert trigger == "latency_slo" and evidence["latency_objective_ms"] == 100
    assert evidence["latency_ms"] == 400 and evidence["latency_samples"] == 21
    assert all(h.observe("slow", Outcome.of("ok", 400)) is None for _ in range(30))
    assert all(h.observe("failing", Outcome.of("error", 9999)) is None for _ in range(30))


def test_accuracy_regression_against_stable_with_confidence():
    h = quiet(accuracy_min_samples=10, accuracy_max_drop=0.2)
    right = Outcome.of("ok", 1, label="bug_fix", predicted="bug_fix")
    wrong = Outcome.of("ok", 1, label="bug_fix", predicted="docs")
    for _ in range(9):
        assert h.observe("cand", wrong, stable="st") is None  # too few labels yet
    assert h.observe("cand", wrong, stable="st") is None  # no stable numbers yet
    for _ in range(10):
        assert h.observe("st", right, stable="st") is None  # stable is never compared
    trigger, evidence = h.observe("cand", wrong, stable="st")
    assert trigger == "accuracy_regression"
    assert evidence["accuracy"] == 0 and evidence["stable_accuracy"] == 1
    assert evidence["accuracy_interval"][1] < 0.8 and evidence["stable_version"] == "st"


def test_a_candidate_as_good_as_stable_is_never_quarantined_for_accuracy():
    h = quiet(accuracy_min_samples=10)
    for i in range(200):
        ok = i % 4 != 0  # 75 % right for both
        o = Outcome.of("ok", 1, label="a", predicted="a" if ok else "b")
        assert h.observe("st", o, stable="st") is None
        assert h.observe("cand", o, stable="st") is None


def test_triggers_can_be_switched_off():
    h = HealthTracker(consecutive_failures=2, triggers=["error_rate"], min_samples=50)
    assert all(h.observe("v", False) is None for _ in range(10))
    with pytest.raises(ValueError):
        HealthTracker(triggers=["nope"])


@pytest.mark.parametrize("trigger", TRIGGERS)
def test_root_cause_is_one_line_with_the_numbers(trigger):
    evidence = {"consecutive_failures": 5, "window_errors": 12, "window_size": 20,
                "error_rate": 0.6, "max_error_rate": 0.5, "invalid_outputs": 3,
                "latency_quantile": 0.95, "latency_ms": 812.4, "latency_objective_ms": 500,
                "latency_samples": 40, "accuracy": 0.1, "labelled": 30, "stable_accuracy": 0.9,
                "stable_version": "v1", "accuracy_max_drop": 0.2, "crashes": 3,
                "window_s": 600, "exhausted": ["error_rate"],
                "top_errors": [["BackendError: boom\nsecond line", 4]]}
    text = root_cause(trigger, evidence)
    assert text.startswith(f"{trigger}: ") and "\n" not in text and len(text) <= 300
    numbers = {"consecutive_failures": "5", "error_rate": "60%", "invalid_output": "3",
               "latency_slo": "812 ms", "accuracy_regression": "10%", "crash_loop": "3 times",
               "error_budget": "error_rate"}
    assert numbers[trigger] in text


def test_tracker_from_config():
    q = QuarantineConfig(consecutive_failures=4, invalid_outputs=2, accuracy_max_drop=0.1,
                         triggers=("error_rate", "latency_slo"))
    slo = SloConfig(latency_ms=250, per_version={"x": {"latency_ms": 900}})
    h = tracker_from_config(q, slo)
    assert (h.consecutive_failures, h.invalid_outputs, h.accuracy_max_drop) == (4, 2, 0.1)
    assert h.latency_objective("any") == 250 and h.latency_objective("x") == 900
    assert h.triggers == {"error_rate", "latency_slo"}


# ---- crash loops ------------------------------------------------------------------------------


def death(at: float, **inflight) -> dict:
    return {"at": at, "inflight": inflight}


def test_crash_loops_count_only_deaths_a_version_had_alone():
    now = 10_000.0
    history = [death(now - 50, a=["r1"], b=["r2"]),  # both in flight: nobody's fault yet
               death(now - 40, a=["r1"]), death(now - 30, a=["r3"]), death(now - 9999, a=["r9"])]
    looping, poison = crash_verdicts(history, now, restarts=2, window_s=600)
    assert set(looping) == {"a"} and looping["a"]["crashes"] == 2
    assert looping["a"]["deaths_in_window"] == 3 and looping["a"]["last_requests"] == ["r3"]
    assert poison == {"a": {"r1"}}  # in flight at two deaths
    looping, _ = crash_verdicts(history, now, restarts=3, window_s=600)
    assert looping == {}
    assert suspects_of(history) == {"a"} and suspects_of([]) == set()


def test_collect_deaths_turns_dead_workers_markers_into_history(tmp_path):
    inflight, history_file = tmp_path / "inflight", tmp_path / "crashes.json"
    inflight.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    now = time.time()
    for i, (pid, version, reqs) in enumerate([(dead.pid, "a", ["r1"]), (dead.pid, "b", ["r2"]),
                                              (os.getpid(), "c", ["r3"])]):
        (inflight / f"{pid}-{i}.json").write_text(json.dumps(
            {"pid": pid, "version": version, "at": now, "requests": reqs}))
    (inflight / "junk.json").write_text("{not json")
    history_file.write_text(json.dumps([death(now - 10, a=["r0"]), death(now - 99_999, z=[])]))
    history, new = collect_deaths(inflight, history_file, keep_s=3600)
    assert [e["inflight"] for e in new] == [{"a": ["r1"], "b": ["r2"]}]
    assert [h["inflight"] for h in history] == [{"a": ["r0"]}, {"a": ["r1"], "b": ["r2"]}]
    assert json.loads(history_file.read_text()) == history
    assert sorted(p.name for p in inflight.iterdir()) == [f"{os.getpid()}-2.json"]  # ours stays
    assert collect_deaths(inflight, history_file, keep_s=3600)[1] == []  # nothing twice


def test_collect_deaths_keeps_a_live_workers_idle_slots_and_drops_a_dead_ones(tmp_path):
    inflight, history_file = tmp_path / "inflight", tmp_path / "crashes.json"
    inflight.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        for pid in (dead.pid, live.pid):
            (inflight / f"{pid}-0.json").write_text("")  # idle slots
        (inflight / f"{live.pid}-1.json").write_text(json.dumps(
            {"pid": live.pid, "version": "a", "at": time.time(), "requests": ["r1"]}))
        _, new = collect_deaths(inflight, history_file, keep_s=3600)
        assert new == []
        assert sorted(p.name for p in inflight.iterdir()) == [f"{live.pid}-0.json",
                                                              f"{live.pid}-1.json"]
    finally:
        live.kill()
        live.wait()


def test_crash_guard_markers_and_suspects_run_alone(tmp_path):
    guard = CrashGuard(tmp_path / "inflight")
    guard.suspects = {"s"}
    log: list[str] = []

    async def batch(version: str, hold: float) -> None:
        async with guard.slot(version, [f"{version}-req"]):
            markers = [json.loads(text) for p in guard.directory.glob("*.json")
                       if (text := p.read_text())]  # an empty file is an idle slot
            log.append(f"start {version} {sorted(m['version'] for m in markers)}")
            await asyncio.sleep(hold)
            log.append(f"end {version}")

    async def main() -> None:
        await asyncio.gather(batch("a", 0.05), batch("s", 0.05), batch("b", 0.05))

    asyncio.run(main())
    # The suspect ran with no other batch in flight; the others may overlap each other.
    s_start = log.index("start s ['s']")
    assert log[s_start + 1] == "end s"
    # Nothing in flight: every slot's file is empty, and reused (at most 3 ran at once).
    files = list(guard.directory.iterdir())
    assert 1 <= len(files) <= 3 and all(p.read_text() == "" for p in files)
    assert guard.suspects == set()  # it ran a batch and the worker lives
    guard.poison = {"v": {"r1"}}
    assert guard.is_poison("v", "r1") and not guard.is_poison("v", "r2")
    assert not guard.is_poison("w", "r1")


# ---- leaving quarantine -------------------------------------------------------------------------


def rows(*statuses, latency=10.0, label=None, predicted=None):
    return [{"status": s, "latency_ms": latency, "label": label, "predicted_label": predicted}
            for s in statuses]


def test_retest_verdict():
    assert retest_verdict(rows("ok", "ok"), 2, min_success_rate=1.0)["passed"]
    v = retest_verdict(rows("ok"), 2, min_success_rate=0.5)
    assert not v["passed"] and "got no answer" in v["reason"]
    v = retest_verdict(rows("ok", "error"), 2, min_success_rate=0.9)
    assert not v["passed"] and "1 of 2 ok" in v["reason"] and v["statuses"] == {"error": 1,
                                                                                "ok": 1}
    v = retest_verdict(rows("ok", "ok", latency=900), 2, min_success_rate=1, latency_ms=100)
    assert not v["passed"] and "median latency 900 ms" in v["reason"]
    worse = rows("ok", "ok", label="feature", predicted="docs")
    v = retest_verdict(worse, 2, min_success_rate=1, stable_accuracy=1.0)
    assert not v["passed"] and v["accuracy"] == 0 and "accuracy" in v["reason"]
    assert retest_verdict(worse, 2, min_success_rate=1, stable_accuracy=0.1)["passed"]
    assert not retest_verdict([], 0, min_success_rate=0)["passed"]  # nothing replayed


def test_retest_backoff_doubles_and_caps():
    assert [retest_backoff(n, 10, 70) for n in range(5)] == [10, 20, 40, 70, 70]


def test_markers_of_an_earlier_process_with_our_pid_are_its_deaths_not_ours(tmp_path):
    """A container restarted by its runtime runs the worker as pid 1 again: the marker the
    dead process left has our pid, and must still count as a death (not be reopened and
    truncated as one of our own slots)."""
    inflight, history_file = tmp_path / "inflight", tmp_path / "crashes.json"
    inflight.mkdir()
    earlier = inflight / f"{os.getpid()}-1000-0.json"
    earlier.write_text(json.dumps({"pid": os.getpid(), "version": "a", "at": time.time(),
                                   "requests": ["r1"]}))
    guard = CrashGuard(inflight)
    ours = inflight / f"{guard.prefix}0.json"
    ours.write_text("")  # one of our idle slots
    _, new = collect_deaths(inflight, history_file, keep_s=3600, mine=guard.prefix)
    assert [e["inflight"] for e in new] == [{"a": ["r1"]}]
    assert sorted(p.name for p in inflight.iterdir()) == [ours.name]


def test_a_slot_file_removed_while_open_is_written_again(tmp_path):
    guard = CrashGuard(tmp_path / "inflight")

    async def run_batch(version: str) -> list:
        async with guard.slot(version, [f"{version}-req"]):
            return [json.loads(p.read_text()) for p in guard.directory.glob("*.json")]

    assert [m["version"] for m in asyncio.run(run_batch("a"))] == ["a"]
    for p in guard.directory.glob("*.json"):
        p.unlink()  # someone cleans the directory while the worker runs
    assert [m["version"] for m in asyncio.run(run_batch("b"))] == ["b"]
