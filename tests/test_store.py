"""The ClickHouse store against a real chDB in tmp_path (no broker, no server)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from pydantic import SecretStr

from agents.errors import StoreError
from agents.settings import Settings
from infra.rows import rows_for
from infra.store import (
    MIGRATIONS_DIR,
    AsyncStore,
    RemoteStore,
    Store,
    handle_insert_request,
    handle_query_request,
    one_statement,
    open_store,
    redact_dsn,
    split_statements,
)
from schemas import (
    AcceptedChange,
    ChangeType,
    Dimension,
    Feedback,
    Finding,
    InferenceResult,
    LifecycleAction,
    LifecycleEvent,
    NormalizedChange,
    Risk,
    Role,
    Severity,
    Status,
    Usage,
    VersionState,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
TABLES = {"interactions", "findings", "shadow_comparisons", "failures", "lifecycle", "feedback",
          "events_archive", "dead_letters", "schema_migrations"}
T0 = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def finding(fp: str, severity: Severity, line: int = 1) -> Finding:
    return Finding(fingerprint=fp, dimension=Dimension.correctness, severity=severity,
                   confidence=0.7, path="src/a.py", line=line, rule_id=f"R-{fp}",
                   message="m", source="fake")


def result(**overrides) -> InferenceResult:
    fields = {
        "request_id": "req-1", "task": "code-review", "version_id": "v2", "role": Role.shadow,
        "status": Status.ok, "latency_ms": 41.5, "label": "feature", "occurred_at": T0,
        "change_type": ChangeType(label="feature", confidence=0.9),
        "risk": Risk(score=0.4, level="medium"),
        "findings": [finding("a", Severity.high), finding("b", Severity.high, 2),
                     finding("c", Severity.info)],
        "usage": Usage(prompt_tokens=100, completion_tokens=20, cost_usd=0.001),
        "repo": "org/repo", "sha": "abc123", "pull_request": 7,
    }
    fields.update(overrides)
    return InferenceResult(**fields)


def count(store: Store, sql: str) -> int:
    return store.query(sql).rows[0][0]


class _WorkerHandler(BaseHTTPRequestHandler):
    """The lead wires these handlers into the worker's web server; this is the tiny stand-in."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        handler = {"/store/query": handle_query_request,
                   "/store/insert": handle_insert_request}[self.path]
        data = json.dumps(handler(self.server.store, body)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def worker(store):
    """A single-threaded HTTP server answering for `store`; yields its URL."""
    server = HTTPServer(("127.0.0.1", 0), _WorkerHandler)
    server.store = store
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# ---- migrations ---------------------------------------------------------------------------


def test_migrations_apply_once_and_create_every_table(store):
    assert store.migrate() == []  # the fixture applied them already
    files = sorted(p.stem for p in MIGRATIONS_DIR.glob("*.sql"))
    applied = store.query("SELECT name FROM schema_migrations FINAL ORDER BY version").rows
    assert [r[0] for r in applied] == files
    tables = {r[0] for r in store.query("SHOW TABLES").rows}
    assert tables >= TABLES


def test_split_statements_and_single_statement_guard():
    text = "-- head\nCREATE TABLE a (x String DEFAULT ';');\n\nCREATE TABLE b (y UInt8);\n-- end\n"
    assert split_statements(text) == ["-- head\nCREATE TABLE a (x String DEFAULT ';')",
                                      "CREATE TABLE b (y UInt8)"]
    assert one_statement("SELECT ';' -- ;\n;  ", read_only=True) == "SELECT ';'"
    with pytest.raises(StoreError, match="one SQL statement"):
        one_statement("SELECT 1; SELECT 2", read_only=False)
    with pytest.raises(StoreError, match="drop 'FORMAT PrettyCompact'.*--format table"):
        one_statement("SELECT 1 format PrettyCompact;", read_only=True)
    # a column called `format` is not an output format
    assert one_statement("SELECT 1 AS format ORDER BY format DESC", read_only=True).endswith("DESC")
    assert one_statement("SELECT formatDateTime(now(), '%Y')", read_only=True).startswith("SELECT")


# ---- rows -----------------------------------------------------------------------------------


def test_rows_for_counts_findings_by_severity():
    rows = rows_for(result())
    tables = [t for t, _ in rows]
    assert tables == ["interactions", "findings", "findings", "findings"]
    row = rows[0][1]
    assert (row["findings_total"], row["findings_high"], row["findings_info"]) == (3, 2, 1)
    assert row["findings_critical"] == row["findings_medium"] == row["findings_low"] == 0
    assert row["run_id"] == "" and row["role"] == "shadow"
    assert row["predicted_label"] == "feature" and row["risk_level"] == "medium"
    assert row["occurred_at"].tzinfo is not None
    assert all(r["event_id"] == row["event_id"] for t, r in rows)


def test_rows_for_archive_keeps_full_json():
    change = NormalizedChange(repo="org/repo", sha="abc123", message="add x", diff="+x")
    accepted = AcceptedChange(request_id="req-1", task="code-review", source_topic="commits",
                              kind="commit", label="feature", change=change, raw='{"a": 1}')
    [(table, row)] = rows_for(accepted)
    assert table == "events_archive"
    assert AcceptedChange.model_validate_json(row["accepted"]) == accepted


def test_lifecycle_keeps_json_and_microseconds(store):
    event = LifecycleEvent(task="code-review", version_id="v2", action=LifecycleAction.register,
                           to_state=VersionState.shadow, actor="config",
                           evidence={"n": [1, 2], "at": T0}, spec={"id": "v2"})
    store.insert_events([event])
    [row] = store.query("SELECT evidence, spec, occurred_at FROM lifecycle FINAL").as_dicts()
    assert json.loads(row["evidence"]) == {"n": [1, 2], "at": "2025-01-02T03:04:05.678000Z"}
    assert json.loads(row["spec"]) == {"id": "v2"}
    assert datetime.fromisoformat(row["occurred_at"]) == event.occurred_at


# ---- idempotent writes ----------------------------------------------------------------------


def test_redelivered_result_is_stored_once_even_after_restart(tmp_path):
    dsn = f"chdb://{tmp_path / 'ch'}"
    first = Store.connect(dsn)
    first.migrate()
    event = result()
    assert first.insert_events([event, event]) == 4  # 1 interaction + 3 findings
    assert first.insert_events([event]) == 0  # remembered in this process
    first.close()

    second = Store.connect(dsn)  # a restart: the in-process memory of ids is gone
    try:
        assert second.insert_events([event]) == 4
        assert count(second, "SELECT count() FROM interactions FINAL") == 1
        assert count(second, "SELECT count() FROM findings FINAL") == 3
        # A re-run after a crash: new event id and time, same request/version/role/run.
        rerun = result(occurred_at=T0 + timedelta(seconds=5), latency_ms=99.0,
                       findings=[finding("a", Severity.high)])
        second.insert_events([rerun])
        rows = second.query("SELECT event_id, latency_ms FROM interactions FINAL").rows
        assert rows == [[rerun.event_id, 99.0]]  # the latest attempt wins
        # A replay run is another row.
        second.insert_events([result(role=Role.replay, run_id="run-1")])
        assert count(second, "SELECT count() FROM interactions FINAL") == 2
        won = second.query(
            "SELECT count() FROM findings FINAL WHERE event_id IN "
            "(SELECT event_id FROM interactions FINAL WHERE role = {role:String})",
            {"role": "shadow"})
        assert won.rows == [[1]]
        stamped = second.query("SELECT occurred_at FROM interactions FINAL WHERE run_id = ''")
        assert stamped.rows == [[(T0 + timedelta(seconds=5)).isoformat()]]
    finally:
        second.close()


# ---- reads ----------------------------------------------------------------------------------


def test_readonly_query_refuses_writes(store):
    for sql in ["INSERT INTO failures (event_id) VALUES ('x')", "DROP TABLE interactions",
                "SELECT 1; DROP TABLE interactions", "SELECT 1 INTO OUTFILE 'x.csv'"]:
        with pytest.raises(StoreError):
            store.query(sql)
    # Enforced by ClickHouse itself, not only by the statement check: a SELECT that reads a
    # file through a table function is refused by readonly=1.
    with pytest.raises(StoreError, match="READONLY"):
        store.query("SELECT * FROM file('/etc/hostname', 'LineAsString')")
    with pytest.raises(StoreError, match="READONLY"):
        store.query("SELECT 1 SETTINGS readonly = 0")
    assert count(store, "SELECT count() FROM system.tables WHERE name = 'interactions'") == 1
    assert count(store, "SELECT count() FROM failures") == 0
    # Writes are allowed when asked for.
    store.query("INSERT INTO feedback (event_id, fingerprint) VALUES ('e', 'f')", readonly=False)
    assert count(store, "SELECT count() FROM feedback") == 1


def test_bad_sql_raises_store_error_with_clickhouse_message(store):
    with pytest.raises(StoreError, match="Syntax error"):
        store.query("SELEC 1")
    with pytest.raises(StoreError, match="UNKNOWN_TABLE"):
        store.query("SELECT * FROM no_such_table")
    assert store.query("SELECT 1 AS one").as_dicts() == [{"one": 1}]  # connection still fine


def test_remote_store_answers_like_the_store(store, worker):
    store.insert_events([result(), result(request_id="req-2")])
    sql = "SELECT request_id, latency_ms, occurred_at FROM interactions FINAL ORDER BY request_id"
    remote = RemoteStore(worker)
    assert remote.query(sql).rows == store.query(sql).rows
    with pytest.raises(StoreError, match="Syntax error"):
        remote.query("SELEC 1")
    with pytest.raises(StoreError, match="read-only"):
        remote.query("DROP TABLE interactions", readonly=False)
    assert remote.insert_events([result(request_id="req-3")]) == 4
    assert count(store, "SELECT count() FROM interactions FINAL") == 3


def test_async_store_runs_on_one_thread(store):
    async def main():
        astore = AsyncStore(store)
        await astore.insert_events([result()])
        names = await asyncio.gather(*(astore.call(lambda s: threading.current_thread().name)
                                       for _ in range(5)))
        rows = (await astore.query("SELECT count() FROM interactions FINAL")).rows
        astore._executor.shutdown()  # leave `store` open for the fixture
        return set(names), rows

    names, rows = asyncio.run(main())
    assert len(names) == 1 and next(iter(names)).startswith("reviewbus-store")
    assert rows == [[1]]


# ---- one owner per embedded directory -------------------------------------------------------

SECOND_PROCESS = """
import sys
from agents.errors import StoreBusy
from agents.settings import Settings
from infra.store import open_store
try:
    s = open_store(Settings(home=sys.argv[1]))
    print(type(s).__name__, s.query("SELECT count() FROM interactions FINAL").rows)
except StoreBusy as exc:
    print("StoreBusy", exc)
"""


def _second_process(home: Path) -> str:
    done = subprocess.run([sys.executable, "-c", SECOND_PROCESS, str(home)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_second_process_gets_remote_store_or_store_busy(tmp_path):
    home = tmp_path / "home"
    owner = open_store(Settings(home=home))
    assert isinstance(owner, Store)
    try:
        owner.insert_events([result()])
        out = _second_process(home)
        assert out.startswith("StoreBusy") and "worker.json" in out and "\n" not in out

        server = HTTPServer(("127.0.0.1", 0), _WorkerHandler)
        server.store = owner
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            web_url = f"http://127.0.0.1:{server.server_address[1]}"
            (home / "worker.json").write_text(json.dumps({"web_url": web_url}))
            assert _second_process(home) == "RemoteStore [[1]]"
        finally:
            server.shutdown()
            server.server_close()
        # worker.json names a worker that no longer answers
        out = _second_process(home)
        assert out.startswith("StoreBusy") and "does not answer" in out
    finally:
        owner.close()
    # Released on close: the next opener owns it again.
    again = open_store(Settings(home=home))
    try:
        assert isinstance(again, Store)
    finally:
        again.close()


# ---- secrets --------------------------------------------------------------------------------

PLANTED = "planted-Secret-9f3k"


def test_password_never_shown_in_repr_or_errors():
    with pytest.raises(StoreError) as caught:
        Store.connect("http://default@127.0.0.1:1", password=SecretStr(PLANTED))
    with pytest.raises(StoreError) as inline:
        Store.connect(f"http://default:{PLANTED}@127.0.0.1:1")
    for exc in (caught.value, inline.value):
        assert PLANTED not in str(exc) and PLANTED not in repr(exc)
        assert PLANTED not in str(exc.__cause__)
    assert redact_dsn(f"http://u:{PLANTED}@h:8123/db") == "http://u:***@h:8123/db"

    class Leaky:  # a client whose error text quotes the password
        def query(self, *args, **kwargs):
            raise RuntimeError(f"auth failed for password {PLANTED}")

    store = Store(Leaky(), Leaky(), display=redact_dsn(f"http://u:{PLANTED}@h:8123"),
                  secret=SecretStr(PLANTED))
    assert PLANTED not in repr(store) and PLANTED not in str(store)
    with pytest.raises(StoreError) as leaked:
        store.query("SELECT 1")
    assert PLANTED not in str(leaked.value) and "***" in str(leaked.value)


def test_event_rows_leave_out_the_events_asked_and_keep_the_rest_aligned():
    import json

    from infra.event_rows import EventRows

    a, b = result(request_id="a"), result(request_id="b", findings=[])
    c = Feedback(fingerprint="f1", verdict="false_positive", actor="me")
    d = Feedback(fingerprint="f2", verdict="false_positive", actor="me")
    rows = EventRows()
    rows.add(a, b"A")
    rows.add(c, b"C")
    rows.add(b, b"B")
    rows.add(d)  # no source: a store in another process cannot be sent these
    assert rows.sources is None and len(rows) == 4
    # results as JSON for ClickHouse to map (migration 015), the rest as columns
    assert [json.loads(line)["request_id"] for line in rows.results] == ["a", "b"]
    assert rows.result_owners == [0, 2] and rows.result_rows == [4, 1]
    assert rows.owners == {"feedback": [1, 3]}
    left = rows.without({0, 3})
    assert left.keys == [("Feedback", c.event_id), ("InferenceResult", b.event_id)]
    assert [json.loads(line)["request_id"] for line in left.results] == ["b"]
    assert left.result_owners == [1] and left.result_rows == [1]  # numbered again
    assert left.tables["feedback"]["fingerprint"] == ["f1"]
    assert [t for t, _, _ in left.columns()] == ["feedback"]
    assert [t for t, _, _ in rows.without({1, 3}).columns()] == []
    kept = EventRows()
    kept.add(a, b"A")
    kept.add(c, b"C")
    assert kept.without({0}).sources == [("Feedback", b"C")]
    # what is left is numbered again, so it can be narrowed again
    twice = rows.without({0}).without({0})  # less a, then less c
    assert twice.keys == [("InferenceResult", b.event_id), ("Feedback", d.event_id)]
    assert twice.result_owners == [0] and twice.owners == {"feedback": [1]}
    assert twice.tables["feedback"]["fingerprint"] == ["f2"]


def test_results_beyond_what_clickhouse_maps_exactly_take_the_python_rows():
    from infra.event_rows import EventRows, ingestible

    assert ingestible(result())
    assert not ingestible(result(attempt=2**63))
    assert ingestible(result(attempt=2**63 - 1)) and ingestible(result(attempt=-(2**63)))
    assert not ingestible(result(attempt=-(2**63) - 1))
    assert not ingestible(result(latency_ms=float("inf")))
    assert not ingestible(result(usage=Usage(cost_usd=float("nan"))))
    assert not ingestible(result(findings=[finding("x", Severity.low, 2**70)]))
    assert not ingestible(result(pull_request=2**64))
    rows = EventRows()
    rows.add(result(attempt=2**70))
    assert rows.results == [] and rows.tables["interactions"]["attempt"] == [2**32 - 1]
