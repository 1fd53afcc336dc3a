"""SLOs and error budgets (agents/slo.py): the arithmetic, and the SQL on a real chDB store."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from agents.slo import (
    SloConfig,
    budget_left,
    evaluate,
    reports,
    since_of,
)
from infra import queries
from infra.store import Store
from schemas import (
    ChangeType,
    InferenceResult,
    Registry,
    Role,
    Status,
    VersionEntry,
    VersionSpec,
    VersionState,
)


def test_budget_left():
    assert budget_left(0, 100, 0.05) == 1.0
    assert budget_left(1, 100, 0.05) == pytest.approx(0.8)
    assert budget_left(5, 100, 0.05) == pytest.approx(0.0)
    assert budget_left(10, 100, 0.05) == pytest.approx(-1.0)
    assert budget_left(0, 100, 0.0) == 1.0 and budget_left(1, 100, 0.0) == -math.inf


def test_evaluate_judges_three_objectives_once_there_is_enough_data():
    cfg = SloConfig(availability=0.9, max_error_rate=0.1, latency_target=0.5, min_samples=10)
    row = {"n": 20, "ok": 16, "unavailable": 1, "errors": 4, "slow": 10, "p50_ms": 5,
           "p95_ms": 50}
    r = evaluate("v", row, cfg.objectives("v"), cfg.min_samples)
    assert r["availability"] == 0.95 and r["availability_budget_left"] == 0.5
    assert r["error_rate"] == 0.2 and r["error_budget_left"] == -1.0
    assert r["latency_ok_share"] == pytest.approx(0.375) and r["latency_budget_left"] == -0.25
    assert r["status"] == "exhausted" and r["exhausted"] == ["error_rate", "latency"]
    few = evaluate("v", {**row, "n": 9}, cfg.objectives("v"), cfg.min_samples)
    assert few["status"] == "insufficient_data" and few["exhausted"] == []
    empty = evaluate("v", {}, cfg.objectives("v"), cfg.min_samples)
    assert empty["n"] == 0 and empty["availability"] is None and empty["p95_ms"] is None


def test_per_version_objectives():
    cfg = SloConfig(latency_ms=100, per_version={"slow": {"latency_ms": 900,
                                                          "max_error_rate": 0.5}})
    assert cfg.objectives("slow").latency_ms == 900 and cfg.objectives("slow").max_error_rate == 0.5
    assert cfg.objectives("slow").availability == cfg.availability
    assert cfg.objectives("other").latency_ms == 100


def result(version: str, i: int, status: Status, latency: float, error: str | None = None,
           run_id: str | None = None, ago_s: float = 0) -> InferenceResult:
    return InferenceResult(
        request_id=f"{version}-{i}", task="code-review", version_id=version, role=Role.shadow,
        run_id=run_id, status=status, latency_ms=latency, error=error,
        change_type=ChangeType(label="x", confidence=1) if status == Status.ok else None,
        occurred_at=datetime.now(UTC) - timedelta(seconds=ago_s))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = Store.connect(f"chdb://{tmp_path_factory.mktemp('slo') / 'ch'}")
    s.migrate()
    events = (
        [result("good", i, Status.ok, 10) for i in range(30)]
        + [result("bad", i, Status.ok, 10) for i in range(20)]
        + [result("bad", 20 + i, Status.error, 0, "circuit open: version is failing")
           for i in range(3)]
        + [result("bad", 30 + i, Status.timeout, 5000) for i in range(2)]
        + [result("bad", 40 + i, Status.invalid_output, 3) for i in range(5)]
        + [result("slow", i, Status.ok, 300 if i % 2 else 20) for i in range(20)]
        + [result("good", 100 + i, Status.error, 1, run_id="retest-x") for i in range(50)]
        + [result("old", i, Status.error, 1, ago_s=7200) for i in range(30)]
        + [result("old", 100 + i, Status.ok, 1) for i in range(10)]
    )
    s.insert_events(events)
    yield s
    s.close()


def test_slo_sql_on_chdb(store):
    cfg = SloConfig(window_s=3600, min_samples=10, latency_ms=100,
                    per_version={"slow": {"latency_ms": 250}})
    versions = ["bad", "good", "old", "slow", "silent"]
    rows = store.query(query_for("code-review", cfg, versions)).as_dicts()
    got = {r["version_id"]: r for r in reports(rows, versions, cfg)}
    good = got["good"]  # replays (run_id) are not live traffic
    assert (good["n"], good["status"], good["error_budget_left"]) == (30, "ok", 1.0)
    bad = got["bad"]
    assert bad["n"] == 30 and bad["status"] == "exhausted"
    assert bad["availability"] == pytest.approx(25 / 30, abs=1e-4)  # timeouts + open circuit
    assert bad["error_rate"] == pytest.approx(10 / 30, abs=1e-4)
    assert set(bad["exhausted"]) == {"availability", "error_rate"}
    slow = got["slow"]  # 10 of 20 over its own 250 ms objective
    assert slow["latency_ok_share"] == 0.5 and "latency" in slow["exhausted"]
    assert got["old"]["n"] == 10 and got["old"]["status"] == "ok"  # outside the window
    assert got["silent"]["status"] == "insufficient_data" and got["silent"]["n"] == 0


def test_a_version_s_period_starts_when_it_entered_its_state(store):
    cfg = SloConfig(window_s=3 * 3600, min_samples=5)
    since = {"old": (datetime.now(UTC) - timedelta(seconds=3600)).timestamp()}
    rows = store.query(query_for("code-review", cfg, ["old"])).as_dicts()
    assert rows[0]["n"] == 40  # the whole window: its errors two hours ago count
    rows = store.query(query_for("code-review", cfg, ["old"], since)).as_dicts()
    assert rows[0]["n"] == 10 and rows[0]["errors"] == 0  # restored since: a fresh budget


def query_for(task, cfg, versions, since=None):
    """The SLO query as literal SQL (its bound form runs in test_timer_queries.py)."""
    return queries.slo(task, cfg, versions, 24 * 3600, since).text()


def test_since_of_serving_versions_only():
    when = datetime(2030, 1, 1, tzinfo=UTC)

    def entry(state):
        return VersionEntry(spec=VersionSpec(id="v", backend="fake"), state=state, since=when)

    registry = Registry(task="code-review", versions={
        "a": entry(VersionState.shadow), "b": entry(VersionState.quarantined),
        "c": entry(VersionState.stable)})
    assert since_of(registry) == {"a": when.timestamp(), "c": when.timestamp()}
