"""One contract, every store implementation (infra.clickhouse.protocol.StoreProtocol):

- `chdb`:      Store on chDB in this process (`chdb:///dir`)
- `served`:    the worker-hosted store: RemoteStore, as open_store returns it to a second
               opener, over HTTP to the request function the worker mounts, with the token
- `clickhouse`: Store over clickhouse-connect's HTTP client against tests/fake_clickhouse.py,
               a ClickHouse HTTP interface backed by chDB in its own process (no ClickHouse
               server binary can be had here; see that file)

The contract: migrate is idempotent; inserts are idempotent on event id (also across store
instances: ReplacingMergeTree + FINAL); query returns columns and JSON-friendly rows with
bind parameters; read-only queries cannot write; every failure is a StoreError (the root
ReviewbusError), never a library exception.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agents.errors import ReviewbusError, StoreError
from agents.settings import Settings
from infra.clickhouse.migrations import MIGRATIONS_DIR, migration_files
from infra.store import RemoteStore, Store, StoreProtocol, open_store

from .served_store import ServedStore
from .test_store import result

HERE = Path(__file__).resolve().parent


@dataclass
class Impl:
    store: StoreProtocol
    another: Callable[[], StoreProtocol]  # a second instance on the same data


def _chdb(tmp_path: Path) -> Iterator[Impl]:
    store = Store.connect(f"chdb://{tmp_path / 'ch'}")
    store.migrate()
    others: list[Store] = []

    def another() -> Store:
        # chDB: one engine per process, so "another instance" is a second client of it.
        other = Store.connect(f"chdb://{tmp_path / 'ch'}")
        others.append(other)
        return other

    yield Impl(store, another)
    for s in [*others, store]:
        s.close()


def _served(tmp_path: Path) -> Iterator[Impl]:
    settings = Settings(home=tmp_path / "home")
    owner = open_store(settings)  # takes the directory's lock and makes the store token
    assert isinstance(owner, Store)
    try:
        with ServedStore(owner, settings.home, worker_json=True):
            client = open_store(settings)  # the lock is held: the worker-hosted store
            assert isinstance(client, RemoteStore)
            yield Impl(client, lambda: open_store(settings))
    finally:
        owner.close()


def _clickhouse(tmp_path: Path) -> Iterator[Impl]:
    port_file = tmp_path / "port"
    proc = subprocess.Popen([sys.executable, str(HERE / "fake_clickhouse.py"),
                             str(tmp_path / "server-data"), str(port_file), "s3cret"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "fake ClickHouse did not start"
            time.sleep(0.05)
        dsn = f"http://default:s3cret@127.0.0.1:{port_file.read_text()}"
        stores = [Store.connect(dsn)]
        stores[0].migrate()

        def another() -> Store:
            stores.append(Store.connect(dsn))
            return stores[-1]

        yield Impl(stores[0], another)
        for s in stores:
            s.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


IMPLEMENTATIONS = {"chdb": _chdb, "served": _served, "clickhouse": _clickhouse}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def impl(request, tmp_path) -> Iterator[Impl]:
    yield from IMPLEMENTATIONS[request.param](tmp_path)


def count(store: StoreProtocol, sql: str) -> int:
    return store.query(sql).rows[0][0]


def test_it_is_a_store(impl):
    assert isinstance(impl.store, StoreProtocol)


def test_migrate_is_idempotent(impl):
    versions = [v for v, _ in migration_files(MIGRATIONS_DIR)]
    assert impl.store.migrate() == []
    assert impl.another().migrate() == []
    rows = impl.store.query("SELECT version FROM schema_migrations FINAL ORDER BY version").rows
    assert [r[0] for r in rows] == versions
    assert count(impl.store, "SELECT count() FROM system.tables WHERE name = 'interactions'") == 1


def test_query_returns_columns_and_rows_with_bind_parameters(impl):
    got = impl.store.query("SELECT {s:String} AS s, {n:UInt32} + 1 AS n, "
                           "toDateTime64('2025-01-02 03:04:05.678', 3, 'UTC') AS t",
                           {"s": "it's \\ here", "n": 41})
    assert got.columns == ["s", "n", "t"]
    assert got.rows == [["it's \\ here", 42, "2025-01-02T03:04:05.678000+00:00"]]
    assert got.as_dicts()[0]["n"] == 42


def test_inserts_are_idempotent_on_event_id(impl):
    first = [result(), result(request_id="req-2")]
    assert impl.store.insert_events(first) == 8  # one interaction and three findings each
    impl.store.insert_events(first)  # a redelivery to the same instance
    impl.another().insert_events([result(request_id="req-2"), result(request_id="req-3")])
    assert count(impl.store, "SELECT count() FROM interactions FINAL") == 3
    assert count(impl.store, "SELECT count() FROM findings FINAL") == 9
    rows = impl.store.query("SELECT request_id FROM interactions FINAL ORDER BY request_id").rows
    assert rows == [["req-1"], ["req-2"], ["req-3"]]


def test_event_rows_store_what_insert_events_stores(impl):
    """The sink's path (events gathered as columns, each with its JSON as it came): the same
    rows and the same idempotence as insert_events, a repeat inside the batch included."""
    from infra.event_rows import EventRows

    rows = EventRows()
    first = result()
    for event in [first, result(request_id="req-2"), first]:
        rows.add(event, event.model_dump_json().encode())
    assert impl.store.insert_event_rows(rows) == 8  # the repeat of req-1 is skipped
    assert impl.store.insert_event_rows(rows) == 0  # all written by this instance
    again = EventRows()
    again.add(result(request_id="req-3"), result(request_id="req-3").model_dump_json().encode())
    impl.another().insert_event_rows(again)
    rows_ = impl.store.query("SELECT request_id, findings_total, findings_high, pull_request "
                             "FROM interactions FINAL ORDER BY request_id").rows
    assert rows_ == [["req-1", 3, 2, 7], ["req-2", 3, 2, 7], ["req-3", 3, 2, 7]]
    assert count(impl.store, "SELECT count() FROM findings FINAL") == 9
    assert impl.store.insert_event_rows(EventRows()) == 0


def varied_results() -> list:
    """Results at the edges of the interactions and findings mapping (infra/rows.py)."""
    from datetime import UTC, datetime

    from schemas import Finding, Severity, Usage

    from .test_store import finding
    odd = Finding(fingerprint="odd", dimension="security", severity="critical", confidence=1.0,
                  path="ü/\"quoted\".py", line=2**40, end_line=-3, rule_id="R", source="s",
                  message="line\nbreak, \"quotes\", tab\t, emoji \U0001f600", suggestion="x")
    return [
        result(request_id="plain"),
        result(request_id="bare", change_type=None, risk=None, findings=[], label=None,
               run_id=None, accepted_at=None, pull_request=None),
        result(request_id="edges", attempt=2**40, run_id="run-9", error="boom",
               fallback_from="v1", suggested_message="fix(a): b", label="bug_fix",
               findings=[odd, finding("e", Severity.low, 0)],
               usage=Usage(prompt_tokens=2**33, completion_tokens=-5, cost_usd=0.25,
                           model="gpt-x", prompt_hash="abc"),
               accepted_at=datetime(2025, 1, 2, 3, 0, 0, 123456, tzinfo=UTC),
               occurred_at=datetime(2025, 1, 2, 4, 5, 6, 999999, tzinfo=UTC)),
        # beyond what the views map exactly (infra/event_rows.py `ingestible`): Python's rows
        result(request_id="huge", attempt=2**127 + 1, latency_ms=float("inf"),
               findings=[finding("h", Severity.high, 10**50)]),
        result(request_id="below", attempt=-(2**127) - 1,
               usage=Usage(prompt_tokens=-(10**30), completion_tokens=10**40)),
    ]


@pytest.mark.parametrize("engine", ["chdb", "clickhouse"])
def test_clickhouse_maps_a_result_to_the_rows_infra_rows_would_write(engine, tmp_path):
    """Migration 015's views (the JSON of each result, turned into rows by ClickHouse) give
    exactly the rows of infra/rows.py's interaction_row and finding_rows, inserted as columns
    into a copy of each table: the SQL is checked against the Python it replaced."""
    from infra.rows import rows_for
    from schemas import Usage

    opened = IMPLEMENTATIONS[engine](tmp_path)
    store = next(opened).store
    try:
        events = varied_results()
        # interactions, then findings: 3 + 0 + 2 + 1 + 3
        assert store.insert_events(events) == 5 + 9
        by_table: dict[str, list[dict]] = {}
        for event in events:
            for table, row in rows_for(event):
                by_table.setdefault(table, []).append(row)
        for table, rows in by_table.items():
            store.command(f"CREATE TABLE {table}_expected AS {table}")
            names = list(rows[0])
            store.insert_rows(f"{table}_expected", [[r[c] for c in names] for r in rows], names)
            order = "event_id, fingerprint" if table == "findings" else "event_id"
            got = store.query(f"SELECT * FROM {table} ORDER BY {order}").rows
            want = store.query(f"SELECT * FROM {table}_expected ORDER BY {order}").rows
            assert got == want and len(got) == len(rows), table
        edges = store.query("SELECT attempt, prompt_tokens, completion_tokens, "
                            "findings_critical FROM interactions WHERE request_id = 'edges'").rows
        assert edges == [[4294967295, 4294967295, 0, 1]]
        odd = store.query("SELECT request_id, attempt, latency_ms, prompt_tokens, "
                          "completion_tokens FROM interactions WHERE request_id IN "
                          "('huge', 'below') ORDER BY request_id").rows
        # (inf reads back as None: query results are JSON-friendly)
        assert odd == [["below", 0, 41.5, 0, 4294967295], ["huge", 4294967295, None, 100, 20]]
        store.insert_events([result(request_id="nan", usage=Usage(cost_usd=float("nan")))])
        assert store.query("SELECT isNaN(cost_usd), isInfinite(latency_ms) FROM interactions "
                           "WHERE request_id IN ('nan', 'huge') ORDER BY request_id").rows == [
            [0, 1], [1, 0]]  # stored as they were, not as 0
        with pytest.raises(StoreError):  # refused by either path, as before (UInt64)
            store.insert_events([result(request_id="pr", pull_request=2**64 + 5)])
    finally:
        next(opened, None)  # the implementation's own clean-up


WRITES = [
    "DROP TABLE interactions",
    "INSERT INTO interactions (request_id) VALUES ('x')",
    "TRUNCATE TABLE interactions",
    "SELECT 1; DROP TABLE interactions",
    "SELECT 1 INTO OUTFILE '/tmp/reviewbus-contract-outfile'",
    "CREATE TABLE evil (a Int32) ENGINE = Memory",
]


def test_read_only_queries_cannot_write(impl):
    impl.store.insert_events([result()])
    for sql in WRITES:
        with pytest.raises(StoreError):
            impl.store.query(sql)
    assert count(impl.store, "SELECT count() FROM interactions FINAL") == 1
    assert count(impl.store, "SELECT count() FROM system.tables WHERE name = 'evil'") == 0
    assert not Path("/tmp/reviewbus-contract-outfile").exists()


ERRORS = [
    ("SELEC 1", "Syntax error"),
    ("SELECT * FROM no_such_table", "UNKNOWN_TABLE"),
    ("SELECT {x:UInt8} AS x", None),  # a parameter without a value
    ("", "empty SQL"),
]


def test_errors_are_store_errors(impl):
    for sql, words in ERRORS:
        with pytest.raises(StoreError, match=words) as caught:
            impl.store.query(sql)
        assert isinstance(caught.value, ReviewbusError)
        assert type(caught.value).__module__.split(".")[0] in ("agents", "infra")
        assert impl.store.query("SELECT 1 AS one").as_dicts() == [{"one": 1}]  # still usable
