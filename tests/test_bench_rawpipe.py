"""The bench's second ceiling (bench/rawpipe.py) on the embedded broker: with a store it runs
the worker's four hops, so every commit comes out as findings and its archive and interaction
rows land in chDB; nothing here is timed."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from agents.settings import Settings
from bench import load
from bench.ceilings import RawPipeline
from infra.kafka import consumer_lag, ensure_topics
from infra.store import Store

pytestmark = pytest.mark.integration


async def _stored(settings: Settings, broker: str, group: str, prefix: str) -> None:
    """Until the sink group has committed everything on accepted and results (it commits
    after each insert)."""
    for _ in range(300):
        lag = await consumer_lag(settings, broker, group,
                                 [prefix + "accepted", prefix + "results"], partitions=2)
        if sum(lag.values()) == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the raw sink still lags: {lag}")


def test_the_raw_pipeline_with_readers_answers_and_stores_every_commit(broker, tmp_path):
    raw = RawPipeline(broker, 2, 500, 50, tmp_path / "stores")
    prefix = f"raw{uuid.uuid4().hex[:8]}."
    settings = Settings(kafka=broker)
    asyncio.run(ensure_topics(settings, broker, {prefix + t: 2 for t in raw.HOPS}))
    proc = raw._start(prefix)
    run = f"rt{uuid.uuid4().hex[:6]}"
    try:
        wall = asyncio.run(load.run_load(settings, broker, prefix + "commits",
                                         prefix + "findings", load.commit_events(200, run),
                                         load.request_id_of, timeout=120.0))
        asyncio.run(_stored(settings, broker, f"g-{prefix}-sink", prefix))
    finally:
        raw.finish(proc)  # SIGTERM; raises when a hop had failed
    assert wall["events"] == 200
    store = Store.connect(f"chdb:///{tmp_path / 'stores' / prefix.rstrip('.')}")
    try:
        counts = store.query(
            "SELECT (SELECT count() FROM interactions FINAL WHERE startsWith(request_id, %(r)s)),"
            " (SELECT count() FROM events_archive FINAL WHERE startsWith(request_id, %(r)s))",
            {"r": run}).rows[0]
    finally:
        store.close()
    assert list(counts) == [200, 200]


def test_a_raw_pipeline_that_lost_a_hop_is_an_error_not_a_ceiling(broker, tmp_path):
    raw = RawPipeline(broker, 2, 500, 50, tmp_path / "stores")
    prefix = f"raw{uuid.uuid4().hex[:8]}."
    (tmp_path / "stores").mkdir()  # a file where the sink's store directory should be:
    (tmp_path / "stores" / prefix.rstrip(".")).write_text("not a store")  # the sink fails
    asyncio.run(ensure_topics(Settings(kafka=broker), broker, {prefix + t: 2 for t in raw.HOPS}))
    with pytest.raises(RuntimeError, match="raw pipeline exited 1"):
        raw._start(prefix)
