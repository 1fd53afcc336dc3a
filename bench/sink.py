"""Benchmark 4: rows/s into ClickHouse (chDB) through the sink, against a direct bulk insert
of the same rows with clickhouse-connect (`python -m bench.sink DIR N RUN`, a process of its
own: chDB hosts one engine per process).

Through the sink: InferenceResults (role `replay`, so only the sink and the cheap role checks
of the other agents see them; one interactions row and two findings rows each). Three figures:

- drain (the ratio's numerator): the results are in the topic before a fresh worker starts,
  and the rate is the rows stored after the sink's first commit over the time they took, read
  from the sink group's committed offsets at the broker (`CommitClock`): the sink's sustained
  rate, not the producer's;
- end to end: sent to a running worker, rows over the time from the first send to the last row
  counted by the worker's `reviewbus_sink_rows_total{outcome="written"}` (the producer's own
  rate, ~14,000 events/s here, bounds this one);
- raw read: the drained backlog read again by a bare consumer with the sink's fetch settings
  (`_raw_read`), which tells how much of the gap to the direct insert is the broker's.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from schemas import ChangeType, Finding, InferenceResult, Risk, Role, Status

from . import load
from .core import ROOT, ratio, trials_summary
from .pipeline import STABLE, noop_config
from .stack import Worker

FINDINGS_PER_RESULT = 2
ROWS_PER_RESULT = 1 + FINDINGS_PER_RESULT


def make_results(n: int, run: str) -> list[InferenceResult]:
    out = []
    for i in range(n):
        rid = f"{run}-{i}"
        findings = [Finding(fingerprint=f"{rid}-{j}", dimension="security", severity="medium",
                            confidence=0.8, path=f"src/mod{i % 50}.py", line=10 + j,
                            rule_id=f"ruff:S60{j}", message="subprocess call with shell=True",
                            source="ruff") for j in range(FINDINGS_PER_RESULT)]
        out.append(InferenceResult(
            event_id=f"{rid}-r", request_id=rid, task="code-review", version_id="noop-stable",
            role=Role.replay, run_id=run, status=Status.ok, latency_ms=12.5, label="feature",
            change_type=ChangeType(label="feature", confidence=0.7, scores={"feature": 0.7}),
            risk=Risk(score=0.4, level="medium"), findings=findings, repo="bench/repo",
            sha=f"{i:040x}"))
    return out


def direct_insert(directory: str, n: int, run: str, method: str = "columns") -> dict:
    """A ceiling, in this process: every row in one insert per table, with no Kafka and no
    validation. `columns`: the rows infra/rows.py maps each result to, as clickhouse-connect
    columns (the sink's path before migration 015); `json`: each result's JSON, written
    beforehand, in one JSONEachRow insert that migration 015's views map to rows (the sink's
    path since)."""
    from infra.event_rows import INGEST_SETTINGS, INGEST_TABLE
    from infra.rows import rows_for
    from infra.store import Store

    if method not in ("columns", "json"):
        raise ValueError(f"unknown method {method!r}: columns or json")

    store = Store.connect(f"chdb:///{directory}")
    store.migrate()
    results = make_results(n, run)
    rows = n * ROWS_PER_RESULT
    if method == "json":
        lines = [r.model_dump_json().encode() for r in results]
        start = time.perf_counter()
        store.insert_json(INGEST_TABLE, lines, INGEST_SETTINGS)
    else:
        tables: dict[str, list[dict]] = {}
        for event in results:
            for table, row in rows_for(event):
                tables.setdefault(table, []).append(row)
        start = time.perf_counter()
        for table, batch in tables.items():
            columns = list(batch[0])
            store.insert_rows(table, [[r[c] for r in batch] for c in columns], columns,
                              column_oriented=True)
    seconds = time.perf_counter() - start
    stored = store.query("SELECT (SELECT count() FROM interactions) + "
                         "(SELECT count() FROM findings)").rows[0][0]
    store.close()
    if stored != rows:
        raise RuntimeError(f"direct insert ({method}) stored {stored} of {rows} rows")
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds, "method": method}


def _direct(home: Path, n: int, method: str) -> float:
    run = f"d{uuid.uuid4().hex[:6]}"
    home.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([sys.executable, "-m", "bench.sink", str(home / run), str(n), run,
                          method], cwd=ROOT, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"direct insert failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["rows_per_s"]


async def _through_sink(w: Worker, n: int, log) -> float:
    run = f"sink{uuid.uuid4().hex[:6]}"
    messages = _messages(n, run)
    expected = n * ROWS_PER_RESULT
    base = await asyncio.to_thread(w.metric, "reviewbus_sink_rows_total", outcome="written")
    start = await load.produce(w.settings, w.settings.kafka, w.topic("results"), messages)
    deadline = time.monotonic() + max(300.0, n / 20)
    while True:
        written = await asyncio.to_thread(w.metric, "reviewbus_sink_rows_total",
                                          outcome="written") - base
        if written >= expected:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"sink wrote {written} of {expected} rows")
        await asyncio.sleep(0.1)
    rate = expected / (time.monotonic() - start)
    log(f"  sink, end to end: {expected} rows, {rate:,.0f} rows/s")
    return rate


def _messages(n: int, run: str) -> list[tuple[str, bytes, bytes]]:
    return [(r.request_id, r.request_id.encode(), r.model_dump_json().encode())
            for r in make_results(n, run)]


class CommitClock:
    """When the sink's group committed how much of a backlog: the sink commits a batch's
    offsets once the batch is stored (streams/flows/sink.py), so its committed offsets are its
    stored events. Read from the broker, which answers at once, where the worker's metrics page
    is served by the very event loop that drains the backlog: scraped every 20 ms, it answered
    so late that a drain of 30,000 results was timed over one to four of its six inserts, and
    the trials of one run read 51,000 to 305,000 rows/s.

    A consumer of the sink's group id that joins nothing (no subscription: aiokafka then only
    fetches committed offsets, as infra/kafka.py `consumer_lag` does beside a running worker).
    """

    def __init__(self, settings, bootstrap: str, group: str, topic: str, partitions: int) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from infra.kafka import client_kwargs

        self.tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.consumer = AIOKafkaConsumer(**client_kwargs(settings, bootstrap), group_id=group,
                                         enable_auto_commit=False)

    async def __aenter__(self) -> CommitClock:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def committed(self) -> int:
        """Offsets committed over every partition: the events stored (offsets start at 0)."""
        return sum([await self.consumer.committed(tp) or 0 for tp in self.tps])

    async def drain(self, n: int, timeout_s: float, poll_s: float = 0.01,
                    check: Callable[[], None] | None = None) -> tuple[tuple[float, int], float]:
        """Polls until `n` events are committed: ((time, events) at the first commit seen,
        time of the last). Raises TimeoutError past `timeout_s`, and whatever `check` raises
        (called before each poll)."""
        deadline = time.monotonic() + timeout_s
        first: tuple[float, int] | None = None
        while True:
            if check is not None:
                check()
            done = await self.committed()
            now = time.perf_counter()
            if done and first is None:
                first = (now, done)
            if done >= n:
                assert first is not None
                return first, now
            if time.monotonic() > deadline:
                raise TimeoutError(f"the sink stored {done} of {n} events")
            await asyncio.sleep(poll_s)


def drain_rate(first: tuple[float, int], last: float, n: int) -> float:
    """Rows/s from the first commit seen to the last: the batches after the first one, so the
    worker's start and the first fetch are not in it. A backlog stored in one batch has no
    such span: an error, not a rate."""
    start, done = first
    if done >= n:
        raise RuntimeError("the backlog fit one insert: raise --sink-events to measure a drain")
    return (n - done) * ROWS_PER_RESULT / (last - start)


def _drain(home: Path, broker: str, n: int, partitions: int, log) -> tuple[float, float]:
    """A backlog of `n` results, then a fresh worker: rows/s from its first commit to its last
    (`CommitClock`); and the raw read of the same backlog once the worker stopped
    (_raw_read)."""
    from infra.kafka import ensure_topics
    from streams import names

    w = Worker(home, broker, noop_config(0), partitions=partitions)
    asyncio.run(ensure_topics(w.settings, broker, names.all_topics(w.settings, [STABLE])))
    asyncio.run(load.produce(w.settings, broker, w.topic("results"),
                             _messages(n, f"drain{uuid.uuid4().hex[:6]}")))

    async def timed() -> tuple[tuple[float, int], float]:
        async with CommitClock(w.settings, broker, names.sink_group(w.settings),
                               w.topic("results"), partitions) as clock:
            # Polled while the worker starts: its sink may store batches before start() sees
            # it healthy.
            starting = asyncio.ensure_future(asyncio.to_thread(w.start))

            def check() -> None:
                if not starting.done():
                    return
                if starting.exception() is not None:
                    raise starting.exception()  # type: ignore[misc]
                if w.proc is not None and w.proc.poll() is not None:
                    raise RuntimeError(f"worker exited during the drain: {w.log_tail()}")

            try:
                return await clock.drain(n, max(300.0, n / 20), check=check)
            finally:
                await starting

    try:
        first, last = asyncio.run(timed())
    finally:
        w.stop()
    rate = drain_rate(first, last, n)
    raw, _ = asyncio.run(_raw_read(w, n))
    log(f"  sink, drain: {n - first[1]:,} of {n:,} events after its first commit, "
        f"{rate:,.0f} rows/s; the same backlog read raw: {raw:,.0f} rows/s")
    return rate, raw


async def _raw_read(w: Worker, n: int, timeout_s: float | None = None) -> tuple[float, int]:
    """The broker's side of the drain: a consumer group of its own reads the backlog the sink
    drained (the same topic, the same fetch settings and batch size as the sink's consumer,
    streams/group_consumer.py), parsing nothing and storing nothing. Rows/s (ROWS_PER_RESULT a
    record) after its first batch, as the drain is timed after its first commit: no sink on
    this broker can drain faster than its records arrive. Returns the rate and the records
    read: the whole backlog, or an error (fewer by the deadline, or more: the topic held
    others)."""
    from infra.kafka import start_group_consumer, stop_consumer
    from streams.group_consumer import fetch_wait_ms

    settings = w.settings
    consumer = await start_group_consumer(
        settings, settings.kafka, f"raw-read-{uuid.uuid4().hex[:6]}", [w.topic("results")],
        fetch_max_wait_ms=fetch_wait_ms(settings.sink_idle_s))
    try:
        seen, first = 0, None
        deadline = time.monotonic() + (timeout_s or max(120.0, n / 1000))
        while seen < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"read {seen} records of a backlog of {n}")
            batches = await consumer.getmany(timeout_ms=1000, max_records=settings.sink_batch)
            got = sum(len(records) for records in batches.values())
            if got and first is None:
                first = (time.perf_counter(), got)
            seen += got
        assert first is not None
        if seen == first[1]:
            raise RuntimeError("the backlog fit one fetch: raise --sink-events")
        rate = (seen - first[1]) * ROWS_PER_RESULT / (time.perf_counter() - first[0])
        if seen != n:
            raise RuntimeError(f"read {seen} records of a backlog of {n}")
        return rate, seen
    finally:
        await stop_consumer(consumer)


def run_sink(home: Path, broker: str, *, events: int, trials: int, partitions: int, log) -> dict:
    direct: dict[str, list[float]] = {"columns": [], "json": []}
    log("4. sink: direct bulk inserts (ceilings: rows as columns, and results as JSON)")
    for i in range(trials):
        for method in direct:
            direct[method].append(_direct(home / f"direct-{method}{i}", events, method))
            log(f"  direct insert, {method}: {events * ROWS_PER_RESULT} rows, "
                f"{direct[method][-1]:,.0f} rows/s")
    log("4. sink: a backlog drained by a fresh worker's sink")
    drains = [_drain(home / f"drain{i}", broker, events, partitions, log)
              for i in range(trials)]
    drained, raw_read = [d[0] for d in drains], [d[1] for d in drains]
    log("4. sink: sent to a running worker, end to end")
    w = Worker(home / "worker", broker, noop_config(0), partitions=partitions)
    w.start()
    try:
        e2e = [asyncio.run(_through_sink(w, events, log)) for _ in range(trials)]
    finally:
        w.stop()
    s, e, r = trials_summary(drained), trials_summary(e2e), trials_summary(raw_read)
    by_method = {m: trials_summary(v) for m, v in direct.items()}
    # The ceiling is the faster of the two direct inserts: the sink is held to the best way
    # there is of storing the same rows, not to the one it happens to use.
    best = max(by_method, key=lambda m: by_method[m]["median"] or 0.0)
    d = by_method[best]
    return {"events": events, "rows": events * ROWS_PER_RESULT, "sink_rows_per_s": s,
            "direct_rows_per_s": d, "direct_method": best,
            "direct_by_method": by_method, "ratio": ratio(s["median"], d["median"]),
            "ratio_by_method": {m: ratio(s["median"], v["median"])
                                for m, v in by_method.items()},
            "end_to_end_rows_per_s": e, "end_to_end_ratio": ratio(e["median"], d["median"]),
            "raw_read_rows_per_s": r, "ratio_to_raw_read": ratio(s["median"], r["median"]),
            "raw_read_to_direct": ratio(r["median"], d["median"]),
            "method": "sink: a backlog in the results topic, then a fresh worker; the events "
                      "its sink group committed after its first commit (each commit follows "
                      "its batch's insert) over the time they took, read from the broker "
                      "(consume + parse + batched insert). end to end: first send to last row "
                      "on a running worker. raw read: the same backlog read by a bare "
                      "consumer with the sink's fetch settings, rows/s after its first "
                      "batch. direct: the same rows into a fresh chDB directory "
                      "in one insert, as clickhouse-connect columns of infra/rows.py's rows or "
                      "as the results' JSON through migration 015's views; the ratio is to "
                      "the faster of the two"}


if __name__ == "__main__":
    from .core import gc_like_the_worker

    gc_like_the_worker()
    print(json.dumps(direct_insert(sys.argv[1], int(sys.argv[2]), sys.argv[3],
                                   *sys.argv[4:5])))
