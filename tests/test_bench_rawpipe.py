"""The bench's second ceiling (bench/rawpipe.py) on the embedded broker: with a store it runs
the worker's four hops, so every commit comes out as findings and its archive and interaction
rows land in chDB; nothing here is timed."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from agents.settings import Settings
from bench import load
from bench.pipeline import RawPipeline, Relay
from infra.kafka import ensure_topics
from infra.store import Store

pytestmark = pytest.mark.integration


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
        asyncio.run(asyncio.sleep(2.0))  # the sink's last batch: 0.2 s idle, then its insert
    finally:
        Relay.stop(proc)  # SIGTERM: the insert in flight finishes first
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
