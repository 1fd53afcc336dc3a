"""The leader's timer queries (infra/queries.py) read a bounded window through the sort key.

Each query runs under `EXPLAIN indexes = 1` on a real chDB store that holds weeks of rows of
several tasks and versions; every table it reads must be pruned by its primary key (fewer
granules or parts selected than the table has). And migration 013, which put time into those
keys, carries the rows of the old layout over and keeps a re-run replacing the first row.
"""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime, timedelta

import pytest

from agents.rotation import Window
from agents.slo import SloConfig
from infra import queries, queries_cli
from infra.rows import rows_for
from infra.store import MIGRATIONS_DIR, Store
from schemas import ChangeType, InferenceResult, Role, Status

TASK = "code-review"
DAY_MS = 24 * 3600 * 1000
LAG_S = 24 * 3600.0
HISTORY_DAYS = 40


def fill(store: Store, rows: int = 120_000) -> None:
    """Rows of two tasks and three versions, spread evenly over HISTORY_DAYS up to now, in
    several inserts (parts) as the sink writes them; bulk SQL, so it takes a second."""
    spread = HISTORY_DAYS * DAY_MS
    when = f"now64(3) - toIntervalMillisecond(intDiv(number * {spread}, {rows}))"
    for part in range(4):
        lo, n = part * rows // 4, rows // 4
        numbers = f"numbers({lo}, {n})"
        store.command(
            "INSERT INTO interactions (event_id, request_id, task, version_id, role, run_id, "
            "status, attempt, latency_ms, label, predicted_label, findings_total, "
            "findings_critical, findings_high, findings_medium, findings_low, findings_info, "
            "prompt_tokens, completion_tokens, cost_usd, repo, sha, occurred_at, accepted_at) "
            "SELECT concat('e', toString(number)), concat('r', toString(intDiv(number, 3))), "
            f"if(number % 7 = 0, 'other-task', '{TASK}'), "
            "['stable', 'cand', 'old'][number % 3 + 1], "
            "if(number % 3 = 0, 'primary', 'shadow'), '', "
            "if(number % 11 = 0, 'error', 'ok'), 1, 10 + number % 50, 'feat', "
            "if(number % 4 = 0, 'fix', 'feat'), 0, 0, 0, 0, 0, 0, 0, 0, 0.0, 'o/r', 's', "
            f"{when}, {when} FROM {numbers}")
        store.command(
            "INSERT INTO findings (event_id, request_id, task, version_id, role, run_id, "
            "fingerprint, rule_id, dimension, severity, confidence, path, line, message, source, "
            "occurred_at, accepted_at) "
            "SELECT concat('e', toString(number)), concat('r', toString(intDiv(number, 3))), "
            f"'{TASK}', ['stable', 'cand', 'old'][number % 3 + 1], 'shadow', '', "
            "concat('fp', toString(number % 500)), concat('R', toString(number % 20)), "
            "'correctness', 'high', 0.9, 'a.py', 1, 'm', 'fake', "
            f"{when}, {when} FROM {numbers}")
        store.command(
            "INSERT INTO shadow_comparisons (event_id, request_id, task, stable_version, "
            "candidate_version, stable_status, candidate_status, change_type_agree, "
            "stable_findings, candidate_findings, overlap, latency_delta_ms, occurred_at, "
            "accepted_at) "
            "SELECT concat('c', toString(number)), concat('r', toString(number)), "
            f"'{TASK}', 'stable', ['cand', 'old'][number % 2 + 1], 'ok', 'ok', number % 5 != 0, "
            f"0, 0, 0, 1.0, {when}, {when} FROM {numbers}")
        store.command(
            "INSERT INTO events_archive (request_id, event_id, task, repo, sha, kind, "
            "source_topic, accepted, occurred_at) "
            f"SELECT concat('r', toString(number)), concat('a', toString(number)), '{TASK}', "
            "'o/r', 's', 'commit', 'commits', '{}', "
            f"{when} FROM {numbers}")
        store.command(
            "INSERT INTO feedback (event_id, fingerprint, verdict, version_id, actor, note, "
            "occurred_at) "
            "SELECT concat('f', toString(number)), concat('fp', toString(number % 500)), "
            "if(number % 3 = 0, 'true_positive', 'false_positive'), '', 'me', '', "
            f"now64(3) - toIntervalMillisecond(intDiv(number * {3 * 365 * DAY_MS}, {rows})) "
            f"FROM {numbers}")


# ---- migration 013 carries the old layout's rows over ------------------------------------------
# (first in the file: chDB hosts one data directory per process, and the module's store below
# keeps its own open until the module ends)

T0 = datetime(2025, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)


def result(**overrides) -> InferenceResult:
    fields = dict(request_id="req-1", task=TASK, version_id="v2", role=Role.shadow,
                  status=Status.ok, latency_ms=10.0, label="feat", occurred_at=T0,
                  change_type=ChangeType(label="feat", confidence=0.9), repo="o/r", sha="s")
    fields.update(overrides)
    return InferenceResult(**fields)


def insert_old_layout(store: Store, events: list) -> None:
    """Rows as the code before 013 wrote them: no accepted_at column."""
    by_table: dict[str, list[dict]] = {}
    for event in events:
        for table, row in rows_for(event):
            row = {k: v for k, v in row.items() if k != "accepted_at"}
            by_table.setdefault(table, []).append(row)
    for table, rows in by_table.items():
        columns = list(rows[0])
        store._writer.insert(table, [[r[c] for c in columns] for r in rows], column_names=columns)


def test_migration_013_carries_rows_over_and_keeps_replacing(tmp_path):
    old_dir = tmp_path / "migrations"
    old_dir.mkdir()
    for path in MIGRATIONS_DIR.glob("*.sql"):
        if int(path.name.split("_")[0]) < 13:
            shutil.copy(path, old_dir)
    store = Store.connect(f"chdb://{tmp_path / 'ch'}")
    try:
        store.migrate(old_dir)
        first = result(latency_ms=10.0)
        retry = result(latency_ms=20.0, occurred_at=T0 + timedelta(seconds=30))  # crash re-run
        other = result(request_id="req-2", version_id="v1", role=Role.primary)
        insert_old_layout(store, [first, other])
        insert_old_layout(store, [retry])  # a second part: not merged yet
        keys = ("SELECT sorting_key FROM system.tables WHERE database = currentDatabase() "
                "AND name = 'interactions'")
        assert "accepted_at" not in store.query(keys).rows[0][0]

        assert store.migrate() == ["013_time_in_sort_keys", "014_lifecycle_schema_version",
                                   "015_results_ingest"]
        assert "toStartOfHour(accepted_at)" in store.query(keys).rows[0][0]
        rows = store.query("SELECT request_id, latency_ms, occurred_at, accepted_at "
                           "FROM interactions FINAL ORDER BY request_id").rows
        later = (T0 + timedelta(seconds=30)).isoformat()
        assert rows == [["req-1", 20.0, later, later],  # the latest attempt won
                        ["req-2", 10.0, T0.isoformat(), T0.isoformat()]]
        assert store.query("SELECT count() FROM events_archive").rows == [[0]]

        # New writes: a re-run of an old request still replaces it (same hour), and a re-run
        # that carries the request's accepted time replaces it however late it comes.
        store.insert_events([result(latency_ms=30.0, occurred_at=T0 + timedelta(minutes=1))])
        accepted = T0 + timedelta(hours=5)
        store.insert_events([result(request_id="req-3", accepted_at=accepted,
                                    occurred_at=accepted + timedelta(seconds=1))])
        store.insert_events([result(request_id="req-3", accepted_at=accepted, latency_ms=40.0,
                                    occurred_at=accepted + timedelta(hours=3))])
        rows = store.query("SELECT request_id, latency_ms FROM interactions FINAL "
                           "ORDER BY request_id").rows
        assert rows == [["req-1", 30.0], ["req-2", 10.0], ["req-3", 40.0]]
        assert store.query("SELECT count() FROM findings FINAL").rows == [[0]]

        # Run again (a migration stopped half way runs again): the same rows.
        from infra.store import split_statements
        for statement in split_statements(
                (MIGRATIONS_DIR / "013_time_in_sort_keys.sql").read_text()):
            store.command(statement)
        again = store.query("SELECT request_id, latency_ms, accepted_at FROM interactions FINAL "
                            "ORDER BY request_id").rows
        assert [r[:2] for r in again] == rows
        assert again[2][2] == accepted.isoformat()
    finally:
        store.close()


# ---- the timer queries on weeks of rows -------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = Store.connect(f"chdb://{tmp_path_factory.mktemp('timers') / 'ch'}")
    s.migrate()
    fill(s)
    yield s
    s.close()


def timer_queries() -> dict[str, queries.Query]:
    """Every query a leader's timer runs, with the windows the defaults would give."""
    now = datetime.now(UTC)
    window = Window(now - timedelta(hours=25), now - timedelta(minutes=1))
    rotation = queries.measurement(TASK, "cand", "stable", window, LAG_S)
    started = now - timedelta(days=1)
    return {
        "rotation_candidate": rotation["candidate"],
        "rotation_agreement": rotation["agreement"],
        "rotation_stable": rotation["stable"],
        "slo_budget": queries.slo(TASK, SloConfig(), ["cand", "old"], LAG_S),
        "feedback_verdicts": queries.verdicts(TASK, 3 * 24 * 3600, 365 * 24 * 3600, LAG_S),
        "reconcile_unserved": queries.unserved(TASK, 120, 3600),
        "retest_sample": queries.archive_sample(TASK, 20, 7 * 24 * 3600),
        "retest_results": queries.retest_results(TASK, "old", "retest-old-1", started),
        "retest_stable_accuracy": queries.stable_accuracy(TASK, "stable", ["r1", "r2"], started),
    }


def test_every_timer_query_is_listed():
    assert set(timer_queries()) == set(queries.TIMERS)


READ = re.compile(r"ReadFromMergeTree \((?:\w+\.)?(\w+)\)")
COUNTS = re.compile(r"^(Parts|Granules): (\d+)/(\d+)$")
TREE = " \t│├└─┌"  # EXPLAIN draws the plan's tree with these


def primary_key_reads(explain: list[str]) -> list[dict]:
    """Per ReadFromMergeTree step: its table and the parts/granules its PrimaryKey index
    kept out of those it had."""
    reads: list[dict] = []
    section = None
    for line in explain:
        if m := READ.search(line):
            reads.append({"table": m.group(1)})
            section = None
            continue
        stripped = line.strip(TREE)
        if re.fullmatch(r"[A-Z]\w*", stripped):  # PrimaryKey, MinMax, Partition, Skip, ...
            section = stripped
            continue
        if reads and section == "PrimaryKey" and (m := COUNTS.match(stripped)):
            reads[-1][m.group(1).lower()] = (int(m.group(2)), int(m.group(3)))
    return reads


@pytest.mark.parametrize("name", queries.TIMERS)
def test_timer_query_is_pruned_by_the_primary_key(store, name):
    assert_pruned(store, name, timer_queries()[name])


def test_the_count_replay_wait_polls_is_pruned_and_counts_only_the_run(store):
    """`reviewbus replay --wait` counts the run's stored results every 0.05-0.2 s: on weeks
    of rows it reads the replayed range's hours of the version only (fewer granules than the
    same count bounded below alone, which reads a month of the version's rows up to now),
    and counts the run's rows only (not another run's, nor the same run id's of another
    version)."""
    accepted = datetime.now(UTC) - timedelta(days=30, minutes=5)
    for i, (run, version) in enumerate([("run-a", "old")] * 5 + [("run-b", "old"),
                                                                  ("run-a", "cand")]):
        store.insert_events([result(request_id=f"replayed-{i}", version_id=version,
                                    role=Role.replay, run_id=run,
                                    accepted_at=accepted + timedelta(seconds=i),
                                    occurred_at=datetime.now(UTC))])
    count = queries_cli.run_count(TASK, "old", "run-a", accepted, accepted + timedelta(seconds=4))
    assert store.query(count.sql, count.params).rows == [[5]]
    [bounded] = assert_pruned(store, "replay_wait_count", count)
    lower = count.sql.replace(
        "AND accepted_at <= toDateTime64({accepted_to:String}, 3, 'UTC') ", "")
    assert lower != count.sql
    [below] = assert_pruned(store, "bounded below only", queries.Query(lower, count.params))
    assert bounded["granules"][0] < below["granules"][0], (bounded, below)


def assert_pruned(store: Store, name: str, query: queries.Query) -> list[dict]:
    """The query runs, and every table it reads is pruned by its primary key; its reads."""
    store.query(query.sql, query.params)  # it runs
    explain = [row[0] for row in store.query("EXPLAIN indexes = 1 " + query.sql,
                                             query.params).rows]
    reads = primary_key_reads(explain)
    assert reads, "\n".join(explain)
    for read in reads:
        assert "granules" in read, f"{read['table']} used no primary key:\n" + "\n".join(explain)
        kept, total = read["granules"]
        kept_parts, total_parts = read["parts"]
        assert kept < total or kept_parts < total_parts, (
            f"{name}: {read['table']} reads {kept}/{total} granules of "
            f"{kept_parts}/{total_parts} parts:\n" + "\n".join(explain))
    return reads


def test_parser_reads_explain_output():
    text = """└──ReadFromMergeTree (default.interactions)
    Indexes:
      PrimaryKey
        Keys:
          task
        Parts: 2/4
        Granules: 3/40
      Skip
        Name: idx_time
        Parts: 1/2
        Granules: 1/3
      PrimaryKeyExpand
        Parts: 2/1
        Granules: 3/1""".splitlines()
    assert primary_key_reads(text) == [{"table": "interactions", "parts": (2, 4),
                                        "granules": (3, 40)}]
